//! `pm-heart`: see `man pm-heart`. All logic lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    paasmaker::heart::main()
}
