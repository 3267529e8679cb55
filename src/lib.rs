//! The Paasmaker node suite.
//!
//! One library behind three thin binaries:
//!
//! - [`supervisor`]: `pm-supervisor`, runs one application process and
//!   reports how it ended;
//! - [`heart`]: `pm-heart`, the node agent and its command-line client;
//! - [`runtime`]: `pm-runtime`, the runtime plugins on the command line;
//! - [`protocol`]: the wire contract the three share (control file, exit
//!   report path, plugin requests and answers).
//!
//! Everything else is crate-private. Below the programs, `plugins` is the
//! runtime plugin layer that the heart and `pm-runtime` share. The OS
//! layer is `signal` (the only
//! signal handler), `process` (spawning, waiting, identities from
//! `/proc`), `cgroup` (control groups: detection, one group per
//! instance, limits, accounting, killing), `fsutil` (atomic, durable file
//! writes) and `logfile` (logs rotated by size, and the copier that fills
//! them from a pipe). `unsafe` is denied everywhere but in `signal` and
//! `process`, the two modules that make raw system calls, and each block
//! there carries a `// SAFETY:` comment.
//!
//! `http` is the HTTP/1.1 server the heart's API runs on: bounded
//! threads, deadlines for slow clients, and an accept loop that survives
//! descriptor exhaustion (std sockets and poll(2), no `unsafe`).

#![deny(unsafe_code)]

pub(crate) mod archive;
pub(crate) mod cgroup;
pub(crate) mod cli;
pub(crate) mod digest;
pub(crate) mod error;
pub(crate) mod exit;
pub(crate) mod fetch;
pub(crate) mod fsutil;
pub(crate) mod http;
pub(crate) mod lockfile;
pub(crate) mod logfile;
pub(crate) mod metrics;
pub(crate) mod net;
pub(crate) mod notify;
pub(crate) mod plugins;
#[allow(unsafe_code)]
pub(crate) mod process;
pub(crate) mod rfc3339;
pub(crate) mod secret;
pub(crate) mod shellwords;
#[allow(unsafe_code)]
pub(crate) mod signal;
pub(crate) mod supervise;
pub(crate) mod wait;

pub mod heart;
pub mod protocol;
pub mod runtime;
pub mod supervisor;

/// The HTTP server's demo service, for the integration tests and the
/// benchmarks (not an API).
#[doc(hidden)]
pub use http::demo::main as http_demo;
