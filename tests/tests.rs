//! Integration tests: every test runs the real binaries.

mod apache;
mod cgroups;
mod client;
mod heart;
mod isolate;
mod runtime;
mod supervisor;
mod util;
