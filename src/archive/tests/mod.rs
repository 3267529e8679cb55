//! Tests of unpack and pack with real programs: hostile archives built
//! with the module's own tar writer and compressed by the real `gzip`
//! ([`hostile`]), and round trips through GNU tar ([`round_trip`]). The
//! helpers here: a scratch tree with sentinels, a snapshot of a tree, an
//! archive builder.

mod hostile;
mod round_trip;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::write::{self as tar, Header};
use super::{unpack, Limits, UnpackError, Why};

const LIMITS: Limits = Limits {
    max_bytes: 1 << 30,
    max_members: 100_000,
};

/// A scratch tree: `outside/` holds sentinels, `instances/` is the
/// parent of the destination `instances/app`. Removed on drop unless the
/// test failed.
struct Scratch {
    root: PathBuf,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let root = std::env::temp_dir().join(format!(
            "pm-archive-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("outside/dir")).unwrap();
        fs::create_dir_all(root.join("instances")).unwrap();
        fs::write(root.join("outside/sentinel.txt"), "keep").unwrap();
        fs::write(root.join("outside/dir/x"), "keep too").unwrap();
        Scratch { root }
    }

    fn dest(&self) -> PathBuf {
        self.root.join("instances/app")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("scratch tree kept at {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// Every entry under `root`: kind, mode, owner, size and content or
/// link target, without following links.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(&path).unwrap().display())
            } else {
                format!("file {:?}", fs::read(&path).unwrap())
            };
            let line = format!("{what} {:o} {}:{}", meta.mode(), meta.uid(), meta.gid());
            out.insert(path.strip_prefix(root).unwrap().to_path_buf(), line);
        }
    }
    out
}

/// A tar stream under construction.
#[derive(Default)]
struct Arch {
    bytes: Vec<u8>,
}

fn header<'a>(name: &'a [u8], typeflag: u8, mode: u32, size: u64, link: &'a [u8]) -> Header<'a> {
    Header {
        name,
        typeflag,
        mode,
        size,
        link,
        mtime: 1_600_000_000,
        uid: 4242,
        gid: 4242,
    }
}

impl Arch {
    fn member(mut self, name: &str, typeflag: u8, mode: u32, link: &str, data: &[u8]) -> Arch {
        let h = header(
            name.as_bytes(),
            typeflag,
            mode,
            data.len() as u64,
            link.as_bytes(),
        );
        tar::write_member(&mut self.bytes, &h).unwrap();
        tar::write_padded(&mut self.bytes, data).unwrap();
        self
    }
    fn file(self, name: &str, mode: u32, data: &[u8]) -> Arch {
        self.member(name, b'0', mode, "", data)
    }
    fn dir(self, name: &str, mode: u32) -> Arch {
        self.member(name, b'5', mode, "", b"")
    }
    fn symlink(self, name: &str, target: &str) -> Arch {
        self.member(name, b'2', 0o777, target, b"")
    }
    fn hardlink(self, name: &str, target: &str) -> Arch {
        self.member(name, b'1', 0o644, target, b"")
    }
    /// A metadata header (`L`, `K`, `x`, `g`) with `data`.
    fn meta(self, typeflag: u8, data: &[u8]) -> Arch {
        self.member("././@LongLink", typeflag, 0o644, "", data)
    }
    fn pax(self, typeflag: u8, records: &[(&str, &str)]) -> Arch {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = key.len() + value.len() + 3;
            let mut len = body + 1;
            while len != body + len.to_string().len() {
                len = body + len.to_string().len();
            }
            data.extend(format!("{len} {key}={value}\n").bytes());
        }
        self.meta(typeflag, &data)
    }
    /// The archive, ended and gzip-compressed, written to `path`.
    fn write(mut self, path: &Path) -> PathBuf {
        tar::write_end(&mut self.bytes).unwrap();
        gzip_to(&self.bytes, path);
        path.to_path_buf()
    }
}

fn gzip_to(data: &[u8], path: &Path) {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(fs::File::create(path).unwrap())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    assert!(child.wait().unwrap().success());
}

/// Unpacks `arch` into the scratch destination, expects a failure, and
/// checks that the scratch tree is exactly as before.
fn refused(scratch: &Scratch, arch: Arch) -> UnpackError {
    let archive = arch.write(&scratch.path("archive.tgz"));
    let before = snapshot(&scratch.root);
    let err = unpack(&archive, &scratch.dest(), LIMITS).expect_err("the unpack must fail");
    assert_eq!(snapshot(&scratch.root), before, "{err}");
    err
}

fn assert_refused(err: UnpackError, member: &str, why: Why) {
    match err {
        UnpackError::Refused { member: m, why: w } => {
            assert_eq!((m.as_str(), w), (member, why));
        }
        other => panic!("expected a refusal of {member}, got {other:?}"),
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}
