//! Integration tests: every test runs the real binaries.

mod apache;
mod heart;
mod runtime;
mod supervisor;
mod util;
