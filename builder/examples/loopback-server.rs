//! Serves files on 127.0.0.1 with the test suite's HTTP server, for
//! `scripts/bench`: `loopback-server /url/path=FILE ...` prints the port on
//! stdout and serves until it is killed.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../tests/support/httpd.rs"]
mod httpd;

use std::io::Write;

fn main() {
    let server = httpd::Server::start();
    for arg in std::env::args().skip(1) {
        let Some((path, file)) = arg.split_once('=') else {
            eprintln!("loopback-server: {arg:?} is not /url/path=FILE");
            std::process::exit(2);
        };
        let body = std::fs::read(file).unwrap_or_else(|e| {
            eprintln!("loopback-server: reading {file}: {e}");
            std::process::exit(1);
        });
        server.put(path, body);
    }
    let url = server.url("/");
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/');
    println!("{port}");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
