//! Where an instance's source comes from, and how it reaches
//! `instances/ID/`.
//!
//! The `source` of a register request is parsed once into a [`Source`]:
//!
//! - `http://HOST[:PORT]/PATH` (a `.tar.gz`): downloaded by the heart
//!   into `uploads/` (streamed to disk, at most `--max-source-size`, with a
//!   connect timeout and an overall deadline), then unpacked; the download
//!   is removed afterwards;
//! - `upload:ID`: a file a client sent with `POST /uploads`; used once
//!   (removed once a register with it succeeded); unused uploads are
//!   removed after [`UPLOAD_TTL`];
//! - a directory or a `.tar.gz`/`.tgz` file on this node.
//!
//! With `source_sha256`, the archive must have that digest (both are named
//! when it does not). Archives are unpacked by `archive::unpack`, which
//! writes nothing outside the instance directory; directories are copied
//! with `cp -a`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::Node;
use crate::archive;
use crate::digest::Digest;
use crate::error::{Error, Refusal, Result};
use crate::fetch::{self, Deadline, HttpUrl};
use crate::fsutil;
use crate::process;
use crate::secret::random_hex;

/// Bound of copying a directory.
const COPY_TIMEOUT: Duration = Duration::from_secs(600);
/// The most an archive may unpack to.
const UNPACK_LIMITS: archive::Limits = archive::Limits {
    max_bytes: 8 << 30,
    max_members: 1_000_000,
};
/// Longest wait for a download's connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a download may take in all.
const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(600);
/// Longest an upload's body may take in all.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(3600);
/// An upload no register used is removed after this long.
const UPLOAD_TTL: Duration = Duration::from_secs(3600);

/// A source, parsed from the register request.
#[derive(Debug)]
pub(super) enum Source {
    /// A directory on this node.
    Dir(PathBuf),
    /// An archive on this node: the caller's, an upload, or a download.
    Archive {
        /// The `.tar.gz` file.
        path: PathBuf,
        /// Removed once a register used it (an upload), or in any case (a
        /// download).
        disposal: Disposal,
    },
}

/// What becomes of an archive the heart holds once the register is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disposal {
    /// The caller's file: left alone.
    Keep,
    /// An upload: removed once a register with it succeeded.
    UsedOnce,
    /// A download: removed in any case.
    Always,
}

impl Source {
    /// Removes what the heart held for this register: after `succeeded`,
    /// an upload too.
    pub(super) fn dispose(&self, succeeded: bool) {
        if let Source::Archive { path, disposal } = self {
            if *disposal == Disposal::Always || (succeeded && *disposal == Disposal::UsedOnce) {
                let _ = fsutil::remove_if_exists(path);
            }
        }
    }

