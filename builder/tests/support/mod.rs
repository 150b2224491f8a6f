//! Helpers shared by integration tests and the fetch benchmark.

pub mod httpd;
