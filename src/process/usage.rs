//! What processes use, from `/proc`: resident memory and CPU time summed
//! over each process group. One pass over `/proc/*/stat` answers for
//! every group at once, so a list of many instances costs one scan.
//!
//! Memory is the resident set (`rss`, field 24, in pages); CPU time is
//! user plus system time (fields 14 and 15, in clock ticks) of the live
//! processes, not of their reaped children.

use std::collections::{HashMap, HashSet};
use std::fs;

use nix::unistd::{sysconf, SysconfVar};

/// What one process group uses.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Usage {
    /// Resident memory, in bytes.
    pub memory_bytes: u64,
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
}

/// The fields of `/proc/PID/stat` used here: process group, utime,
/// stime, rss (pages).
fn parse(text: &str) -> Option<(i32, u64, u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    // Fields after the name, numbered from 3 as in proc(5).
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    Some((
        field(5)?.parse().ok()?,
        field(14)?.parse().ok()?,
        field(15)?.parse().ok()?,
        field(24)?.parse().ok()?,
    ))
}

/// The usage of each process group in `groups`, from one pass over
/// `/proc`; groups with no live process are absent.
pub(crate) fn of_groups(groups: &[i32]) -> HashMap<i32, Usage> {
    let mut out: HashMap<i32, Usage> = HashMap::new();
    if groups.is_empty() {
        return out;
    }
    let page = sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let wanted: HashSet<i32> = groups.iter().copied().collect();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((pgrp, utime, stime, rss)) = parse(&text) else {
            continue;
        };
        if !wanted.contains(&pgrp) {
            continue;
        }
        let usage = out.entry(pgrp).or_default();
        usage.memory_bytes += rss * page;
        usage.cpu_seconds += (utime + stime) as f64 / ticks;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_group_uses_memory_and_time() {
        let text = "12 (a (b) c) S 1 12 12 0 -1 4194560 1 0 0 0 7 3 0 0 20 0 1 0 99 1000 250";
        assert_eq!(parse(text), Some((12, 7, 3, 250)));
        let pgrp = nix::unistd::getpgrp().as_raw();
        let usage = of_groups(&[pgrp]);
        let ours = usage.get(&pgrp).expect("our own group");
        assert!(ours.memory_bytes > 0, "{ours:?}");
    }
}
