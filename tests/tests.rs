//! Integration tests: every test runs the real binaries.

mod apache;
mod client;
mod heart;
mod observe;
mod runtime;
mod supervisor;
mod util;
