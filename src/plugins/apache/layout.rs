//! The managed Apache's server root under `DATA_DIR/runtimes/apache/`:
//! where every file is, and the instance files in it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::protocol::{self, InstanceId};

/// The system's MIME types (Debian and RHEL both have it).
const SYSTEM_MIME_TYPES: &str = "/etc/mime.types";

/// The MIME types written into the server root when the system has none
/// (Apache will not start without a types file).
const MIME_TYPES: &str = "text/html html htm\ntext/css css\ntext/plain txt\n\
    text/javascript js mjs\napplication/json json\napplication/xml xml\n\
    image/png png\nimage/jpeg jpg jpeg\nimage/gif gif\nimage/svg+xml svg\n\
    image/webp webp\nimage/x-icon ico\nfont/woff woff\nfont/woff2 woff2\n\
    application/pdf pdf\napplication/zip zip\n";

/// The managed Apache's files under `DATA_DIR/runtimes/apache/`.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// The server root.
    pub dir: PathBuf,
    /// The main configuration.
    pub conf: PathBuf,
    /// One `ID.conf` per instance.
    pub instances: PathBuf,
    /// Apache's runtime directory (mutexes, scoreboard, pid file).
    pub run: PathBuf,
    /// Apache's own pid file.
    pub httpd_pid: PathBuf,
    /// The supervisor's control file.
    pub control: PathBuf,
    /// The supervisor's pid file.
    pub supervisor_pid: PathBuf,
    /// The supervisor's startflag file.
    pub startflag: PathBuf,
    /// The supervisor's identity, recorded at launch.
    pub identity: PathBuf,
    /// The supervisor's log and Apache's main error log.
    pub log: PathBuf,
}

impl Layout {
    /// The layout under `data_dir`.
    pub(super) fn new(data_dir: &Path) -> Layout {
        // Apache and its supervisor run elsewhere: every path is absolute.
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let dir = data_dir.join("runtimes").join("apache");
        let run = dir.join("run");
        Layout {
            conf: dir.join("httpd.conf"),
            instances: dir.join("instances"),
            httpd_pid: run.join("httpd.pid"),
            run,
            control: dir.join("supervisor.json"),
            supervisor_pid: dir.join("supervisor.pid"),
            startflag: dir.join("supervisor.started"),
            identity: dir.join("supervisor.identity"),
            log: dir.join("apache.log"),
            dir,
        }
    }

    pub(super) fn instance_conf(&self, id: &str) -> PathBuf {
        self.instances.join(format!("{id}.conf"))
    }

    pub(super) fn rejected(&self, id: &str) -> PathBuf {
        self.instances.join(format!("{id}.conf.rejected"))
    }

    pub(super) fn error(&self, id: &str) -> PathBuf {
        self.instances.join(format!("{id}.error"))
    }

    /// Creates the directories, and a MIME types file when the system
    /// has none.
    pub(super) fn create(&self) -> Result<()> {
        fsutil::create_dir_all(&self.instances, 0o700)?;
        // A directory made by an earlier version is closed too.
        std::fs::set_permissions(&self.instances, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| crate::error::Error::io("change the mode of", &self.instances, e))?;
        fsutil::create_dir_all(&self.run, 0o755)?;
        if !Path::new(SYSTEM_MIME_TYPES).is_file() {
            fsutil::write_atomic(&self.own_mime_types(), MIME_TYPES.as_bytes(), 0o644)?;
        }
        Ok(())
    }

    /// The MIME types file Apache reads: the system's, else our own.
    pub(super) fn mime_types(&self) -> PathBuf {
        if Path::new(SYSTEM_MIME_TYPES).is_file() {
            PathBuf::from(SYSTEM_MIME_TYPES)
        } else {
            self.own_mime_types()
        }
    }

    fn own_mime_types(&self) -> PathBuf {
        self.dir.join("mime.types")
    }

    /// Removes every instance file (and rejected file) from a previous run.
    pub(super) fn clear_instances(&self) -> Result<()> {
        let entries = fs::read_dir(&self.instances)
            .map_err(|e| Error::io("read directory", &self.instances, e))?;
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.is_file() {
                fsutil::remove_if_exists(&path)?;
            }
        }
        Ok(())
    }

    /// The ids that have an instance file.
    pub(super) fn configured(&self) -> Vec<InstanceId> {
        let Ok(entries) = fs::read_dir(&self.instances) else {
            return Vec::new();
        };
        let mut ids: Vec<InstanceId> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_suffix(".conf")?;
                id.parse::<protocol::InstanceId>().ok()
            })
            .collect();
        ids.sort();
        ids
    }
}
