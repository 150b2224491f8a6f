//! A running `imgforge serve`, for the tests that talk to it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const IMGFORGE: &str = env!("CARGO_BIN_EXE_imgforge");

/// A running `imgforge serve`, killed when dropped.
pub struct Serve {
    pub child: Child,
    pub addr: SocketAddr,
    /// What it said on stderr before it listened.
    pub startup: Vec<String>,
}

impl Serve {
    /// Starts serve on DIR with its log at LOG and exactly `args`, and
    /// waits until it listens.
    pub fn spawn(dir: &Path, log: &Path, args: &[&str]) -> Serve {
        let mut child = Command::new(IMGFORGE)
            .arg("serve")
            .arg(dir)
            .arg("--log")
            .arg(log)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting imgforge serve");
        let (tx, stderr) = mpsc::channel::<String>();
        let pipe = child.stderr.take().expect("serve's stderr");
        std::thread::spawn(move || {
            // Read to the end, so serve never writes into a closed pipe.
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = stderr
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("serve did not start: {seen:?}"));
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest
                    .split('/')
                    .next()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("serve's address in {line:?}"));
            }
            seen.push(line);
        };
        Serve {
            child,
            addr,
            startup: seen,
        }
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}
