//! `pm-heart`: the node agent and its command-line client (SPEC §4).

use std::process::ExitCode;

/// Entry point of `pm-heart`.
pub fn main() -> ExitCode {
    ExitCode::from(u8::from(crate::exit::Tool::Failure))
}
