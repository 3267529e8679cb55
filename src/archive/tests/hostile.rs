//! Hostile archives: each refused or neutralised as the module header
//! says, and nothing changed outside the destination.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::*;
use crate::archive::unpack::Unpacked;

#[test]
fn dot_dot_and_absolute_names_are_refused() {
    let s = Scratch::new("dotdot");
    let err = refused(
        &s,
        Arch::default()
            .file("ok", 0o644, b"1")
            .file("../x", 0o644, b"2"),
    );
    assert_refused(err, "../x", Why::DotDot);
    let err = refused(&s, Arch::default().file("a/../../x", 0o644, b"2"));
    assert_refused(err, "a/../../x", Why::DotDot);
    let abs = s.path("absolute-target");
    let name = abs.join("x").display().to_string();
    let err = refused(&s, Arch::default().file(&name, 0o644, b"2"));
    assert_refused(err, &name, Why::Absolute);
    assert!(!abs.exists());
    // A pax path is checked like any name.
    let arch = Arch::default()
        .pax(b'x', &[("path", "../evil")])
        .file("fine", 0o644, b"");
    assert_refused(refused(&s, arch), "../evil", Why::DotDot);
}

#[test]
fn a_symlink_to_the_root_then_a_member_through_it_is_refused() {
    let s = Scratch::new("link-root");
    let arch = Arch::default()
        .symlink("link", "/")
        .file("link/x", 0o644, b"owned");
    assert_refused(refused(&s, arch), "link", Why::AbsoluteLink("/".into()));
    // A link that stays inside is kept, but nothing is written through it.
    let arch = Arch::default()
        .dir("sub", 0o755)
        .symlink("link", "sub")
        .file("link/x", 0o644, b"through");
    assert_refused(
        refused(&s, arch),
        "link/x",
        Why::ThroughSymlink("link".into()),
    );
}

#[test]
fn symlinks_escaping_by_dot_dot_are_refused() {
    let s = Scratch::new("link-escape");
    let arch = Arch::default()
        .dir("a", 0o755)
        .symlink("a/esc", "../../outside/sentinel.txt");
    let err = refused(&s, arch);
    assert_refused(
        err,
        "a/esc",
        Why::EscapingLink("../../outside/sentinel.txt".into()),
    );
    let arch = Arch::default().symlink("up", "..");
    assert_refused(refused(&s, arch), "up", Why::EscapingLink("..".into()));
}

#[test]
fn symlink_chains_are_neutralised_by_writing_the_lexical_target() {
    // Followed by the kernel, l1/l1/../.. would climb two levels above
    // the destination (each l1 is the destination itself).
    let s = Scratch::new("link-chain");
    let archive = Arch::default()
        .symlink("l1", ".")
        .symlink("l2", "l1/l1/../..")
        .dir("d", 0o755)
        .symlink("d/up", "../d/./x/..")
        .write(&s.path("archive.tgz"));
    let dest = s.dest();
    unpack(&archive, &dest, LIMITS).unwrap();
    assert_eq!(fs::read_link(dest.join("l2")).unwrap(), Path::new("."));
    assert_eq!(fs::read_link(dest.join("d/up")).unwrap(), Path::new("."));
    let resolved = fs::canonicalize(dest.join("l2")).unwrap();
    assert_eq!(resolved, fs::canonicalize(&dest).unwrap());
}

#[test]
fn hard_links_only_to_files_extracted_before() {
    let s = Scratch::new("hardlink");
    let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
    let err = refused(&s, Arch::default().hardlink("pw", "/etc/passwd"));
    assert_refused(err, "pw", Why::HardLinkOutside("/etc/passwd".into()));
    let err = refused(
        &s,
        Arch::default().hardlink("pw", "../../outside/sentinel.txt"),
    );
    assert_refused(
        err,
        "pw",
        Why::HardLinkOutside("../../outside/sentinel.txt".into()),
    );
    let err = refused(&s, Arch::default().hardlink("pw", "etc/passwd"));
    assert_refused(err, "pw", Why::HardLinkUnknown("etc/passwd".into()));
    // Replaced by a symbolic link: no longer the file that was extracted.
    let arch = Arch::default()
        .file("f", 0o644, b"data")
        .symlink("f", "g")
        .hardlink("h", "f");
    assert_refused(refused(&s, arch), "h", Why::HardLinkUnknown("f".into()));
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);
    // A link to an earlier member is a real link to the same inode.
    let archive = Arch::default()
        .file("d/f", 0o755, b"data")
        .hardlink("g", "d/f")
        .hardlink("d/h", "./g")
        .write(&s.path("ok.tgz"));
    unpack(&archive, &s.dest(), LIMITS).unwrap();
    let inode = |rel: &str| fs::metadata(s.dest().join(rel)).unwrap().ino();
    assert_eq!(inode("g"), inode("d/f"));
    assert_eq!(inode("d/h"), inode("d/f"));
    assert_eq!(fs::read(s.dest().join("d/h")).unwrap(), b"data");
}

