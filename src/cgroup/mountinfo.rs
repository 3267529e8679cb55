//! The cgroup mounts of `/proc/self/mountinfo` (proc(5)): which cgroup2
//! hierarchy is mounted where, and which cgroup v1 controllers.
//!
//! Only the text is parsed here; what the mounts make possible is decided
//! by [`super::layout`].

use std::path::PathBuf;

/// One cgroup file system mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// `cgroup2`, or the controllers of a v1 hierarchy.
    pub kind: Kind,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What a cgroup mount holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The unified (v2) hierarchy.
    V2,
    /// A v1 hierarchy with these controllers (`memory`, `cpu`, ...); a
    /// named hierarchy without controllers (`name=systemd`) has none.
    V1(Vec<String>),
}

/// The cgroup mounts in the text of a mountinfo file, in order.
pub(crate) fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// One line: `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE
/// SOURCE SUPER_OPTIONS`.
fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let point = unescape(left.get(4)?);
    let options = left.get(5)?;
    let mut right = right.split(' ');
    let fstype = right.next()?;
    let _source = right.next()?;
    let super_options = right.next().unwrap_or("");
    let read_only = options.split(',').any(|o| o == "ro");
    let kind = match fstype {
        "cgroup2" => Kind::V2,
        "cgroup" => Kind::V1(
            super_options
                .split(',')
                .filter(|o| is_controller(o))
                .map(str::to_owned)
                .collect(),
        ),
        _ => return None,
    };
    Some(Mount {
        point: PathBuf::from(point),
        kind,
        read_only,
    })
}

/// Whether a v1 super option names a controller rather than an option
/// (`rw`, `name=systemd`, `xattr`, `release_agent=...`, ...).
fn is_controller(option: &str) -> bool {
    !option.contains('=')
        && !matches!(
            option,
            "rw" | "ro"
                | "noprefix"
                | "xattr"
                | "clone_children"
                | "cpuset_v2_mode"
                | "favordynmods"
                | "nofavordynmods"
                | "none"
                | "all"
        )
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash
/// (`\040`, `\011`, `\012`, `\134`) in a mount point.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cgroup lines of this project's test machines (hybrid layout),
    /// with a non-cgroup mount and a named hierarchy among them.
    const HYBRID: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_mounts_are_found_with_their_controllers() {
        let mounts = parse(HYBRID);
        let kinds: Vec<(&str, &Kind)> = mounts
            .iter()
            .map(|m| (m.point.to_str().unwrap(), &m.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("/sys/fs/cgroup/cpu", &Kind::V1(vec!["cpu".into()])),
                ("/sys/fs/cgroup/cpuacct", &Kind::V1(vec!["cpuacct".into()])),
                ("/sys/fs/cgroup/memory", &Kind::V1(vec!["memory".into()])),
                ("/sys/fs/cgroup/pids", &Kind::V1(vec!["pids".into()])),
                ("/sys/fs/cgroup/systemd", &Kind::V1(vec![])),
                ("/sys/fs/cgroup/unified", &Kind::V2),
            ]
        );
        assert!(mounts.iter().all(|m| !m.read_only));
    }

    #[test]
    fn comounted_controllers_optional_fields_and_read_only_mounts() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
36 25 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 master:2 - cgroup cgroup rw,xattr,cpu,cpuacct
";
        let mounts = parse(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].kind, Kind::V2);
        assert!(mounts[0].read_only);
        assert_eq!(mounts[1].point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(
            mounts[1].kind,
            Kind::V1(vec!["cpu".into(), "cpuacct".into()])
        );
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        let text = "41 31 0:38 / /tmp/a\\040b\\134c rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse(text)[0].point, PathBuf::from("/tmp/a b\\c"));
        assert_eq!(unescape("a\\04"), "a\\04");
        assert!(parse("garbage\n\n").is_empty());
    }
}
