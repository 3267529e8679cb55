//! `pm-heart`: the node agent and its command-line client (SPEC §4).
//!
//! `pm-heart serve` runs the agent; every other subcommand is a client of
//! a running agent (`client`). The agent reports to an optional controller
//! through `pacemaker`.

pub(crate) mod client;
pub(crate) mod pacemaker;

use std::process::ExitCode;

/// Entry point of `pm-heart`.
pub fn main() -> ExitCode {
    ExitCode::from(u8::from(crate::exit::Tool::Failure))
}