    /// Copies or unpacks the source into `dest`; a failure leaves no
    /// `dest` behind.
    ///
    /// # Errors
    ///
    /// `Unprocessable` with the reason: the archive member refused, or
    /// why `cp` failed.
    pub(super) fn copy_into(&self, dest: &Path) -> Result<()> {
        if dest.exists() {
            fs::remove_dir_all(dest).map_err(|e| Error::io("remove stale", dest, e))?;
        }
        let (from, failure) = match self {
            Source::Archive { path, .. } => match archive::unpack(path, dest, UNPACK_LIMITS) {
                Ok(_) => return Ok(()),
                Err(e) => (path, Error::from(e).to_string()),
            },
            Source::Dir(dir) => {
                fsutil::create_dir_all(dest, 0o755)?;
                let mut cmd = Command::new("cp");
                cmd.arg("-a").arg(dir.join(".")).arg(dest);
                let failure =
                    match process::bounded::output(&mut cmd, None, COPY_TIMEOUT, (0, 4096), "cp") {
                        Ok(Some(out)) if out.status.success() => return Ok(()),
                        Ok(Some(out)) => format!(
                            "cp exited with code {}: {}",
                            process::code_of_status(out.status),
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                        Ok(None) => format!("cp took longer than {} s", COPY_TIMEOUT.as_secs()),
                        Err(e) => e.to_string(),
                    };
                (dir, failure)
            }
        };
        let _ = fs::remove_dir_all(dest);
        Err(Error::refused(
            Refusal::Unprocessable,
            format!("unable to copy {}: {failure}", from.display()),
        ))
    }
}

impl Node {
    /// Parses the `source` of a register request and gets it: downloads a
    /// URL, finds an upload, or checks a path on this node; with `sha256`,
    /// checks the archive's digest.
    ///
    /// # Errors
    ///
    /// `Unprocessable` (or `TooLarge`) with the reason: an unusable URL or
    /// path, a failed download, no such upload, a digest mismatch.
    pub(super) fn resolve_source(&self, source: &Path, sha256: Option<&str>) -> Result<Source> {
        let sha256 = sha256
            .map(|text| {
                text.parse::<Digest>().map_err(|_| {
                    Error::refused(
                        Refusal::BadRequest,
                        format!("source_sha256 {text:?} is not 64 hex digits"),
                    )
                })
            })
            .transpose()?;
        let text = source.to_string_lossy();
        if text.contains("://") {
            let url: HttpUrl = text.parse().map_err(Error::from)?;
            let path = self
                .layout
                .uploads()
                .join(format!("download-{}.tar.gz", random_hex(8)?));
            let limits = fetch::Limits {
                max_size: self.config.max_source_size,
                connect_timeout: CONNECT_TIMEOUT,
                deadline: DOWNLOAD_DEADLINE,
            };
            fetch::download(&url, &path, &limits, sha256.as_ref()).map_err(Error::from)?;
            return Ok(Source::Archive {
                path,
                disposal: Disposal::Always,
            });
        }
        if let Some(id) = text.strip_prefix("upload:") {
            let path = self.upload_path(id)?;
            check_digest(&path, sha256.as_ref())?;
            return Ok(Source::Archive {
                path,
                disposal: Disposal::UsedOnce,
            });
        }
        let path = std::path::absolute(source).map_err(|e| {
            Error::refused(
                Refusal::Unprocessable,
                format!("source {}: {e}", source.display()),
            )
        })?;
        let meta = fs::metadata(&path).map_err(|e| {
            Error::refused(
                Refusal::Unprocessable,
                format!("source {}: {e}", path.display()),
            )
        })?;
        let name = path.to_string_lossy();
        if meta.is_dir() {
            if sha256.is_some() {
                return Err(Error::refused(
                    Refusal::Unprocessable,
                    format!(
                        "source {} is a directory: source_sha256 is for archives",
                        path.display()
                    ),
                ));
            }
            Ok(Source::Dir(path))
        } else if meta.is_file() && (name.ends_with(".tar.gz") || name.ends_with(".tgz")) {
            check_digest(&path, sha256.as_ref())?;
            Ok(Source::Archive {
                path,
                disposal: Disposal::Keep,
            })
        } else {
            Err(Error::refused(
                Refusal::Unprocessable,
                format!(
                    "source {} is neither a directory nor a .tar.gz file",
                    path.display()
                ),
            ))
        }
    }

    /// The file of upload `id`.
    ///
    /// # Errors
    ///
    /// `Unprocessable` for an id that is not one, or an upload that does
    /// not exist (never made, used, or expired).
    fn upload_path(&self, id: &str) -> Result<PathBuf> {
        let valid = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
        let path = self.layout.upload(id);
        if !valid || !path.is_file() {
            return Err(Error::refused(
                Refusal::Unprocessable,
                format!("no upload {id:?} (an upload is used once, and kept for an hour)"),
            ));
        }
        Ok(path)
    }

    /// `POST /uploads`: saves `body` (gzip, at most `--max-source-size`
    /// bytes, its digest computed on the way) as a new upload.
    ///
    /// # Errors
    ///
    /// `TooLarge` over the limit; `Unprocessable` when it is not gzip or
    /// the transfer failed; an I/O error writing it.
    pub(crate) fn upload(&self, body: &mut dyn Read, declared: Option<u64>) -> Result<Value> {
        let id = random_hex(16)?;
        let path = self.layout.upload(&id);
        let deadline = Deadline {
            at: Instant::now() + UPLOAD_DEADLINE,
            limit: UPLOAD_DEADLINE,
        };
        let saved = fetch::save(
            body,
            declared,
            &path,
            self.config.max_source_size,
            None,
            Some(deadline),
        )
        .map_err(Error::from)?;
        Ok(json!({"upload": id, "sha256": saved.sha256.to_string(), "size": saved.size}))
    }

    /// Removes uploads and downloads older than [`UPLOAD_TTL`].
    pub(super) fn expire_uploads(&self) {
        let Ok(entries) = fs::read_dir(self.layout.uploads()) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > UPLOAD_TTL);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Checks that the archive at `path` has the digest `expected`.
///
/// # Errors
///
/// `Unprocessable` naming both digests when they differ.
fn check_digest(path: &Path, expected: Option<&Digest>) -> Result<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let actual = Digest::of_file(path)?;
    if &actual == expected {
        Ok(())
    } else {
        Err(Error::refused(
            Refusal::Unprocessable,
            format!(
                "source {}: sha256 {actual} does not match source_sha256 {expected}",
                path.display()
            ),
        ))
    }
}
