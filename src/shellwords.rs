//! POSIX shell word splitting, without expansion.
//!
//! A command given as a string is split the way `sh` splits words: blanks
//! separate words; single quotes keep everything literal; double quotes
//! keep everything but `\` before `$`, `` ` ``, `"`, `\` and newline; a
//! backslash outside quotes escapes the next character, and
//! backslash-newline is removed. Nothing is expanded: `$HOME` stays
//! `$HOME`. Use `shell: true` for a real shell.

use crate::error::{Error, Result};

/// Splits `line` into words.
///
/// # Errors
///
/// An unterminated quote or a trailing backslash.
pub(crate) fn split(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(unterminated(line, "single quote")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(c @ ('$' | '`' | '"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(unterminated(line, "double quote")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(unterminated(line, "double quote")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => {
                    return Err(Error::invalid(format!(
                        "trailing backslash in command: {line}"
                    )))
                }
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn unterminated(line: &str, what: &str) -> Error {
    Error::invalid(format!("unterminated {what} in command: {line}"))
}

#[cfg(test)]
mod tests {
    use super::split;

    fn ok(line: &str) -> Vec<String> {
        split(line).unwrap()
    }

    #[test]
    fn splits_on_blanks() {
        assert_eq!(ok("  a  b\tc\n"), ["a", "b", "c"]);
        assert!(ok("   ").is_empty());
    }

    #[test]
    fn quotes_join_and_keep_literals() {
        assert_eq!(
            ok(r#"echo 'a b' "c d" e'f'"g""#),
            ["echo", "a b", "c d", "efg"]
        );
        assert_eq!(ok(r#"'$HOME' "\$x \a \\""#), ["$HOME", r"$x \a \"]);
        assert_eq!(ok("''"), [""]);
    }

    #[test]
    fn backslash_escapes_outside_quotes() {
        assert_eq!(ok(r"a\ b c\\d"), ["a b", r"c\d"]);
        assert_eq!(ok("a\\\nb"), ["ab"]);
    }

    #[test]
    fn unterminated_input_is_an_error() {
        assert!(split("'abc").is_err());
        assert!(split("\"abc").is_err());
        assert!(split("abc\\").is_err());
    }
}
