//! An instance's logs as the managed Apache writes them: through piped
//! loggers, `pm-supervisor --log-pipe`, one per log file, so that they
//! are stamped and rotated like every instance log (see
//! `supervisor::pipe`). The error log is the instance log
//! `DATA_DIR/logs/ID.log`; the access log, in the combined format, is
//! `DATA_DIR/logs/ID.access.log`.
//!
//! Apache runs a piped logger given as `||PROGRAM ARGS` itself, without a
//! shell, with `execve` and Apache's (empty) environment: the program is
//! an absolute path, and the words are split by APR's tokenizer, which
//! takes a backslash before a blank, a quote or a backslash as that
//! character.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::logfile;
use crate::plugins::external;
use crate::protocol::LogLimits;

/// The name of the access log format, defined in `httpd.conf`.
pub(super) const ACCESS_FORMAT: &str = "combined";

/// The `LogFormat` of the access logs: Apache's combined format.
pub(super) const ACCESS_FORMAT_TEXT: &str =
    r#"%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i""#;

/// The piped loggers of one instance: the arguments of its `ErrorLog`
/// and `CustomLog`, before the configuration's own quoting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Loggers {
    /// `||PROGRAM --log-pipe … DATA_DIR/logs/ID.log`.
    pub error: String,
    /// `||PROGRAM --log-pipe … DATA_DIR/logs/ID.access.log`.
    pub access: String,
}

impl Loggers {
    /// The loggers of the instance whose error log is `log`, run by
    /// `supervisor` within `limits`.
    ///
    /// # Errors
    ///
    /// `supervisor` cannot be found, or a path is not UTF-8.
    pub(super) fn new(supervisor: &Path, log: &Path, limits: LogLimits) -> Result<Loggers> {
        let program = program(supervisor)?;
        let piped = |file: &Path| -> Result<String> {
            let mut text = String::from("||");
            text.push_str(&word(&program)?);
            text.push_str(&format!(
                " --log-pipe --max-size {} --keep {} ",
                limits.max_size.bytes(),
                limits.keep.files()
            ));
            text.push_str(&word(file)?);
            Ok(text)
        };
        Ok(Loggers {
            error: piped(log)?,
            access: piped(&logfile::access_log(log))?,
        })
    }
}

/// `supervisor` as an absolute path: as given when it names a directory,
/// else found on the heart's `PATH`.
fn program(supervisor: &Path) -> Result<PathBuf> {
    if supervisor.components().count() > 1 {
        return std::path::absolute(supervisor).map_err(|e| Error::io("resolve", supervisor, e));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(supervisor))
        .find(|path| path.is_absolute() && external::is_executable(path))
        .ok_or_else(|| {
            Error::invalid(format!(
                "{} is not on PATH: Apache's piped loggers need its full path",
                supervisor.display()
            ))
        })
}

/// One word for APR's tokenizer: blanks, quotes and backslashes escaped.
fn word(path: &Path) -> Result<String> {
    let text = path
        .to_str()
        .ok_or_else(|| Error::invalid(format!("{} is not UTF-8", path.display())))?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, ' ' | '\t' | '"' | '\'' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loggers_name_the_program_the_limits_and_the_files() {
        let limits = LogLimits::default();
        let loggers = Loggers::new(
            Path::new("/opt/pm/pm-supervisor"),
            Path::new("/d a/logs/web-1.log"),
            limits,
        )
        .unwrap();
        assert_eq!(
            loggers.error,
            "||/opt/pm/pm-supervisor --log-pipe --max-size 10485760 --keep 5 /d\\ a/logs/web-1.log"
        );
        assert!(
            loggers.access.ends_with(" /d\\ a/logs/web-1.access.log"),
            "{}",
            loggers.access
        );
        assert_eq!(word(Path::new(r#"/a'b"c\d"#)).unwrap(), r#"/a\'b\"c\\d"#);
        let err = Loggers::new(Path::new("no-such-pm-supervisor"), Path::new("/l"), limits);
        assert!(err.unwrap_err().to_string().contains("not on PATH"));
    }
}
