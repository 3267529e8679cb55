//! Application archives: unpacking a `.tar.gz` so that nothing is ever
//! written outside its destination, whatever the archive holds, and
//! packing a directory into one.
//!
//! Gzip runs as a child process (`gzip -dc`, `gzip -c`) read and written
//! through pipes, like `tar` itself does it; the tar format is read and
//! written here ([`tar`], [`mod@write`]). Everything streams: neither side
//! ever holds a whole archive or a whole member in memory.
//!
//! [`unpack()`]`(archive, dest, limits)` unpacks into a staging directory
//! beside `dest` (`.NAME.unpacking-PID-N` in the same parent), renames it
//! into place only when every member was accepted, and removes it on any
//! failure, so a refusal leaves nothing behind. The rules, which
//! `pm-heart(8)` states:
//!
//! - **Names.** A member whose name is absolute, has a `..` component, is
//!   longer than 4096 bytes, has a component longer than 255 bytes or
//!   more than 256 components is refused. `./` prefixes and empty or
//!   `.` components are dropped. The archive's own `./` entry is skipped:
//!   it never changes the destination's mode or owner; another kind of
//!   member naming the destination itself is refused.
//! - **No write through a link.** Every directory of a member's path is
//!   opened relative to its parent with `O_NOFOLLOW`, and created (mode
//!   0700 until the end) when missing; a member whose path has a symbolic
//!   link or a non-directory among its directories is refused. Files are
//!   created with `O_CREAT|O_EXCL|O_NOFOLLOW`; an entry already at the
//!   member's name (an earlier member of the same name) is unlinked
//!   first, never written into; a member that would replace a directory
//!   by something else is refused.
//! - **Symbolic links** are refused when their target is empty, absolute
//!   or longer than 4096 bytes, or when the target, resolved lexically from the link's own
//!   directory (`.` dropped, `..` removing one component), leaves the
//!   destination. An accepted link is created with that resolved target
//!   written relative to the link's directory (`up/../x` becomes `x`):
//!   its `..` steps then all come first and cross only real directories,
//!   so no chain of links inside the tree can lead out of it.
//! - **Hard links** are created as real links (`linkat`, never following
//!   a symbolic link), and only to a regular file that an earlier member
//!   of the same archive created at that name and that is still there
//!   (same inode); anything else (an absolute or `..` target such as
//!   `/etc/passwd`, a name not extracted before) is refused.
//! - **Types.** Character and block devices, FIFOs and every type other
//!   than file, directory, symbolic and hard link (GNU sparse files,
//!   volume labels, ...) are refused. (Tar has no sockets.)
//! - **Modes.** Set-uid, set-gid and sticky bits are dropped, and nothing
//!   is group- or world-writable: directories get `mode & 0755 | 0700`
//!   (the owner can always enter and clean them), files with any execute
//!   bit `mode & 0755`, other files `mode & 0644`. The destination itself
//!   is 0755. Modification times of files are kept.
//! - **Owners.** Every entry belongs to the unpacking process's user; the
//!   owners in the archive are ignored. [`chown_tree`] hands a tree to
//!   another user without following symbolic links.
//! - **Bounds.** [`Limits`] bounds the members (every header counts,
//!   long-name and pax headers included) and the bytes (the sizes the
//!   headers announce, checked before the data is read), so a gzip bomb
//!   is refused early; at most 1 MiB may follow the archive's end blocks;
//!   one long name or pax header may hold at most 1 MiB.

// Not called yet outside tests: the heart wires register, `POST /uploads`
// and `deploy --address` to this (issue 14).

mod chown;
mod gzip;
mod ignore;
mod pack;
mod rules;
pub(crate) mod tar;
mod unpack;
pub(crate) mod write;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::error::{Error, Refusal};

pub(crate) use chown::chown_tree;
pub(crate) use pack::pack;
pub(crate) use unpack::unpack;

/// Bounds of one unpack, given by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most bytes the members may hold in total.
    pub max_bytes: u64,
    /// Most members (headers) the archive may have.
    pub max_members: u64,
}

