//! Integration tests: every test runs the real binaries.

mod heart;
mod supervisor;
mod util;