#[test]
fn devices_fifos_and_unknown_types_are_refused() {
    let s = Scratch::new("nodes");
    for (flag, why) in [
        (b'3', Why::Device),
        (b'4', Why::Device),
        (b'6', Why::Fifo),
        (b'S', Why::Unsupported(b'S')),
        (b'V', Why::Unsupported(b'V')),
    ] {
        let arch = Arch::default()
            .file("ok", 0o644, b"")
            .member("node", flag, 0o666, "", b"");
        assert_refused(refused(&s, arch), "node", why);
    }
}

#[test]
fn set_id_bits_group_and_world_write_and_owners_are_dropped() {
    let s = Scratch::new("modes");
    let archive = Arch::default()
        .dir("./", 0o777)
        .file("suid", 0o4755, b"#!/bin/sh\n")
        .file("sgid", 0o2775, b"")
        .file("world", 0o666, b"")
        .file("private", 0o600, b"")
        .dir("open", 0o1777)
        .dir("locked", 0o500)
        .file("open/inner", 0o644, b"")
        .file("implied/deep/f", 0o644, b"")
        .write(&s.path("archive.tgz"));
    let dest = s.dest();
    let unpacked = unpack(&archive, &dest, LIMITS).unwrap();
    let expected = Unpacked {
        members: 9,
        bytes: 10,
    };
    assert_eq!(unpacked, expected);
    let me = nix::unistd::geteuid().as_raw();
    for (rel, mode) in [
        ("", 0o755),
        ("suid", 0o755),
        ("sgid", 0o755),
        ("world", 0o644),
        ("private", 0o600),
        ("open", 0o755),
        ("locked", 0o700),
        ("implied", 0o755),
        ("implied/deep", 0o755),
    ] {
        let path = dest.join(rel);
        assert_eq!(mode_of(&path), mode, "{rel}");
        assert_eq!(fs::symlink_metadata(&path).unwrap().uid(), me, "{rel}");
    }
    let mtime = fs::metadata(dest.join("suid")).unwrap().mtime();
    assert_eq!(mtime, 1_600_000_000);
}

#[test]
fn paths_through_files_and_replaced_directories_are_refused() {
    let s = Scratch::new("replace");
    let arch = Arch::default()
        .file("f", 0o644, b"")
        .file("f/x", 0o644, b"");
    assert_refused(refused(&s, arch), "f/x", Why::NotADirectory("f".into()));
    let arch = Arch::default().dir("d", 0o755).file("d", 0o644, b"");
    assert_refused(refused(&s, arch), "d", Why::ReplacesDirectory);
    let arch = Arch::default()
        .file("x", 0o644, b"")
        .member(".", b'0', 0o644, "", b"");
    assert_refused(refused(&s, arch), ".", Why::NamesDestination);
}

#[test]
fn a_later_member_replaces_a_link_without_writing_through_it() {
    let s = Scratch::new("relink");
    let archive = Arch::default()
        .file("target", 0o644, b"original")
        .symlink("s", "target")
        .file("s", 0o644, b"replacement")
        .file("s", 0o644, b"last wins")
        .write(&s.path("archive.tgz"));
    unpack(&archive, &s.dest(), LIMITS).unwrap();
    assert_eq!(fs::read(s.dest().join("target")).unwrap(), b"original");
    assert!(fs::symlink_metadata(s.dest().join("s")).unwrap().is_file());
    assert_eq!(fs::read(s.dest().join("s")).unwrap(), b"last wins");
}

