//! Shared command-line plumbing: diagnostics in the
//! `PROG: fatal: unable to VERB OBJECT: REASON` form, and output that
//! treats a closed pipe as success.

use std::io::{self, Write};

/// Prints `PROG: fatal: MESSAGE` on stderr.
pub(crate) fn fatal(prog: &str, message: impl std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{prog}: fatal: {message}");
}

/// Prints `PROG: warning: MESSAGE` on stderr.
pub(crate) fn warn(prog: &str, message: impl std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{prog}: warning: {message}");
}

/// Writes `text` to stdout. A reader that went away (`pm-runtime list |
/// head`) is not an error: the result is `Ok` and the rest is dropped.
pub(crate) fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Turns a lexopt error into the crate's usage error.
pub(crate) fn usage_error(err: lexopt::Error) -> crate::error::Error {
    crate::error::Error::Usage(err.to_string())
}
