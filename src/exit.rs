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

/// Exit status of `pm-heart` and `pm-runtime` (s6 conventions; only the
/// `pm-heart` client exits 2 or 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// Done.
    Success,
    /// The request was made and refused, or the command failed.
    Failure,
    /// No such instance.
    NotFound,
    /// The request was refused in the instance's present state.
    Conflict,
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
            Tool::NotFound => 2,
            Tool::Conflict => 3,
            Tool::Usage => 100,
            Tool::Temporary => 111,
        }
    }
}

impl Tool {
    /// Every code, in the order of the man page.
    pub const ALL: [Tool; 6] = [
        Tool::Success,
        Tool::Failure,
        Tool::NotFound,
        Tool::Conflict,
        Tool::Usage,
        Tool::Temporary,
    ];

    /// What the code means: its text in EXIT STATUS of `pm-heart(8)`.
    pub fn meaning(self) -> &'static str {
        match self {
            Tool::Success => "Done.",
            Tool::Failure => "The request was made and refused, or the command failed.",
            Tool::NotFound => "No such instance (the heart answered 404).",
            Tool::Conflict => {
                "The request was refused in the instance's present state (the heart answered 409)."
            }
            Tool::Usage => "Misuse: a bad option, argument or input file.",
            Tool::Temporary => {
                "A temporary failure: the heart is unreachable, a system call failed."
            }
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
        assert_eq!(u8::from(Tool::NotFound), 2);
        assert_eq!(u8::from(Tool::Conflict), 3);
        assert_eq!(u8::from(Tool::Usage), 100);
        assert_eq!(u8::from(Tool::Temporary), 111);
    }

    /// The EXIT STATUS section of `man/pm-heart.8`: each `.TP` / `.B N` /
    /// text entry, as (code, text).
    fn man_exit_status() -> Vec<(u8, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/man/pm-heart.8");
        let man = std::fs::read_to_string(path).unwrap();
        let section = man
            .split(".SH EXIT STATUS\n")
            .nth(1)
            .and_then(|rest| rest.split("\n.SH ").next())
            .expect("no EXIT STATUS section");
        let section = section.split("\n.PP").next().unwrap();
        section
            .split(".TP\n")
            .skip(1)
            .map(|entry| {
                let (head, text) = entry.split_once('\n').unwrap();
                let code = head.strip_prefix(".B ").unwrap().trim().parse().unwrap();
                let text = text.replace("\\-", "-").replace('\n', " ");
                (code, text.trim().to_string())
            })
            .collect()
    }

    #[test]
    fn the_man_page_lists_every_tool_code_with_its_meaning() {
        let listed = man_exit_status();
        let expected: Vec<(u8, String)> = Tool::ALL
            .iter()
            .map(|&t| (u8::from(t), t.meaning().to_string()))
            .collect();
        assert_eq!(listed, expected);
    }
}
