//! The start-up check of the secrets on disk (issue 12): the token, the
//! store's records and the supervisor control files (exit keys and the
//! instances' environment values, often passwords) are 0600 in 0700
//! directories. A file or directory of the heart's that is open to others
//! is closed (0600, 0700) with a warning naming it; a data directory that
//! others can read or write gets a warning naming it, and is left as the
//! operator made it (instances' users must be able to pass through it to
//! their directories and logs: 0711 is what the heart creates).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::layout::Layout;
use super::PROG;
use crate::cli;

/// Checks (and closes) the modes of the secrets under `layout`; never
/// fails: every finding is a warning.
pub(crate) fn check(layout: &Layout) {
    let root = layout.root();
    if let Some(mode) = mode_of(root) {
        if mode & 0o006 != 0 {
            cli::warn(
                PROG,
                format!(
                    "data directory {} is readable or writable by others (mode {mode:04o}); \
                     make it 0711 or 0700",
                    root.display()
                ),
            );
        }
    }
    for dir in [layout.store(), layout.supervisor()] {
        close(&dir, 0o700);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file && path.extension().is_some_and(|e| e == "json") {
                close(&path, 0o600);
            }
        }
    }
    close(&layout.token(), 0o600);
}

/// The permission bits of `path`, not following a symbolic link.
fn mode_of(path: &Path) -> Option<u32> {
    fs::symlink_metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Sets `path` to `mode` if group or others have any access to it.
fn close(path: &Path, mode: u32) {
    let Some(old) = mode_of(path) else {
        return;
    };
    if old & 0o077 == 0 {
        return;
    }
    match fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
        Ok(()) => cli::warn(
            PROG,
            format!(
                "{} was open to others (mode {old:04o}): made it {mode:04o}",
                path.display()
            ),
        ),
        Err(e) => cli::warn(
            PROG,
            format!(
                "{} is open to others (mode {old:04o}) and cannot be made {mode:04o}: {e}",
                path.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_secrets_are_closed_and_private_ones_left() {
        let dir = std::env::temp_dir().join(format!("pm-heart-secrets-{}", std::process::id()));
        let layout = Layout::create(&dir).unwrap();
        fs::create_dir_all(layout.store()).unwrap();
        let record = layout.store().join("a.json");
        let control = layout.supervisor().join("a.json");
        for (path, mode) in [
            (&record, 0o644),
            (&control, 0o640),
            (&layout.token(), 0o600),
        ] {
            fs::write(path, "x").unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        fs::set_permissions(layout.store(), fs::Permissions::from_mode(0o755)).unwrap();
        check(&layout);
        for path in [&record, &control, &layout.token()] {
            assert_eq!(mode_of(path), Some(0o600), "{}", path.display());
        }
        assert_eq!(mode_of(&layout.store()), Some(0o700));
        assert_eq!(mode_of(&layout.supervisor()), Some(0o700));
        assert_eq!(mode_of(layout.root()), Some(0o711));
        fs::remove_dir_all(dir).unwrap();
    }
}
