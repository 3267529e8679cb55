//! Unpacking: every member of a `.tar.gz` judged by the rules of the
//! module header, created relative to directory descriptors opened with
//! `O_NOFOLLOW`, inside a staging directory that is renamed into place
//! only when the whole archive was accepted.
//!
//! Nothing here resolves a path through the file system by name: each
//! directory of a member's path is opened from its parent's descriptor,
//! so no symbolic link (planted by the archive or by anyone else) is ever
//! followed while writing. The same holds for `chown_tree`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, futimens, mkdirat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, symlinkat, syncfs, unlinkat, UnlinkatFlags};

use super::gzip::Gzip;
use super::rules::{components, dir_mode, file_mode, join, link_target, lossy};
use super::tar::{Entry, Kind, ReadError, Reader};
use super::{Limits, UnpackError, Why};
use crate::error::{Error, Result};

/// The most bytes accepted after the archive's end blocks.
const TRAILER_MAX: u64 = 1 << 20;
/// Size of the read and copy buffers.
const BUF_SIZE: usize = 64 * 1024;

/// Flags that open a directory and never follow a symbolic link.
pub(super) fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// What an unpack created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Unpacked {
    /// Members extracted (the `./` entry included).
    pub members: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

/// Unpacks the `.tar.gz` at `archive` into `dest`, which must not exist
/// (an empty directory is replaced), by the rules of the module header.
/// The parent of `dest` must exist; the staging directory is made there.
///
/// # Errors
///
/// [`UnpackError::Refused`] names the first member that breaks a rule,
/// [`UnpackError::TooLarge`] and [`UnpackError::Malformed`] say what is
/// wrong with the archive, [`UnpackError::Io`] names a local failure. In
/// every case nothing is left at `dest` or beside it.
pub(crate) fn unpack(
    archive: &Path,
    dest: &Path,
    limits: Limits,
) -> std::result::Result<Unpacked, UnpackError> {
    check_free(dest).map_err(UnpackError::Io)?;
    let file =
        File::open(archive).map_err(|e| UnpackError::Io(Error::io("open archive", archive, e)))?;
    let staging = Staging::create(dest).map_err(UnpackError::Io)?;
    let root = openat(
        nix::fcntl::AT_FDCWD,
        staging.path.as_path(),
        dir_flags(),
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Io(Error::io("open", &staging.path, e.into())))?;
    let (gzip, stdout) = Gzip::decompress(Stdio::from(file)).map_err(UnpackError::Io)?;
    let mut reader = Reader::new(BufReader::with_capacity(BUF_SIZE, stdout), limits);
    let mut tree = Tree::new(root, staging.path.clone());
    let mut unpacked = Unpacked::default();
    let read = extract_all(&mut reader, &mut tree, &mut unpacked);
    drop(reader);
    // When the stream ended by itself, gzip's own verdict (not gzip at
    // all, damaged data, bad CRC) explains it better than the tar reader.
    let ended = matches!(&read, Ok(()) | Err((_, Fail::Read(ReadError::Truncated))));
    let verdict = gzip.finish();
    if ended {
        if let Some(said) = verdict.map_err(UnpackError::Io)? {
            return Err(UnpackError::Malformed(said));
        }
    }
    read.map_err(|(member, fail)| fail.into_error(member.as_deref()))?;
    tree.finish().map_err(UnpackError::Io)?;
    staging.commit(dest).map_err(UnpackError::Io)?;
    Ok(unpacked)
}

/// Extracts every member; on failure, the member concerned (if any).
fn extract_all<R: io::Read>(
    reader: &mut Reader<R>,
    tree: &mut Tree,
    unpacked: &mut Unpacked,
) -> std::result::Result<(), (Option<Vec<u8>>, Fail)> {
    let mut buf = vec![0u8; BUF_SIZE];
    while let Some(entry) = reader.next_entry().map_err(|e| (None, Fail::Read(e)))? {
        let written = tree
            .extract(&entry, reader, &mut buf)
            .map_err(|fail| (Some(entry.name.clone()), fail))?;
        unpacked.members += 1;
        unpacked.bytes += written;
    }
    reader
        .drain(TRAILER_MAX)
        .map_err(|e| (None, Fail::Read(e)))?;
    Ok(())
}