#[test]
fn long_names_from_gnu_and_pax_headers() {
    let s = Scratch::new("long");
    let long_dir = "d".repeat(120);
    let long_name = format!("{long_dir}/{}", "f".repeat(150));
    let long_link = format!("{long_dir}/{}", "t".repeat(130));
    let archive = Arch::default()
        .meta(b'L', format!("{long_name}\0").as_bytes())
        .file("cut", 0o644, b"gnu")
        .meta(b'K', format!("{long_link}\0").as_bytes())
        .meta(b'L', b"gnu-link\0")
        .symlink("cut2", "cut3")
        .pax(
            b'x',
            &[
                ("comment", "ignored"),
                ("path", "pax/name"),
                ("mtime", "1.5"),
            ],
        )
        .file("cut4", 0o644, b"pax")
        .pax(b'g', &[("linkpath", "pax/name")])
        .symlink("global", "overridden")
        .write(&s.path("archive.tgz"));
    let dest = s.dest();
    unpack(&archive, &dest, LIMITS).unwrap();
    assert_eq!(fs::read(dest.join(&long_name)).unwrap(), b"gnu");
    let link = fs::read_link(dest.join("gnu-link")).unwrap();
    assert_eq!(link, Path::new(&long_link));
    assert_eq!(fs::read(dest.join("pax/name")).unwrap(), b"pax");
    assert_eq!(
        fs::read_link(dest.join("global")).unwrap(),
        Path::new("pax/name")
    );
}

#[test]
fn limits_refuse_bombs_before_writing_them() {
    let s = Scratch::new("limits");
    let few = Limits {
        max_bytes: 1000,
        max_members: 3,
    };
    let archive = Arch::default()
        .file("a", 0o644, &[7; 600])
        .file("b", 0o644, &[7; 600]);
    let archive = archive.write(&s.path("bytes.tgz"));
    let err = unpack(&archive, &s.dest(), few).unwrap_err();
    assert!(
        matches!(&err, UnpackError::TooLarge(m) if m.contains("1000 bytes")),
        "{err}"
    );
    let mut many = Arch::default();
    for i in 0..4 {
        many = many.file(&format!("f{i}"), 0o644, b"");
    }
    let err = unpack(&many.write(&s.path("members.tgz")), &s.dest(), few).unwrap_err();
    assert!(
        matches!(&err, UnpackError::TooLarge(m) if m.contains("3 members")),
        "{err}"
    );
    // A header announcing 10 GiB is refused without reading the data.
    let mut huge = Vec::new();
    tar::write_member(&mut huge, &header(b"huge", b'0', 0o644, 10 << 30, b"")).unwrap();
    gzip_to(&huge, &s.path("huge.tgz"));
    let err = unpack(&s.path("huge.tgz"), &s.dest(), LIMITS).unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge(_)), "{err}");
    // 64 MiB of zeros: the end of the archive, then too much after it.
    gzip_to(&vec![0u8; 64 << 20], &s.path("zeros.tgz"));
    let err = unpack(&s.path("zeros.tgz"), &s.dest(), LIMITS).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Malformed(m) if m.contains("follow the end")),
        "{err}"
    );
    assert_eq!(fs::read_dir(s.path("instances")).unwrap().count(), 0);
}

#[test]
fn damaged_or_foreign_files_are_malformed() {
    let s = Scratch::new("malformed");
    let text = s.path("text.tgz");
    fs::write(&text, "hello, not gzip").unwrap();
    let err = unpack(&text, &s.dest(), LIMITS).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Malformed(m) if m.contains("not in gzip format")),
        "{err}"
    );
    let archive = Arch::default()
        .file("big", 0o644, &[3; 200_000])
        .write(&s.path("a.tgz"));
    let bytes = fs::read(&archive).unwrap();
    fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
    let err = unpack(&archive, &s.dest(), LIMITS).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Malformed(m) if m.contains("unexpected end")),
        "{err}"
    );
    gzip_to(&[b'x'; 4096], &s.path("garbage.tgz"));
    let err = unpack(&s.path("garbage.tgz"), &s.dest(), LIMITS).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Malformed(m) if m.contains("checksum")),
        "{err}"
    );
    let err = unpack(&s.path("absent.tgz"), &s.dest(), LIMITS).unwrap_err();
    assert!(matches!(&err, UnpackError::Io(_)) && err.to_string().contains("absent.tgz"));
    assert_eq!(fs::read_dir(s.path("instances")).unwrap().count(), 0);
}

#[test]
fn the_destination_must_be_free() {
    let s = Scratch::new("dest");
    let archive = Arch::default()
        .file("f", 0o644, b"new")
        .write(&s.path("a.tgz"));
    fs::create_dir(s.dest()).unwrap();
    fs::write(s.dest().join("old"), "old").unwrap();
    let err = unpack(&archive, &s.dest(), LIMITS).unwrap_err();
    assert!(err.to_string().contains("not an empty directory"), "{err}");
    assert_eq!(fs::read(s.dest().join("old")).unwrap(), b"old");
    fs::remove_file(s.dest().join("old")).unwrap();
    unpack(&archive, &s.dest(), LIMITS).unwrap();
    assert_eq!(fs::read(s.dest().join("f")).unwrap(), b"new");
}
