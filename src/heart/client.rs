//! The `pm-heart` client commands: `list`, `show`, `register`, `start`,
//! `stop`, `deregister`, `log`, `runtimes` and `deploy`, talking to a
//! running heart whose address and token are read from its data directory
//! (`DATA_DIR/address`, `DATA_DIR/token`) or given as options.

use std::ffi::OsString;
use std::process::ExitCode;

/// Runs client subcommand `command` with the arguments that follow it.
pub(crate) fn run(command: &str, args: Vec<OsString>) -> ExitCode {
    let _ = (command, args);
    ExitCode::from(u8::from(crate::exit::Tool::Failure))
}
