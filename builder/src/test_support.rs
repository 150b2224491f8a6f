//! What several modules' unit tests share: running the programs that read
//! what imgforge writes, and GnuPG, the signer of the real world, in a home
//! of its own, so that signatures made the way Ubuntu makes them are
//! checked by the verifier and by apt.

use std::path::Path;
use std::process::Command;

/// Runs a program of the installed system (apt, ifquery, netplan, …); its
/// standard output and error. Panics with both when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (scripts/deps installs the tools)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// gpg with a `GNUPGHOME` of its own, removed (and its agent stopped) on drop.
pub struct Gnupg {
    home: tempfile::TempDir,
}

impl Gnupg {
    /// An empty home. GnuPG is a test dependency (`scripts/deps` installs
    /// the Debian package gnupg): without it the test fails.
    pub fn new() -> Gnupg {
        Gnupg {
            home: tempfile::tempdir().unwrap(),
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Runs gpg without prompts (empty passphrase); its standard output.
    /// Panics with gpg's message when it fails.
    pub fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.home())
            .args([
                "--batch",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "gpg cannot be run ({e}); install the Debian package gnupg (scripts/deps does)"
                )
            });
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Makes an ed25519 primary key for `uid` that never expires, able to
    /// `usage` ("sign", or "cert" for one that only certifies subkeys).
    pub fn generate_key(&self, uid: &str, usage: &str) {
        self.run(&["--quick-gen-key", uid, "ed25519", usage, "never"]);
    }

    /// The fields of the `--with-colons` records of `kind` (`pub`, `fpr`)
    /// listed for `who`, in order.
    pub fn list_keys(&self, who: &str, kind: &str) -> Vec<Vec<String>> {
        let listing = self.run(&["--with-colons", "--list-keys", who]);
        String::from_utf8(listing)
            .unwrap()
            .lines()
            .filter(|l| l.split(':').next() == Some(kind))
            .map(|l| l.split(':').map(str::to_owned).collect())
            .collect()
    }

    /// Fingerprints of `who`'s keys, primary first.
    pub fn fingerprints(&self, who: &str) -> Vec<String> {
        self.list_keys(who, "fpr")
            .into_iter()
            .map(|fields| fields[9].clone())
            .collect()
    }
}

impl Drop for Gnupg {
    fn drop(&mut self) {
        // gpg leaves an agent running for its home; it would outlive the test.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home())
            .args(["--kill", "all"])
            .status();
    }
}
