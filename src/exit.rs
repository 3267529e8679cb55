//! Exit codes of the three programs, one enum each, mirrored word for
//! word in the EXIT STATUS section of each man page.

use std::process::ExitCode;

/// Exit status of `pm-supervisor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supervisor {
    /// The command ran and its end was reported or recorded.
    Success,
    /// No control file: it was not given or does not exist, or the command line is wrong.
    NoControlFile,
    /// The control file exists but cannot be read.
    Unreadable,
    /// The control file is not valid JSON, lacks a field or holds a bad value.
    Invalid,
    /// The end of the command could be neither reported nor recorded.
    Unrecorded,
    /// A system call failed before the command was started.
    System,
}

impl From<Supervisor> for u8 {
    fn from(code: Supervisor) -> u8 {
        match code {
            Supervisor::Success => 0,
            Supervisor::NoControlFile => 1,
            Supervisor::Unreadable => 2,
            Supervisor::Invalid => 3,
            Supervisor::Unrecorded => 4,
            Supervisor::System => 111,
        }
    }
}

/// Exit status of `pm-heart` and `pm-runtime` (s6 conventions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// Done.
    Success,
    /// The request was made and refused, or the command failed.
    Failure,
    /// Misuse: a bad option, argument or input file.
    Usage,
    /// A temporary failure: the heart is unreachable, a system call failed.
    Temporary,
}

impl From<Tool> for u8 {
    fn from(code: Tool) -> u8 {
        match code {
            Tool::Success => 0,
            Tool::Failure => 1,
            Tool::Usage => 100,
            Tool::Temporary => 111,
        }
    }
}

impl From<Supervisor> for ExitCode {
    fn from(code: Supervisor) -> ExitCode {
        ExitCode::from(u8::from(code))
    }
}

impl From<Tool> for ExitCode {
    fn from(code: Tool) -> ExitCode {
        ExitCode::from(u8::from(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_codes_match_the_man_page() {
        assert_eq!(u8::from(Supervisor::Success), 0);
        assert_eq!(u8::from(Supervisor::NoControlFile), 1);
        assert_eq!(u8::from(Supervisor::Unreadable), 2);
        assert_eq!(u8::from(Supervisor::Invalid), 3);
        assert_eq!(u8::from(Supervisor::Unrecorded), 4);
        assert_eq!(u8::from(Supervisor::System), 111);
    }

    #[test]
    fn tool_codes_follow_s6() {
        assert_eq!(u8::from(Tool::Success), 0);
        assert_eq!(u8::from(Tool::Failure), 1);
        assert_eq!(u8::from(Tool::Usage), 100);
        assert_eq!(u8::from(Tool::Temporary), 111);
    }
}
