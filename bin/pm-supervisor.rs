//! `pm-supervisor`: see `man pm-supervisor`. All logic lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    paasmaker::supervisor::main()
}
