//! Integration tests: every test runs the real binaries.

mod apache;
mod heart;
mod supervisor;
mod util;
