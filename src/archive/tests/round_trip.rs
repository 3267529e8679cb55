//! Round trips: archives GNU tar wrote unpack to the same tree, archives
//! `pack` wrote read back with GNU tar and with `unpack`; handing a tree
//! to another user; throughput.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::*;
use crate::archive::pack::Packed;
use crate::archive::{chown_tree, pack};

/// A source tree with what applications hold: nested and empty
/// directories, executables, a private file, links of both kinds, long
/// and non-ASCII names.
fn source_tree(root: &Path) {
    let long = format!("{}/{}", "n".repeat(90), "m".repeat(90));
    for (rel, mode, data) in [
        ("app.py", 0o644, &b"print('hi')\n"[..]),
        ("bin/run", 0o755, b"#!/bin/sh\necho run\n"),
        ("conf/secret", 0o600, b"s3cret"),
        ("caf\u{e9} menu.txt", 0o644, b"unicode"),
        (long.as_str(), 0o644, b"long"),
        ("logs/app.log", 0o644, b"log"),
        ("build/out.o", 0o644, b"obj"),
        ("src/build/keep.c", 0o644, b"kept: build/ is anchored"),
    ] {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::create_dir_all(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("app.py", root.join("link")).unwrap();
    std::os::unix::fs::symlink("../app.py", root.join("bin/up")).unwrap();
    fs::hard_link(root.join("bin/run"), root.join("bin/again")).unwrap();
}

fn without(map: BTreeMap<PathBuf, String>, prefixes: &[&str]) -> BTreeMap<PathBuf, String> {
    map.into_iter()
        .filter(|(path, _)| !prefixes.iter().any(|p| path.starts_with(p)))
        .collect()
}

#[test]
fn gnu_tar_archives_round_trip() {
    let s = Scratch::new("gnu-tar");
    let src = s.path("src");
    source_tree(&src);
    for (i, format) in ["gnu", "pax", "posix", "oldgnu"].iter().enumerate() {
        let archive = s.path(&format!("{format}.tgz"));
        let status = Command::new("tar")
            .arg(format!("--format={format}"))
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success(), "tar --format={format}");
        let dest = s.path(&format!("instances/{i}"));
        unpack(&archive, &dest, LIMITS).unwrap();
        assert_eq!(snapshot(&dest), snapshot(&src), "--format={format}");
        let inode = |rel: &str| fs::metadata(dest.join(rel)).unwrap().ino();
        assert_eq!(inode("bin/run"), inode("bin/again"), "--format={format}");
    }
}

#[test]
fn packed_archives_honour_pmignore_and_read_back_with_gnu_tar() {
    let s = Scratch::new("pack");
    let src = s.path("src");
    source_tree(&src);
    fs::write(src.join(".pmignore"), "# not shipped\n*.log\n/build/\n").unwrap();
    let archive = s.path("packed.tgz");
    let packed = pack(&src, &mut fs::File::create(&archive).unwrap()).unwrap();
    assert!(packed.skipped.is_empty());
    let expected = without(snapshot(&src), &["logs/app.log", "build"]);
    let ours = s.dest();
    unpack(&archive, &ours, LIMITS).unwrap();
    assert_eq!(snapshot(&ours), expected);
    let theirs = s.path("gnu");
    gnu_unpack(&archive, &theirs);
    assert_eq!(snapshot(&theirs), expected);
    assert_eq!(packed.members as usize, expected.len());
}

#[test]
fn pack_skips_what_tar_cannot_carry_and_names_a_missing_directory() {
    let s = Scratch::new("pack-fifo");
    let src = s.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let mut out = Vec::new();
    let packed = pack(&src, &mut out).unwrap();
    let expected = Packed {
        members: 1,
        bytes: 1,
        skipped: vec![src.join("fifo")],
    };
    assert_eq!(packed, expected);
    assert_eq!(&out[..2], &[0x1f, 0x8b]);
    let err = pack(&s.path("absent"), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn chown_tree_changes_owners_without_following_links() {
    let s = Scratch::new("chown");
    let dest = s.dest();
    let archive = Arch::default()
        .file("a/b/f", 0o644, b"")
        .symlink("a/link", "b/f")
        .write(&s.path("a.tgz"));
    unpack(&archive, &dest, LIMITS).unwrap();
    // A link planted afterwards that points outside stays as it is.
    std::os::unix::fs::symlink(s.path("outside/sentinel.txt"), dest.join("a/out")).unwrap();
    let sentinel_before = fs::metadata(s.path("outside/sentinel.txt")).unwrap().uid();
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(4242),
        nix::unistd::Gid::from_raw(4343),
    );
    chown_tree(&dest, uid, gid).unwrap();
    for rel in ["", "a", "a/b", "a/b/f", "a/link", "a/out"] {
        let meta = fs::symlink_metadata(dest.join(rel)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343), "{rel}");
    }
    let sentinel = fs::metadata(s.path("outside/sentinel.txt")).unwrap();
    assert_eq!(sentinel.uid(), sentinel_before);
    let err = chown_tree(&dest.join("a/link"), uid, gid).unwrap_err();
    assert!(err.to_string().contains("a/link"), "{err}");
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn measure_unpack_throughput() {
    let s = Scratch::new("throughput");
    let src = s.path("src");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..64 {
        // Half random (incompressible), half text-like.
        let data: Vec<u8> = (0..1 << 20)
            .map(|j| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if j % 2 == 0 {
                    state as u8
                } else {
                    b'a' + (j % 26) as u8
                }
            })
            .collect();
        let path = src.join(format!("d{}/f{i}", i % 8));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }
    let archive = s.path("a.tgz");
    pack(&src, &mut fs::File::create(&archive).unwrap()).unwrap();
    let started = std::time::Instant::now();
    let unpacked = unpack(&archive, &s.dest(), LIMITS).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let mb = unpacked.bytes as f64 / 1e6;
    println!("unpack: {mb:.0} MB in {secs:.2} s: {:.0} MB/s", mb / secs);
    assert_eq!(unpacked.bytes, 64 << 20);
    // The same archive through GNU tar, synced as unpack syncs, to compare.
    let theirs = s.path("gnu");
    let started = std::time::Instant::now();
    gnu_unpack(&archive, &theirs);
    nix::unistd::sync();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "tar -xzf and sync: {mb:.0} MB in {secs:.2} s: {:.0} MB/s",
        mb / secs
    );
}

/// Unpacks `archive` into the new directory `dest` with GNU tar.
fn gnu_unpack(archive: &Path, dest: &Path) {
    fs::create_dir(dest).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .status()
        .unwrap();
    assert!(status.success());
}
