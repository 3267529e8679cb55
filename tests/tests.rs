//! Integration tests: every test runs the real binaries.

mod access_logs;
mod apache;
mod client;
mod crash;
mod deploy;
mod fixture;
mod heart;
mod hostile;
mod http;
mod isolate;
mod lifecycle;
mod log_limits;
mod logs;
mod observe;
mod plugins;
mod recovery;
mod runtime;
mod supervisor;
mod util;
