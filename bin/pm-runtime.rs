//! `pm-runtime`: see `man pm-runtime`. All logic lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    paasmaker::runtime::main()
}
