//! The layout of the heart's data directory: the one place that knows
//! where each file lives under `DATA_DIR`.
//!
//! ```text
//! DATA_DIR/                   0711  others may only pass through, to their
//!                                   instance directory and log
//!   store/                    0700
//!   store/ID.json             0600  each instance's record (`store`)
//!   catalog.json.migrated     0600  the catalog of an earlier version, once
//!                                   migrated into store/
//!   lock                      0600  locked by the heart that runs here; its pid
//!   token                     0600  the API token
//!   address                   0644  the IP:PORT a client uses
//!   instances/ID/             0755  each instance's copy of its source,
//!                                   owned by the instance's user
//!   supervisor/               0700  ID.json (control file, 0600), ID.pid,
//!                                   ID.start, ID.exited
//!   logs/ID.log               0640  each instance's log: the heart's, its
//!                                   group the instance user's group; with
//!                                   ID.log.1 .. ID.log.N rotated
//!   logs/ID.access.log        0640  the access log of a php or static
//!                                   instance (the managed Apache's), rotated
//!                                   the same way
//!   heart.log                 0640  the heart's event log (`events`), with
//!                                   heart.log.1 .. heart.log.N rotated
//!   runtimes/                 0755  for runtimes that manage a daemon
//!   uploads/ID.tar.gz         0700  sources uploaded (POST /uploads) or
//!                                   downloaded for a register
//! ```
//!
//! The agent resolves the directory to an absolute path before it builds
//! its `Layout`; the client takes it as given.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::logfile;
use crate::protocol::{exited, InstanceId};

/// The data directory when neither `--data-dir` nor the config file
/// names one.
pub(crate) const DEFAULT_DATA_DIR: &str = "./pm-data";

/// Which of an instance's logs: its log (the supervisor's lines and the
/// application's output, or Apache's error log), or the access log of an
/// instance served by the managed Apache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum LogStream {
    /// `logs/ID.log`.
    #[default]
    Main,
    /// `logs/ID.access.log`.
    Access,
}

/// Where everything lives in one data directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root`, as given.
    pub(crate) fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// Creates the data directory (resolved to an absolute path) and every
    /// directory of the layout with its mode; `supervisor/` is made 0700
    /// even when it already existed.
    ///
    /// # Errors
    ///
    /// A directory cannot be created or the data directory resolved.
    pub(crate) fn create(data_dir: &Path) -> Result<Layout> {
        fsutil::create_dir_all(data_dir, 0o711)?;
        let root = data_dir
            .canonicalize()
            .map_err(|e| Error::io("resolve data directory", data_dir, e))?;
        let layout = Layout { root };
        for (dir, mode) in [
            (layout.instances(), 0o755),
            (layout.supervisor(), 0o700),
            (layout.logs(), 0o755),
            (layout.runtimes(), 0o755),
            (layout.uploads(), 0o700),
        ] {
            fsutil::create_dir_all(&dir, mode)?;
        }
        let _ = fs::set_permissions(layout.supervisor(), fs::Permissions::from_mode(0o700));
        Ok(layout)
    }

    /// The data directory itself.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `lock`: held (`flock`) by the heart that serves this directory.
    pub(crate) fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// `store/`: one record file per instance.
    pub(crate) fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// `catalog.json`: the whole catalog of an earlier version, migrated
    /// into `store/` on first start.
    pub(crate) fn catalog(&self) -> PathBuf {
        self.root.join("catalog.json")
    }

    /// `token`, mode 0600.
    pub(crate) fn token(&self) -> PathBuf {
        self.root.join("token")
    }

    /// `address`: the `IP:PORT` a client should use.
    pub(crate) fn address(&self) -> PathBuf {
        self.root.join("address")
    }

    /// `uploads/`: sources uploaded or downloaded for a register.
    pub(crate) fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// `uploads/ID.tar.gz`: an uploaded source, used by one register.
    pub(crate) fn upload(&self, id: &str) -> PathBuf {
        self.uploads().join(format!("{id}.tar.gz"))
    }

    /// `instances/`.
    pub(crate) fn instances(&self) -> PathBuf {
        self.root.join("instances")
    }

    /// `instances/ID/`.
    pub(crate) fn instance(&self, id: &InstanceId) -> PathBuf {
        self.instances().join(id.as_str())
    }

    /// `supervisor/`.
    pub(crate) fn supervisor(&self) -> PathBuf {
        self.root.join("supervisor")
    }

    /// `supervisor/ID.json`, the control file.
    pub(crate) fn control(&self, id: &InstanceId) -> PathBuf {
        self.supervisor().join(format!("{id}.json"))
    }

    /// `supervisor/ID.pid`.
    pub(crate) fn pidfile(&self, id: &InstanceId) -> PathBuf {
        self.supervisor().join(format!("{id}.pid"))
    }

    /// `supervisor/ID.start`.
    pub(crate) fn startflag(&self, id: &InstanceId) -> PathBuf {
        self.supervisor().join(format!("{id}.start"))
    }

    /// `supervisor/ID.exited` (the name is the protocol's).
    pub(crate) fn exited(&self, id: &InstanceId) -> PathBuf {
        exited::path(&self.supervisor(), id)
    }

    /// `logs/`.
    pub(crate) fn logs(&self) -> PathBuf {
        self.root.join(logfile::LOGS)
    }

    /// `logs/ID.log`.
    pub(crate) fn log(&self, id: &InstanceId) -> PathBuf {
        logfile::instance_log(&self.root, id.as_str())
    }

    /// `logs/ID.access.log`: the access log of an instance served by the
    /// managed Apache.
    pub(crate) fn access_log(&self, id: &InstanceId) -> PathBuf {
        logfile::access_log(&self.log(id))
    }

    /// The file of `stream` of `id`'s logs.
    pub(crate) fn log_of(&self, id: &InstanceId, stream: LogStream) -> PathBuf {
        match stream {
            LogStream::Main => self.log(id),
            LogStream::Access => self.access_log(id),
        }
    }

    /// `heart.log`, the heart's event log.
    pub(crate) fn events(&self) -> PathBuf {
        self.root.join("heart.log")
    }

    /// `runtimes/`, for runtimes that manage a daemon.
    pub(crate) fn runtimes(&self) -> PathBuf {
        self.root.join("runtimes")
    }

    /// Every file of instance `id` outside its directory, for deregister.
    pub(crate) fn instance_files(&self, id: &InstanceId) -> [PathBuf; 5] {
        [
            self.control(id),
            self.pidfile(id),
            self.startflag(id),
            self.exited(id),
            self.log(id),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_makes_every_directory_with_its_mode() {
        let dir = std::env::temp_dir().join(format!("pm-heart-layout-{}", std::process::id()));
        let layout = Layout::create(&dir.join("data")).unwrap();
        assert!(layout.root().is_absolute());
        for path in [layout.instances(), layout.logs(), layout.runtimes()] {
            assert!(path.is_dir(), "{}", path.display());
        }
        let mode = std::fs::metadata(layout.supervisor())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let id: InstanceId = "web-1".parse().unwrap();
        assert_eq!(layout.exited(&id), layout.supervisor().join("web-1.exited"));
        assert_eq!(layout.log(&id), layout.logs().join("web-1.log"));
        assert_eq!(
            layout.log_of(&id, LogStream::Access),
            layout.logs().join("web-1.access.log")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
