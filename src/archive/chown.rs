//! Handing an unpacked tree to another user: every entry re-owned
//! relative to its directory's descriptor, never following a symbolic
//! link.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, AtFlags};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::{fchown, fchownat, Gid, Uid};

use super::rules::MAX_DEPTH;
use super::unpack::{dir_flags, is_type};
use crate::error::{Error, Result};

/// Gives `dir` and everything beneath it to `uid`:`gid`, without ever
/// following a symbolic link (links themselves are re-owned). Children
/// are re-owned before their directory, so no directory is another
/// user's while it is walked.
///
/// # Errors
///
/// `dir` is a symbolic link or not a directory, the tree is deeper than
/// [`MAX_DEPTH`], or a change of owner fails; the error names the path.
pub(crate) fn chown_tree(dir: &Path, uid: Uid, gid: Gid) -> Result<()> {
    let root = openat(nix::fcntl::AT_FDCWD, dir, dir_flags(), Mode::empty())
        .map_err(|e| Error::io("open directory", dir, e.into()))?;
    chown_children(&root, dir, uid, gid, 0)?;
    fchown(&root, Some(uid), Some(gid)).map_err(|e| Error::io("change the owner of", dir, e.into()))
}

fn chown_children(fd: &OwnedFd, path: &Path, uid: Uid, gid: Gid, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::io(
            "change the owner of",
            path,
            io::Error::other(format!("deeper than {MAX_DEPTH} directories")),
        ));
    }
    // The listing goes through the descriptor, not the name.
    let listing = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let names: Vec<OsString> = fs::read_dir(&listing)
        .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
        .map_err(|e| Error::io("read directory", path, e))?;
    for name in names {
        let child = path.join(&name);
        let st = fstatat(fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io("look at", &child, e.into()))?;
        if is_type(st.st_mode, SFlag::S_IFDIR) {
            let sub = openat(fd, name.as_os_str(), dir_flags(), Mode::empty())
                .map_err(|e| Error::io("open directory", &child, e.into()))?;
            chown_children(&sub, &child, uid, gid, depth + 1)?;
        }
        fchownat(
            fd,
            name.as_os_str(),
            Some(uid),
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::io("change the owner of", &child, e.into()))?;
    }
    Ok(())
}
