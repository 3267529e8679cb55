//! `.pmignore`: glob lines naming what `pack` leaves out.
//!
//! One pattern a line; blank lines and lines starting with `#` are
//! skipped, trailing blanks are dropped. `*` matches any run of
//! characters within one path component, `?` one character other than
//! `/`, and a `**` component any number of components (none included).
//! A trailing `/` makes a pattern match directories only. A pattern with
//! a `/` elsewhere (a leading one included) is anchored at the packed
//! directory; one without matches a name at any depth (`*.log`,
//! `node_modules/`). An ignored directory is left out with everything
//! beneath it. There is no negation (`!`) and no escaping: those
//! characters match themselves.

/// One pattern of a `.pmignore`.
#[derive(Debug, Clone)]
struct Rule {
    /// The pattern's components; unanchored ones start with `**`.
    parts: Vec<Vec<u8>>,
    /// Matches directories only.
    dir_only: bool,
}

/// The patterns of a `.pmignore`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ignore {
    rules: Vec<Rule>,
}

impl Ignore {
    /// Parses the text of a `.pmignore`.
    pub(crate) fn parse(text: &[u8]) -> Ignore {
        let mut rules = Vec::new();
        for line in text.split(|&b| b == b'\n') {
            let line = trim_end(line);
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            let (line, dir_only) = match line.strip_suffix(b"/") {
                Some(rest) => (rest, true),
                None => (line, false),
            };
            let anchored = line.contains(&b'/');
            let line = line.strip_prefix(b"/").unwrap_or(line);
            let mut parts: Vec<Vec<u8>> = Vec::new();
            if !anchored {
                parts.push(b"**".to_vec());
            }
            parts.extend(
                line.split(|&b| b == b'/')
                    .filter(|p| !p.is_empty())
                    .map(<[u8]>::to_vec),
            );
            if parts.iter().all(|p| p == b"**") {
                continue; // `/` alone, or only `**`: would ignore everything
            }
            rules.push(Rule { parts, dir_only });
        }
        Ignore { rules }
    }

    /// True when the entry at `path` (components from the packed
    /// directory) is left out.
    pub(crate) fn matches(&self, path: &[&[u8]], is_dir: bool) -> bool {
        self.rules
            .iter()
            .any(|rule| (is_dir || !rule.dir_only) && match_parts(&rule.parts, path))
    }
}

fn trim_end(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t' | b'\r'] = line {
        line = rest;
    }
    line
}

/// Matches pattern components against path components; `**` stands for
/// any number of components.
fn match_parts(pattern: &[Vec<u8>], path: &[&[u8]]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == b"**" => {
            (0..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((name, names)) => match_name(first, name) && match_parts(rest, names),
            None => false,
        },
    }
}

/// Matches one component: `*` any run, `?` any one byte.
fn match_name(pattern: &[u8], name: &[u8]) -> bool {
    // The classic two-pointer match with one backtrack point.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> Vec<&[u8]> {
        text.split('/').map(str::as_bytes).collect()
    }

    fn ignored(rules: &str, file: &str, is_dir: bool) -> bool {
        Ignore::parse(rules.as_bytes()).matches(&path(file), is_dir)
    }

    #[test]
    fn names_match_star_and_question_mark() {
        assert!(match_name(b"*.log", b"app.log"));
        assert!(match_name(b"*.log", b".log"));
        assert!(!match_name(b"*.log", b"app.log.1"));
        assert!(match_name(b"a*b*c", b"aXXbYYbZc"));
        assert!(!match_name(b"a*b*c", b"aXXbYYbZ"));
        assert!(match_name(b"?.txt", b"a.txt"));
        assert!(!match_name(b"?.txt", b"ab.txt"));
        assert!(match_name(b"*", b""));
        assert!(match_name(b"exact", b"exact"));
        assert!(!match_name(b"exact", b"exactly"));
    }

    #[test]
    fn unanchored_patterns_match_at_any_depth() {
        assert!(ignored("*.log", "a.log", false));
        assert!(ignored("*.log", "deep/down/a.log", false));
        assert!(ignored("node_modules/", "web/node_modules", true));
        assert!(!ignored("node_modules/", "web/node_modules", false));
        assert!(!ignored("*.log", "a.log.txt", false));
    }

    #[test]
    fn anchored_patterns_match_from_the_top() {
        assert!(ignored("/build", "build", true));
        assert!(!ignored("/build", "src/build", true));
        assert!(ignored("src/*.o", "src/x.o", false));
        assert!(!ignored("src/*.o", "lib/src/x.o", false));
        assert!(!ignored("src/*.o", "src/sub/x.o", false));
    }

    #[test]
    fn double_star_spans_components() {
        assert!(ignored("src/**/*.o", "src/x.o", false));
        assert!(ignored("src/**/*.o", "src/a/b/c/x.o", false));
        assert!(ignored("**/cache", "cache", true));
        assert!(ignored("**/cache", "a/b/cache", true));
        assert!(ignored("logs/**", "logs/a/b", false));
        assert!(!ignored("src/**/*.o", "lib/x.o", false));
    }

    #[test]
    fn comments_blanks_and_match_alls_are_skipped() {
        let rules = Ignore::parse(b"# a comment\n\n   \n/\n**\n*.tmp  \r\n");
        assert_eq!(rules.rules.len(), 1);
        assert!(rules.matches(&path("x.tmp"), false));
        assert!(!rules.matches(&path("x"), false));
    }
}
