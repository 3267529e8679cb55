//! Integration tests: every test runs the real binaries.

mod supervisor;
mod util;
