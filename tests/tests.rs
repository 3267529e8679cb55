//! Integration tests: every test runs the real binaries.

mod runtime;
mod util;
