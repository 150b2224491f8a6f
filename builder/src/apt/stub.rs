// Temporary stand-in with the resolver's interface; replaced by the real modules.
pub mod resolve {
    use std::path::PathBuf;
    pub struct AptSource {
        pub root: PathBuf,
        pub suite: String,
        pub components: Vec<String>,
        pub keyring: Option<PathBuf>,
    }
    pub struct Inst {
        pub name: String,
        pub version: String,
        pub arch: String,
    }
    pub struct Request<'a> {
        pub status: &'a [u8],
        pub sources: &'a [AptSource],
        pub packages: &'a [String],
        pub recommends: bool,
    }
    #[derive(Debug, thiserror::Error)]
    #[error("no resolver")]
    pub struct ResolveError;
    pub fn simulate(_req: &Request) -> Result<Vec<Inst>, ResolveError> {
        Err(ResolveError)
    }
}
pub mod status {
    use std::io::{Read, Seek};
    #[derive(Debug, thiserror::Error)]
    #[error("no status reader")]
    pub struct StatusError;
    pub fn dpkg_status<R: Read + Seek>(_layers: Vec<R>) -> Result<Vec<u8>, StatusError> {
        Err(StatusError)
    }
}
