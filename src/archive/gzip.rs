//! gzip as a child process, read and written through pipes.
//!
//! The child runs in a process group of its own under the suite's timed
//! runner ([`Bounded`]): dropping it, on any early return, kills and
//! reaps it, so a refused archive never leaves a gzip behind.

use std::io::Read;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{self, Bounded, Ended};

/// How long gzip may take to exit once its output has ended.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// How a process killed by SIGPIPE is reported.
const SIGPIPE_CODE: i32 = 128 + nix::libc::SIGPIPE;
/// The most of gzip's error output quoted.
const STDERR_MAX: u64 = 4096;

/// A running gzip with the pipes the caller did not take.
pub(super) struct Gzip {
    child: Bounded,
    stderr: Option<ChildStderr>,
}

impl Gzip {
    /// `gzip -dc`, reading `input`; returns the child and its output.
    ///
    /// # Errors
    ///
    /// gzip cannot be started.
    pub(super) fn decompress(input: Stdio) -> Result<(Gzip, ChildStdout)> {
        let (gzip, _, stdout) = Gzip::spawn(&["-dc"], input)?;
        let stdout = stdout.ok_or_else(|| no_pipe("output"))?;
        Ok((gzip, stdout))
    }

    /// `gzip -c`; returns the child, its input and its output.
    ///
    /// # Errors
    ///
    /// gzip cannot be started.
    pub(super) fn compress() -> Result<(Gzip, ChildStdin, ChildStdout)> {
        let (gzip, stdin, stdout) = Gzip::spawn(&["-c", "-n"], Stdio::piped())?;
        let stdin = stdin.ok_or_else(|| no_pipe("input"))?;
        let stdout = stdout.ok_or_else(|| no_pipe("output"))?;
        Ok((gzip, stdin, stdout))
    }

    fn spawn(
        args: &[&str],
        stdin: Stdio,
    ) -> Result<(Gzip, Option<ChildStdin>, Option<ChildStdout>)> {
        let mut cmd = Command::new("gzip");
        cmd.args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = Bounded::spawn(&mut cmd, "gzip")?;
        let stdin = child.child_mut().stdin.take();
        let stdout = child.child_mut().stdout.take();
        let stderr = child.child_mut().stderr.take();
        Ok((Gzip { child, stderr }, stdin, stdout))
    }

    /// Waits for gzip to exit, once its output has ended. `Ok(None)` when
    /// it succeeded (exit 0, or 2: a warning such as trailing garbage);
    /// else what it said and how it ended.
    ///
    /// # Errors
    ///
    /// gzip cannot be waited for.
    pub(super) fn finish(mut self) -> Result<Option<String>> {
        let mut said = String::new();
        if let Some(stderr) = self.stderr.take() {
            let _ = stderr.take(STDERR_MAX).read_to_string(&mut said);
        }
        let said = said.trim();
        match self.child.wait(EXIT_WAIT, true)? {
            Ended::Exited(status) => match process::code_of_status(status) {
                // A gzip that the reader stopped reading (a refused
                // member) ends on SIGPIPE: that is not its verdict.
                0 | 2 | SIGPIPE_CODE => Ok(None),
                code if said.is_empty() => Ok(Some(format!("gzip exited with code {code}"))),
                code => Ok(Some(format!("{said} (gzip exited with code {code})"))),
            },
            Ended::TimedOut => Ok(Some(format!(
                "gzip did not exit within {} s of the end of its output",
                EXIT_WAIT.as_secs()
            ))),
        }
    }
}

fn no_pipe(which: &str) -> Error {
    Error::invalid(format!("gzip was started without a pipe for its {which}"))
}
