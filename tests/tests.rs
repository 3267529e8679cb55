//! Integration tests: every test runs the real binaries.

mod heart;
mod runtime;
mod supervisor;
mod util;
