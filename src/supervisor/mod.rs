//! `pm-supervisor`: runs one application process (SPEC §3).

use std::process::ExitCode;

/// Entry point of `pm-supervisor`.
pub fn main() -> ExitCode {
    ExitCode::from(u8::from(crate::exit::Supervisor::System))
}
