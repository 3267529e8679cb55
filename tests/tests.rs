//! Integration tests: every test runs the real binaries.

mod client;
mod heart;
mod supervisor;
mod util;
