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
    /// A system call failed before the command was started, or the pidfile
    /// could not be written once it was (the command was then ended, and
    /// nothing is reported). With --log-pipe: the log could not be opened,
    /// or standard input could not be read.
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
    /// No such instance (the heart answered 404).
    NotFound,
    /// The request was refused in the instance's present state (the heart answered 409).
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

    use std::collections::BTreeMap;
    use std::path::Path;

    /// The numbers SPEC.md fixes (1, 2 and 3) and the rest, as they are.
    #[test]
    fn supervisor_codes_keep_their_numbers() {
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

    /// Every variant of [`Supervisor`]: the match stops compiling when a
    /// variant is added, until it is added here too.
    fn all_supervisor() -> [Supervisor; 6] {
        use Supervisor::*;
        #[rustfmt::skip]
        let all = [Success, NoControlFile, Unreadable, Invalid, Unrecorded, System];
        for code in all {
            match code {
                Success | NoControlFile | Unreadable | Invalid | Unrecorded | System => {}
            }
        }
        all
    }

    /// Every variant of [`Tool`], as [`all_supervisor`].
    fn all_tool() -> [Tool; 6] {
        use Tool::*;
        let all = [Success, Failure, NotFound, Conflict, Usage, Temporary];
        for code in all {
            match code {
                Success | Failure | NotFound | Conflict | Usage | Temporary => {}
            }
        }
        all
    }

    /// A file of the package, read at test time.
    fn read(rel: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The `///` text of each variant of `enum NAME` in this file, joined
    /// into one line, by variant name.
    fn variant_docs(name: &str) -> BTreeMap<String, String> {
        let source = read("src/exit.rs");
        let start = format!("enum {name} {{");
        let body = source
            .split_once(start.as_str())
            .and_then(|(_, rest)| rest.split_once("\n}"))
            .unwrap_or_else(|| panic!("no {start} in src/exit.rs"))
            .0;
        let mut docs = BTreeMap::new();
        let mut doc = Vec::new();
        for line in body.lines().map(str::trim) {
            if let Some(text) = line.strip_prefix("///") {
                doc.push(text.trim());
            } else if let Some(variant) = line.strip_suffix(',') {
                docs.insert(variant.to_string(), doc.join(" "));
                doc.clear();
            }
        }
        docs
    }

    /// The text of one roff line: macros that set fonts (`.B`, `.BR`, `.I`,
    /// `.IR`, `.RI`) give their arguments run together, escapes go.
    fn roff_text(line: &str) -> String {
        let text = match line.split_once(' ') {
            Some((".B" | ".I", rest)) => rest.trim_matches('"').to_string(),
            Some((".BR" | ".RB" | ".IR" | ".RI" | ".BI" | ".IB", rest)) => {
                let mut args = Vec::new();
                let mut quoted = false;
                let mut current = String::new();
                for c in rest.chars() {
                    match c {
                        '"' => quoted = !quoted,
                        ' ' if !quoted => args.push(std::mem::take(&mut current)),
                        c => current.push(c),
                    }
                }
                args.push(current);
                args.concat()
            }
            _ => line.to_string(),
        };
        ["\\fB", "\\fI", "\\fR", "\\fP", "\\&"]
            .iter()
            .fold(text, |text, escape| text.replace(escape, ""))
            .replace("\\-", "-")
    }

    /// The `.TP` items of the EXIT STATUS section of man page `rel`: each
    /// code (the `.B` line after `.TP`) and its text, joined into one line.
    fn exit_status(rel: &str) -> BTreeMap<u8, String> {
        let page = read(rel);
        let section = page
            .split_once(".SH EXIT STATUS\n")
            .unwrap_or_else(|| panic!("{rel} has no EXIT STATUS section"))
            .1;
        let section = section.split("\n.SH ").next().unwrap();
        let mut items = BTreeMap::new();
        let mut lines = section.lines().peekable();
        while let Some(line) = lines.next() {
            if line != ".TP" {
                continue;
            }
            let tag = lines.next().unwrap_or_default();
            let code: u8 = tag
                .strip_prefix(".B ")
                .and_then(|c| c.trim().parse().ok())
                .unwrap_or_else(|| panic!("{rel}: the tag {tag:?} is not .B CODE"));
            let mut text = Vec::new();
            while let Some(line) = lines.next_if(|l| ![".TP", ".PP", ".LP", ".P"].contains(l)) {
                text.push(roff_text(line));
            }
            let text = text.join(" ");
            assert!(
                items.insert(code, text).is_none(),
                "{rel}: code {code} twice"
            );
        }
        items
    }

    /// Checks that man page `rel` documents exactly the codes of `codes`,
    /// and that the text of each is the variant's doc comment (`exact`) or
    /// holds the variant's key words (`words`, case aside).
    fn check<T: Copy + std::fmt::Debug + Into<u8>>(
        rel: &str,
        codes: &[T],
        docs: &BTreeMap<String, String>,
        exact: bool,
        words: impl Fn(T) -> &'static str,
    ) {
        let items = exit_status(rel);
        let numbers: Vec<u8> = codes.iter().map(|&c| c.into()).collect();
        assert_eq!(
            items.keys().copied().collect::<Vec<u8>>(),
            {
                let mut sorted = numbers.clone();
                sorted.sort();
                sorted
            },
            "{rel}: the codes of EXIT STATUS and of the enum differ"
        );
        for &code in codes {
            let name = format!("{code:?}");
            let doc = &docs[&name];
            let text = &items[&code.into()];
            if exact {
                assert_eq!(text, doc, "{rel}: {name} ({})", code.into());
            }
            let key = words(code);
            assert!(
                doc.to_lowercase().contains(&key.to_lowercase()),
                "the doc of {name} lacks {key:?}: {doc}"
            );
            assert!(
                text.to_lowercase().contains(&key.to_lowercase()),
                "{rel}: the text of {} lacks {key:?} ({name}): {text}",
                code.into()
            );
        }
    }

    /// Key words of each supervisor code, in its doc comment and its text.
    fn supervisor_words(code: Supervisor) -> &'static str {
        match code {
            Supervisor::Success => "ran",
            Supervisor::NoControlFile => "no control file",
            Supervisor::Unreadable => "cannot be read",
            Supervisor::Invalid => "not valid JSON",
            Supervisor::Unrecorded => "neither reported nor recorded",
            Supervisor::System => "system call failed",
        }
    }

    /// Key words of each tool code, in its doc comment and its text.
    fn tool_words(code: Tool) -> &'static str {
        match code {
            Tool::Success => "done",
            Tool::Failure => "failed",
            Tool::NotFound => "no such instance",
            Tool::Conflict => "refused in the instance's present state",
            Tool::Usage => "misuse",
            Tool::Temporary => "temporary failure",
        }
    }

    #[test]
    fn exit_status_sections_document_each_code_with_its_meaning() {
        // pm-supervisor(8) and pm-heart(8) mirror the doc comments word for
        // word. pm-runtime(1) words the same codes for its own commands (the
        // enum is shared with pm-heart): there, the codes and their key
        // words must match.
        let supervisor = variant_docs("Supervisor");
        let tool = variant_docs("Tool");
        check(
            "man/pm-supervisor.8",
            &all_supervisor(),
            &supervisor,
            true,
            supervisor_words,
        );
        check("man/pm-heart.8", &all_tool(), &tool, true, tool_words);
        // pm-runtime has no instances: it never exits 2 or 3.
        let runtime_codes: Vec<Tool> = all_tool()
            .into_iter()
            .filter(|t| !matches!(t, Tool::NotFound | Tool::Conflict))
            .collect();
        check("man/pm-runtime.1", &runtime_codes, &tool, false, tool_words);
    }
}
