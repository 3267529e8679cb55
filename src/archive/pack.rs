//! Packing a directory into a `.tar.gz`, streamed to a writer, for
//! `pm-heart deploy DIR --address`.
//!
//! A thread named `pack-tar` walks the directory and writes the tar
//! stream into `gzip -c`; the calling thread copies gzip's output to the
//! writer; the scope joins the thread before returning. Neither side holds
//! more than a buffer. What the archive holds:
//!
//! - every directory, regular file and symbolic link under DIR, in name
//!   order, named relative to DIR (no `./` entry), except what the
//!   `.pmignore` at DIR's top excludes (see [`super::ignore`]);
//! - symbolic links as links, never followed (the heart refuses those
//!   that lead outside); files with several links as separate copies;
//! - modes as they are, owner and group 0, modification times kept;
//! - sockets, FIFOs and devices are left out and listed in
//!   [`Packed::skipped`].

use std::ffi::OsString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::thread;

use super::gzip::Gzip;
use super::ignore::Ignore;
use super::tar;
use super::write::{self, Header};
use crate::error::{Error, Result};

/// The ignore file read at the top of the packed directory.
pub(crate) const IGNORE_FILE: &str = ".pmignore";

/// What [`pack`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Packed {
    /// Members written.
    pub members: u64,
    /// Bytes of file data written (before compression).
    pub bytes: u64,
    /// Entries left out because tar cannot carry them (sockets, FIFOs,
    /// devices), to warn about.
    pub skipped: Vec<PathBuf>,
}

/// Packs `dir` into a `.tar.gz` written to `out`, honouring the
/// `.pmignore` at its top.
///
/// # Errors
///
/// `dir` or an entry under it cannot be read (or changed size while it
/// was read), gzip cannot be run or fails, or `out` cannot be written.
/// What was written to `out` before the error is then incomplete.
pub(crate) fn pack(dir: &Path, out: &mut dyn Write) -> Result<Packed> {
    let meta = fs::metadata(dir).map_err(|e| Error::io("read directory", dir, e))?;
    if !meta.is_dir() {
        return Err(Error::io("pack", dir, nix::errno::Errno::ENOTDIR.into()));
    }
    let ignore_path = dir.join(IGNORE_FILE);
    let ignore = match fs::read(&ignore_path) {
        Ok(text) => Ignore::parse(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => return Err(Error::io("read", &ignore_path, e)),
    };
    let (gzip, stdin, mut stdout) = Gzip::compress()?;
    let (copied, packed) = thread::scope(|scope| {
        let writer = thread::Builder::new()
            .name("pack-tar".into())
            .spawn_scoped(scope, || write_archive(dir, &ignore, stdin));
        let writer = match writer {
            Ok(writer) => writer,
            Err(e) => return (Ok(0), Err(Error::io("start a thread to pack", dir, e))),
        };
        let copied = io::copy(&mut stdout, out);
        // On a failed write, gzip's output closes and the tar writer ends
        // on a broken pipe.
        drop(stdout);
        let packed = writer
            .join()
            .unwrap_or_else(|_| Err(Error::invalid("the pack-tar thread panicked")));
        (copied, packed)
    });
    copied.map_err(|e| Error::io("write the archive of", dir, e))?;
    let packed = packed?;
    if let Some(said) = gzip.finish()? {
        return Err(Error::io("compress", dir, io::Error::other(said)));
    }
    Ok(packed)
}

/// Writes the tar stream of `dir` into gzip's input, then closes it.
fn write_archive(dir: &Path, ignore: &Ignore, stdin: ChildStdin) -> Result<Packed> {
    let mut out = BufWriter::with_capacity(64 * 1024, stdin);
    let mut packed = Packed::default();
    let mut rel = Vec::new();
    write_dir(dir, &mut rel, ignore, &mut out, &mut packed)?;
    write::write_end(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("write the archive of", dir, e))?;
    Ok(packed)
}

fn write_dir(
    dir: &Path,
    rel: &mut Vec<OsString>,
    ignore: &Ignore,
    out: &mut impl Write,
    packed: &mut Packed,
) -> Result<()> {
    let mut names: Vec<OsString> = fs::read_dir(dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
        .map_err(|e| Error::io("read directory", dir, e))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        rel.push(name);
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io("look at", &path, e))?;
        let parts: Vec<&[u8]> = rel.iter().map(|p| p.as_bytes()).collect();
        if !ignore.matches(&parts, meta.is_dir()) {
            let member = parts.join(&b'/');
            write_entry(&path, &member, &meta, rel, ignore, out, packed)?;
        }
        rel.pop();
    }
    Ok(())
}

fn write_entry(
    path: &Path,
    member: &[u8],
    meta: &Metadata,
    rel: &mut Vec<OsString>,
    ignore: &Ignore,
    out: &mut impl Write,
    packed: &mut Packed,
) -> Result<()> {
    let written = |e| Error::io("write the archive member", path, e);
    let header = |name, typeflag, size, link| Header {
        name,
        typeflag,
        mode: meta.mode() & 0o7777,
        size,
        link,
        mtime: u64::try_from(meta.mtime()).unwrap_or(0),
        uid: 0,
        gid: 0,
    };
    let kind = meta.file_type();
    if kind.is_dir() {
        let mut name = member.to_vec();
        name.push(b'/');
        write::write_member(out, &header(&name, b'5', 0, b"")).map_err(written)?;
        packed.members += 1;
        write_dir(path, rel, ignore, out, packed)
    } else if kind.is_symlink() {
        let target = fs::read_link(path).map_err(|e| Error::io("read link", path, e))?;
        let target = target.as_os_str().as_bytes();
        write::write_member(out, &header(member, b'2', 0, target)).map_err(written)?;
        packed.members += 1;
        Ok(())
    } else if kind.is_file() {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("look at", path, e))?
            .len();
        write::write_member(out, &header(member, b'0', size, b"")).map_err(written)?;
        copy_exactly(file, size, path, out)?;
        out.write_all(&[0u8; tar::BLOCK][..tar::padding(size) as usize])
            .map_err(written)?;
        packed.members += 1;
        packed.bytes += size;
        Ok(())
    } else {
        packed.skipped.push(path.to_path_buf());
        Ok(())
    }
}

/// Copies exactly `size` bytes of `file`: a file that shrank while it
/// was packed is an error, what it grew by is left out.
fn copy_exactly(file: File, size: u64, path: &Path, out: &mut impl Write) -> Result<()> {
    let copied = io::copy(&mut file.take(size), out)
        .map_err(|e| Error::io("copy into the archive", path, e))?;
    if copied != size {
        return Err(Error::io(
            "copy into the archive",
            path,
            io::Error::other(format!(
                "it shrank from {size} to {copied} bytes while packed"
            )),
        ));
    }
    Ok(())
}
