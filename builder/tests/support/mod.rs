//! Helpers shared by integration tests and the fetch benchmark.

pub mod fixtures;
pub mod httpd;
#[allow(dead_code)] // not every test crate runs serve
pub mod serve;

use std::path::Path;

use sha2::{Digest, Sha256};

/// The names in `dir`; none when it cannot be read.
#[allow(dead_code)] // not every test crate lists directories
pub fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// SHA-256 as lower-case hex, as SHA256SUMS and the plan write it.
#[allow(dead_code)] // not every test crate hashes
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