/// `dest` is free when it does not exist or is an empty directory.
fn check_free(dest: &Path) -> Result<()> {
    let taken = || {
        Error::io(
            "unpack into",
            dest,
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "it exists and is not an empty directory",
            ),
        )
    };
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("look at", dest, e)),
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(dest).map_err(|e| Error::io("read", dest, e))?;
            match entries.next() {
                None => Ok(()),
                Some(_) => Err(taken()),
            }
        }
        Ok(_) => Err(taken()),
    }
}

/// The staging directory beside the destination, removed on drop unless
/// committed.
struct Staging {
    path: PathBuf,
    committed: bool,
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Staging {
    fn create(dest: &Path) -> Result<Staging> {
        let name = dest.file_name().ok_or_else(|| {
            Error::invalid(format!(
                "unable to unpack into {}: no file name",
                dest.display()
            ))
        })?;
        let mut staged = OsString::from(".");
        staged.push(name);
        staged.push(format!(
            ".unpacking-{}-{}",
            std::process::id(),
            STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let path = dest.with_file_name(staged);
        mkdirat(
            nix::fcntl::AT_FDCWD,
            path.as_path(),
            Mode::from_bits_truncate(0o700),
        )
        .map_err(|e| Error::io("create directory", &path, e.into()))?;
        Ok(Staging {
            path,
            committed: false,
        })
    }

    fn commit(mut self, dest: &Path) -> Result<()> {
        fs::rename(&self.path, dest).map_err(|e| Error::io("rename into place", dest, e))?;
        self.committed = true;
        crate::fsutil::sync_parent(dest)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            // remove_dir_all does not follow symbolic links.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A failure inside the tree: a rule broken, a local error, or the
/// archive stream itself.
enum Fail {
    Rule(Why),
    Io(Error),
    Read(ReadError),
}

impl From<Why> for Fail {
    fn from(why: Why) -> Fail {
        Fail::Rule(why)
    }
}

impl Fail {
    /// The unpack error, naming `member` when a rule was broken.
    fn into_error(self, member: Option<&[u8]>) -> UnpackError {
        match self {
            Fail::Rule(why) => UnpackError::Refused {
                member: lossy(member.unwrap_or_default()),
                why,
            },
            Fail::Io(err) => UnpackError::Io(err),
            Fail::Read(ReadError::Truncated) => {
                UnpackError::Malformed("the archive is truncated".into())
            }
            Fail::Read(ReadError::Malformed(msg)) => UnpackError::Malformed(msg),
            Fail::Read(ReadError::TooLarge(msg)) => UnpackError::TooLarge(msg),
            Fail::Read(ReadError::Io(e)) => {
                UnpackError::Malformed(format!("unable to read the decompressed archive: {e}"))
            }
        }
    }
}

type Done<T> = std::result::Result<T, Fail>;

/// The tree being extracted, under the staging directory's descriptor.
struct Tree {
    root: OwnedFd,
    /// The staging directory, for messages.
    base: PathBuf,
    /// Regular files extracted, by normalised name: (device, inode).
    files: HashMap<Vec<u8>, (u64, u64)>,
    /// Final modes of the directories, by normalised name.
    dirs: BTreeMap<Vec<u8>, u32>,
    /// The parent directory opened last, by normalised name. Directories
    /// are never removed or replaced, so the descriptor stays right.
    cached: Option<(Vec<u8>, OwnedFd)>,
}

impl Tree {
    fn new(root: OwnedFd, base: PathBuf) -> Tree {
        Tree {
            root,
            base,
            files: HashMap::new(),
            dirs: BTreeMap::new(),
            cached: None,
        }
    }

    fn io(&self, op: &str, name: &[u8], errno: Errno) -> Fail {
        Fail::Io(Error::io(
            op,
            self.base.join(OsStr::from_bytes(name)),
            errno.into(),
        ))
    }

    /// Extracts one member; returns the bytes of data written.
    fn extract<R: io::Read>(
        &mut self,
        entry: &Entry,
        reader: &mut Reader<R>,
        buf: &mut [u8],
    ) -> Done<u64> {
        let parts = components(&entry.name)?;
        let Some((last, dirs)) = parts.split_last() else {
            // The archive's `./` entry: the destination keeps its mode.
            return match entry.kind {
                Kind::Directory => Ok(0),
                _ => Err(Why::NamesDestination.into()),
            };
        };
        let name = join(&parts);
        match entry.kind {
            Kind::Directory => {
                let parent = self.parent(dirs)?;
                let exists = self.clear(parent.as_fd(), last, &name, true)?;
                if !exists {
                    mkdirat(parent.as_fd(), *last, Mode::from_bits_truncate(0o700))
                        .map_err(|e| self.io("create directory", &name, e))?;
                }
                self.dirs.insert(name, dir_mode(entry.mode));
                Ok(0)
            }
            Kind::File => {
                let parent = self.parent(dirs)?;
                self.clear(parent.as_fd(), last, &name, false)?;
                self.write_file(parent.as_fd(), last, &name, entry, reader, buf)
            }
            Kind::Symlink => {
                let target = link_target(dirs, &entry.link)?;
                let parent = self.parent(dirs)?;
                self.clear(parent.as_fd(), last, &name, false)?;
                symlinkat(OsStr::from_bytes(&target), parent.as_fd(), *last)
                    .map_err(|e| self.io("create symbolic link", &name, e))?;
                Ok(0)
            }
            Kind::HardLink => {
                self.hard_link(dirs, last, &name, &entry.link)?;
                Ok(0)
            }
            Kind::CharDevice | Kind::BlockDevice => Err(Why::Device.into()),
            Kind::Fifo => Err(Why::Fifo.into()),
            Kind::Other(flag) => Err(Why::Unsupported(flag).into()),
        }
    }

    /// A descriptor of directory `dirs`, created as needed; reuses the
    /// last one when it is the same directory.
    fn parent(&mut self, dirs: &[&[u8]]) -> Done<OwnedFd> {
        let key = join(dirs);
        if let Some((cached, fd)) = &self.cached {
            if *cached == key {
                return fd
                    .try_clone()
                    .map_err(|e| Fail::Io(Error::io("duplicate descriptor of", &self.base, e)));
            }
        }
        let fd = self.walk(dirs, true)?.ok_or_else(|| {
            Fail::Io(Error::io(
                "create directory",
                self.base.join(OsStr::from_bytes(&key)),
                io::Error::from(io::ErrorKind::NotFound),
            ))
        })?;
        let copy = fd
            .try_clone()
            .map_err(|e| Fail::Io(Error::io("duplicate descriptor of", &self.base, e)))?;
        self.cached = Some((key, copy));
        Ok(fd)
    }

    /// Opens directory `dirs` one component at a time, never following a
    /// symbolic link; with `create`, missing directories are made (0700
    /// for now, 0755 at the end unless a member says otherwise). `None`
    /// when a directory is missing and `create` is false.
    fn walk(&mut self, dirs: &[&[u8]], create: bool) -> Done<Option<OwnedFd>> {
        let mut current: Option<OwnedFd> = None;
        for (i, part) in dirs.iter().enumerate() {
            let at = current.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
            let next = match openat(at, *part, dir_flags(), Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    match mkdirat(at, *part, Mode::from_bits_truncate(0o700)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(self.io("create directory", &join(&dirs[..=i]), e)),
                    }
                    self.dirs.entry(join(&dirs[..=i])).or_insert(0o755);
                    openat(at, *part, dir_flags(), Mode::empty())
                        .map_err(|e| self.blocked(at, &dirs[..=i], e))?
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(self.blocked(at, &dirs[..=i], e)),
            };
            current = Some(next);
        }
        match current {
            Some(fd) => Ok(Some(fd)),
            None => self
                .root
                .try_clone()
                .map(Some)
                .map_err(|e| Fail::Io(Error::io("duplicate descriptor of", &self.base, e))),
        }
    }

    /// Why directory `path` (last component in `at`) could not be opened.
    fn blocked(&self, at: BorrowedFd<'_>, path: &[&[u8]], errno: Errno) -> Fail {
        let name = join(path);
        let last = path.last().copied().unwrap_or(b".");
        match fstatat(at, last, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_type(st.st_mode, SFlag::S_IFLNK) => {
                Why::ThroughSymlink(lossy(&name)).into()
            }
            Ok(st) if !is_type(st.st_mode, SFlag::S_IFDIR) => {
                Why::NotADirectory(lossy(&name)).into()
            }
            _ => self.io("open directory", &name, errno),
        }
    }

    /// Makes room for a member at `last` in `parent`: an earlier entry of
    /// that name is unlinked, unless it is a directory, which a directory
    /// member keeps (returns true) and any other member is refused.
    fn clear(&mut self, parent: BorrowedFd<'_>, last: &[u8], name: &[u8], dir: bool) -> Done<bool> {
        match fstatat(parent, last, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(self.io("look at", name, e)),
            Ok(st) if is_type(st.st_mode, SFlag::S_IFDIR) => {
                if dir {
                    Ok(true)
                } else {
                    Err(Why::ReplacesDirectory.into())
                }
            }
            Ok(_) => {
                unlinkat(parent, last, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| self.io("remove", name, e))?;
                self.files.remove(name);
                Ok(false)
            }
        }
    }

    fn write_file<R: io::Read>(
        &mut self,
        parent: BorrowedFd<'_>,
        last: &[u8],
        name: &[u8],
        entry: &Entry,
        reader: &mut Reader<R>,
        buf: &mut [u8],
    ) -> Done<u64> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(parent, last, flags, Mode::from_bits_truncate(0o600))
            .map_err(|e| self.io("create", name, e))?;
        let mut file = File::from(fd);
        let mut written = 0u64;
        loop {
            let n = reader.read_data(buf).map_err(Fail::Read)?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).map_err(|e| {
                Fail::Io(Error::io(
                    "write",
                    self.base.join(OsStr::from_bytes(name)),
                    e,
                ))
            })?;
            written += n as u64;
        }
        let mtime = TimeSpec::new(i64::try_from(entry.mtime).unwrap_or(0), 0);
        futimens(&file, &TimeSpec::UTIME_OMIT, &mtime)
            .map_err(|e| self.io("set the time of", name, e))?;
        fchmod(&file, Mode::from_bits_truncate(file_mode(entry.mode)))
            .map_err(|e| self.io("set the mode of", name, e))?;
        let st = fstat(&file).map_err(|e| self.io("look at", name, e))?;
        self.files.insert(name.to_vec(), (st.st_dev, st.st_ino));
        Ok(written)
    }

    /// Links `name` to `target`, a regular file an earlier member created
    /// and that is still there.
    fn hard_link(&mut self, dirs: &[&[u8]], last: &[u8], name: &[u8], target: &[u8]) -> Done<()> {
        let outside = || Fail::Rule(Why::HardLinkOutside(lossy(target)));
        let unknown = || Fail::Rule(Why::HardLinkUnknown(lossy(target)));
        let parts = match components(target) {
            Ok(parts) => parts,
            Err(Why::Absolute | Why::DotDot) => return Err(outside()),
            Err(_) => return Err(unknown()),
        };
        let Some((target_last, target_dirs)) = parts.split_last() else {
            return Err(unknown());
        };
        let key = join(&parts);
        let Some(&(dev, ino)) = self.files.get(&key) else {
            return Err(unknown());
        };
        if key == name {
            return Ok(()); // a link to itself: the file is already there
        }
        let Some(target_parent) = self.walk(target_dirs, false)? else {
            return Err(unknown());
        };
        match fstatat(
            target_parent.as_fd(),
            *target_last,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st)
                if is_type(st.st_mode, SFlag::S_IFREG) && (st.st_dev, st.st_ino) == (dev, ino) => {}
            _ => return Err(unknown()),
        }
        let parent = self.parent(dirs)?;
        self.clear(parent.as_fd(), last, name, false)?;
        linkat(
            target_parent.as_fd(),
            *target_last,
            parent.as_fd(),
            last,
            AtFlags::empty(),
        )
        .map_err(|e| self.io("create hard link", name, e))?;
        self.files.insert(name.to_vec(), (dev, ino));
        Ok(())
    }

    /// Gives every directory its final mode and the root 0755, then
    /// flushes the file system, so the tree is on disk before the rename.
    fn finish(mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (name, mode) in &dirs {
            let parts: Vec<&[u8]> = name.split(|&b| b == b'/').collect();
            let fd = match self.walk(&parts, false) {
                Ok(Some(fd)) => fd,
                Ok(None) | Err(Fail::Rule(_) | Fail::Read(_)) => continue,
                Err(Fail::Io(err)) => return Err(err),
            };
            fchmod(&fd, Mode::from_bits_truncate(*mode)).map_err(|e| {
                Error::io(
                    "set the mode of",
                    self.base.join(OsStr::from_bytes(name)),
                    e.into(),
                )
            })?;
        }
        fchmod(&self.root, Mode::from_bits_truncate(0o755))
            .map_err(|e| Error::io("set the mode of", &self.base, e.into()))?;
        syncfs(&self.root).map_err(|e| Error::io("sync the file system of", &self.base, e.into()))
    }
}

pub(super) fn is_type(mode: u32, kind: SFlag) -> bool {
    mode & SFlag::S_IFMT.bits() == kind.bits()
}