/// Why an unpack failed.
#[derive(Debug)]
pub(crate) enum UnpackError {
    /// A member breaks a rule of this module; nothing was left behind.
    Refused {
        /// The member's name as the archive gives it.
        member: String,
        /// Which rule.
        why: Why,
    },
    /// The archive holds more than [`Limits`] allows.
    TooLarge(String),
    /// Not a gzip-compressed tar archive, or a damaged one.
    Malformed(String),
    /// A local failure (reading the archive, writing the destination,
    /// running gzip).
    Io(Error),
}

/// The rule a refused member breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Why {
    /// The name is empty.
    EmptyName,
    /// The name is absolute.
    Absolute,
    /// The name has a `..` component.
    DotDot,
    /// The name holds a NUL byte.
    NulInName,
    /// The name (or one of its components) is too long.
    NameTooLong,
    /// The name has more components than accepted.
    TooDeep,
    /// A member other than a directory names the destination itself.
    NamesDestination,
    /// The path goes through this symbolic link.
    ThroughSymlink(String),
    /// The path goes through this non-directory.
    NotADirectory(String),
    /// The member would replace a directory.
    ReplacesDirectory,
    /// A symbolic link with an empty target.
    EmptyLink,
    /// A symbolic link to this absolute target.
    AbsoluteLink(String),
    /// A symbolic link to this target, which leads outside.
    EscapingLink(String),
    /// A hard link to this target outside the destination.
    HardLinkOutside(String),
    /// A hard link to this name, which no earlier member created.
    HardLinkUnknown(String),
    /// A character or block device.
    Device,
    /// A FIFO.
    Fifo,
    /// A member type this module does not create (the type flag).
    Unsupported(u8),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::EmptyName => write!(f, "its name is empty"),
            Why::Absolute => write!(f, "its name is absolute"),
            Why::DotDot => write!(f, "its name has a .. component"),
            Why::NulInName => write!(f, "its name holds a NUL byte"),
            Why::NameTooLong => write!(f, "its name is too long"),
            Why::TooDeep => write!(f, "it is more than {} levels deep", rules::MAX_DEPTH),
            Why::NamesDestination => write!(f, "it names the destination itself"),
            Why::ThroughSymlink(link) => {
                write!(f, "its path goes through the symbolic link {link:?}")
            }
            Why::NotADirectory(what) => {
                write!(
                    f,
                    "its path goes through {what:?}, which is not a directory"
                )
            }
            Why::ReplacesDirectory => write!(f, "it would replace a directory"),
            Why::EmptyLink => write!(f, "it is a symbolic link with an empty target"),
            Why::AbsoluteLink(target) => {
                write!(f, "it is a symbolic link to the absolute path {target:?}")
            }
            Why::EscapingLink(target) => write!(
                f,
                "it is a symbolic link to {target:?}, which leads outside the destination"
            ),
            Why::HardLinkOutside(target) => write!(
                f,
                "it is a hard link to {target:?}, which is outside the destination"
            ),
            Why::HardLinkUnknown(target) => write!(
                f,
                "it is a hard link to {target:?}, which is not a file extracted before it"
            ),
            Why::Device => write!(f, "it is a device node"),
            Why::Fifo => write!(f, "it is a FIFO"),
            Why::Unsupported(flag) => {
                write!(f, "its type {:?} is not supported", char::from(*flag))
            }
        }
    }
}

impl fmt::Display for UnpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnpackError::Refused { member, why } => {
                write!(f, "archive member {member:?} is refused: {why}")
            }
            UnpackError::TooLarge(msg) => write!(f, "archive refused: {msg}"),
            UnpackError::Malformed(msg) => write!(f, "not a valid .tar.gz archive: {msg}"),
            UnpackError::Io(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for UnpackError {}

/// The crate error for an unpack failure: a refused member and a damaged
/// archive are `Unprocessable`, an archive over the limits `TooLarge`,
/// a local failure stays what it was.
impl From<UnpackError> for Error {
    fn from(err: UnpackError) -> Error {
        match err {
            UnpackError::Io(err) => err,
            UnpackError::TooLarge(_) => Error::refused(Refusal::TooLarge, err.to_string()),
            UnpackError::Refused { .. } | UnpackError::Malformed(_) => {
                Error::refused(Refusal::Unprocessable, err.to_string())
            }
        }
    }
}
