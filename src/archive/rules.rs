//! The rules a member is judged by, as pure functions: how its name
//! splits into components (and which names are refused), where a
//! symbolic link's target resolves lexically and the target written in
//! its place, and the permission bits kept. No I/O here: `unpack` applies
//! them.

use super::Why;

/// The most components a member's path may have (and the deepest tree
/// `chown_tree` walks).
pub(crate) const MAX_DEPTH: usize = 256;
/// The longest member name accepted, in bytes (`PATH_MAX`).
pub(super) const NAME_MAX_BYTES: usize = 4096;
/// The longest component accepted, in bytes (`NAME_MAX`).
const COMPONENT_MAX_BYTES: usize = 255;

/// The components of a member name, checked; empty for the `./` entry.
pub(super) fn components(name: &[u8]) -> std::result::Result<Vec<&[u8]>, Why> {
    if name.is_empty() {
        return Err(Why::EmptyName);
    }
    if name[0] == b'/' {
        return Err(Why::Absolute);
    }
    if name.contains(&0) {
        return Err(Why::NulInName);
    }
    if name.len() > NAME_MAX_BYTES {
        return Err(Why::NameTooLong);
    }
    let mut parts = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(Why::DotDot),
            _ if part.len() > COMPONENT_MAX_BYTES => return Err(Why::NameTooLong),
            _ => parts.push(part),
        }
    }
    if parts.len() > MAX_DEPTH {
        return Err(Why::TooDeep);
    }
    Ok(parts)
}

pub(super) fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

pub(super) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The target of a symbolic link in directory `dir` (components from the
/// root), resolved lexically and written relative to `dir`: all its `..`
/// steps first, then plain names. Refused when it leaves the root.
pub(super) fn link_target(dir: &[&[u8]], target: &[u8]) -> std::result::Result<Vec<u8>, Why> {
    if target.is_empty() {
        return Err(Why::EmptyLink);
    }
    if target[0] == b'/' {
        return Err(Why::AbsoluteLink(lossy(target)));
    }
    if target.contains(&0) {
        return Err(Why::NulInName);
    }
    if target.len() > NAME_MAX_BYTES {
        return Err(Why::NameTooLong);
    }
    let mut resolved: Vec<&[u8]> = dir.to_vec();
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if resolved.pop().is_none() {
                    return Err(Why::EscapingLink(lossy(target)));
                }
            }
            _ => resolved.push(part),
        }
    }
    let common = dir
        .iter()
        .zip(&resolved)
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<&[u8]> = vec![b".."; dir.len() - common];
    parts.extend_from_slice(&resolved[common..]);
    if parts.is_empty() {
        return Ok(b".".to_vec());
    }
    Ok(join(&parts))
}

/// Permission bits of a directory: no group or world write, no special
/// bits, and the owner can always enter, list and clean it.
pub(super) fn dir_mode(mode: u32) -> u32 {
    (mode & 0o755) | 0o700
}

/// Permission bits of a file: no group or world write, no special bits.
pub(super) fn file_mode(mode: u32) -> u32 {
    if mode & 0o111 != 0 {
        mode & 0o755
    } else {
        mode & 0o644
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_split_and_checked() {
        assert_eq!(
            components(b"./a//b/./c/").unwrap(),
            vec![&b"a"[..], b"b", b"c"]
        );
        assert!(components(b"./").unwrap().is_empty());
        assert_eq!(components(b"/etc/x"), Err(Why::Absolute));
        assert_eq!(components(b"a/../../x"), Err(Why::DotDot));
        assert_eq!(components(b"a/.."), Err(Why::DotDot));
        assert_eq!(components(b""), Err(Why::EmptyName));
        assert_eq!(components(b"a\0b"), Err(Why::NulInName));
        assert_eq!(components(&[b'a'; 256]), Err(Why::NameTooLong));
        assert_eq!(
            components(&b"a/".repeat(MAX_DEPTH)).unwrap().len(),
            MAX_DEPTH
        );
        assert_eq!(components(&b"a/".repeat(MAX_DEPTH + 1)), Err(Why::TooDeep));
    }

    #[test]
    fn link_targets_resolve_lexically_and_stay_inside() {
        let dir: Vec<&[u8]> = vec![b"a", b"b"];
        assert_eq!(link_target(&dir, b"../c").unwrap(), b"../c");
        assert_eq!(link_target(&dir, b"../../c").unwrap(), b"../../c");
        assert_eq!(link_target(&dir, b"x/../y").unwrap(), b"y");
        assert_eq!(link_target(&dir, b"./x/").unwrap(), b"x");
        assert_eq!(link_target(&dir, b"..").unwrap(), b"..");
        assert_eq!(link_target(&dir, b"../../a/b").unwrap(), b".");
        // Symbolic links followed by `..` cannot be resolved lexically:
        // the written target has its `..` steps first.
        assert_eq!(link_target(&[], b"l/l/l/../..").unwrap(), b"l");
        assert_eq!(
            link_target(&dir, b"../../.."),
            Err(Why::EscapingLink("../../..".into()))
        );
        assert_eq!(link_target(&[], b".."), Err(Why::EscapingLink("..".into())));
        assert_eq!(link_target(&dir, b"/"), Err(Why::AbsoluteLink("/".into())));
        assert_eq!(link_target(&dir, b""), Err(Why::EmptyLink));
    }

    #[test]
    fn modes_are_masked() {
        assert_eq!(dir_mode(0o777), 0o755);
        assert_eq!(dir_mode(0o1777), 0o755);
        assert_eq!(dir_mode(0o2775), 0o755);
        assert_eq!(dir_mode(0o500), 0o700);
        assert_eq!(dir_mode(0o750), 0o750);
        assert_eq!(file_mode(0o4755), 0o755);
        assert_eq!(file_mode(0o6777), 0o755);
        assert_eq!(file_mode(0o666), 0o644);
        assert_eq!(file_mode(0o600), 0o600);
        assert_eq!(file_mode(0o1644), 0o644);
        assert_eq!(file_mode(0o700), 0o700);
    }
}
