//! Several processes appending to one rotated log: each append takes its
//! turn under an exclusive `flock(2)` on the file it is about to write.
//!
//! A writer that holds the lock on its open file checks that the file is
//! still the one at the log's path (same device and inode): if another
//! writer rotated it meanwhile, it lets go, opens the new file and locks
//! that instead. Holding the lock on the file at the path, it takes the
//! size from the file itself, so what the others wrote counts, and
//! rotates only while it holds the lock; a rotation locks the new file
//! before it lets go of the old one. So the writers never rotate one file
//! twice, and a file never grows past the limit whoever writes it.
//!
//! The lock is on a duplicate of the descriptor, which shares the open
//! file description (where `flock` locks live): dropping the [`Turn`]
//! unlocks it and closes the duplicate, the file stays open.

use std::fs;
use std::os::unix::fs::MetadataExt;

use nix::fcntl::{Flock, FlockArg};

use super::{open_append, LogFile};

/// The lock on the current file, held for one append.
pub(super) type Turn = Flock<fs::File>;

/// How often a writer follows a rotation before it gives up on one
/// append: each retry means another writer rotated in between, which
/// takes a whole file of lines.
const TRIES: usize = 16;

impl LogFile {
    /// Locks the file at the log's path (opening it, or the new one after
    /// another writer's rotation) and takes its size; the lock is kept in
    /// `self.turn` until the append ends.
    pub(super) fn take_turn(&mut self) -> Result<(), String> {
        for _ in 0..TRIES {
            let file = match &self.file {
                Some(file) => file,
                None => self.file.insert(
                    open_append(&self.path)
                        .map_err(|e| format!("unable to open {}: {e}", self.path.display()))?,
                ),
            };
            let copy = file
                .try_clone()
                .map_err(|e| format!("unable to lock {}: {e}", self.path.display()))?;
            let turn = Flock::lock(copy, FlockArg::LockExclusive)
                .map_err(|(_, e)| format!("unable to lock {}: {e}", self.path.display()))?;
            let ours = turn
                .metadata()
                .map_err(|e| format!("unable to read the size of {}: {e}", self.path.display()))?;
            match fs::metadata(&self.path) {
                Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
                    self.size = ours.len();
                    self.turn = Some(turn);
                    return Ok(());
                }
                // Rotated (or removed) by another writer: the file at the
                // path is the one to write.
                _ => {
                    drop(turn);
                    self.file = None;
                }
            }
        }
        Err(format!(
            "{} was rotated {TRIES} times while waiting to write",
            self.path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{rotated, Limits, MAX_LINE};
    use super::*;
    use std::path::PathBuf;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pm-turns-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writers_taking_turns_share_one_bounded_chain() {
        let dir = scratch("two");
        let path = dir.join("a.log");
        let limits = Limits::new(MAX_LINE as u64, 50);
        // Two writers of one log, as two piped loggers of one Apache are:
        // each sees the other's lines and rotations.
        let mut a = LogFile::open_among_writers(&path, limits).unwrap();
        let mut b = LogFile::open_among_writers(&path, limits).unwrap();
        let line = |who: &str, n: usize| {
            let mut l = format!("{who} {n:06} ").into_bytes();
            l.resize(999, b'.');
            l.push(b'\n');
            l
        };
        for n in 0..600 {
            a.append(&line("a", n));
            b.append(&line("b", n));
        }
        let mut all = Vec::new();
        for k in (0..=50).rev() {
            let p = if k == 0 {
                path.clone()
            } else {
                rotated(&path, k)
            };
            let Ok(text) = fs::read(&p) else { continue };
            assert!(text.len() <= MAX_LINE, "{} has {}", p.display(), text.len());
            all.extend(text.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec));
        }
        assert_eq!(all.len(), 1200, "every line once");
        for n in 0..600 {
            assert_eq!(all[2 * n], line("a", n));
            assert_eq!(all[2 * n + 1], line("b", n));
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
