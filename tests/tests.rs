//! Integration tests: every test runs the real binaries.

mod apache;
mod client;
mod crash;
mod fixture;
mod heart;
mod http;
mod plugins;
mod recovery;
mod runtime;
mod supervisor;
mod util;
