//! Private blocks of ports for instance ranges, below the kernel's
//! ephemeral ports (32768-60999), so that no client connection on the
//! machine holds one.
//!
//! A block is owned through an exclusive `flock` on a file of
//! `$TMPDIR/pm-test-ports/`, held as long as the [`PortBlock`] lives and
//! dropped by the kernel when the process ends, however it ends. Tests in
//! parallel threads, test binaries of other checkouts and benchmarks all
//! take their blocks there, so no two hold the same ports; a block whose
//! ports are not all free to bind (another program uses one) is skipped.
//! A test that needs more ports takes several consecutive blocks at once
//! ([`PortBlock::spanning`]).

use std::fs::{self, File, OpenOptions};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::fcntl::{Flock, FlockArg};

/// Ports in a block.
pub const BLOCK: u16 = 25;
/// The first port of the first block. Below it are the fixed ranges
/// (20000-25999) that tests written before this allocator took, which
/// other checkouts on the machine may still run.
const FIRST: u16 = 26000;
/// How many blocks fit below 32000.
const BLOCKS: usize = ((32000 - FIRST) / BLOCK) as usize;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// [`BLOCK`] consecutive ports (or a multiple), owned while this lives.
pub struct PortBlock {
    low: u16,
    len: u16,
    _locks: Vec<Flock<File>>,
}

impl PortBlock {
    /// Takes a free block.
    ///
    /// # Panics
    ///
    /// Every block is taken.
    pub fn new() -> PortBlock {
        PortBlock::spanning(1)
    }

    /// Takes `blocks` consecutive free blocks, as one block of `blocks` x
    /// [`BLOCK`] ports.
    ///
    /// # Panics
    ///
    /// No run of `blocks` free blocks is left.
    pub fn spanning(blocks: usize) -> PortBlock {
        assert!(
            (1..=BLOCKS).contains(&blocks),
            "{blocks} blocks of {BLOCKS}"
        );
        let dir = lock_dir();
        let len = blocks as u16 * BLOCK;
        // Processes start their search at different blocks, so that they
        // seldom try the same lock.
        let start = std::process::id() as usize * 7 + NEXT.fetch_add(1, Ordering::SeqCst);
        for i in 0..=BLOCKS - blocks {
            let first = (start + i) % (BLOCKS - blocks + 1);
            let low = FIRST + first as u16 * BLOCK;
            let locks: Option<Vec<_>> = (0..blocks as u16)
                .map(|b| try_lock(&dir.join(format!("{}.lock", low + b * BLOCK))))
                .collect();
            let Some(locks) = locks else {
                continue;
            };
            if (low..low + len).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
                return PortBlock {
                    low,
                    len,
                    _locks: locks,
                };
            }
        }
        panic!("no {blocks} free blocks of {BLOCK} ports in {FIRST}-32000");
    }

    /// The first port.
    pub fn low(&self) -> u16 {
        self.low
    }

    /// How many ports it holds.
    pub fn size(&self) -> u16 {
        self.len
    }

    /// Port number `i` of the block.
    pub fn port(&self, i: u16) -> u16 {
        assert!(i < self.len, "port {i} of a block of {}", self.len);
        self.low + i
    }

    /// The first `n` ports as a `--ports` range, `LOW-HIGH`.
    pub fn range(&self, n: u16) -> String {
        format!("{}-{}", self.low, self.port(n - 1))
    }

    /// True when `port` is one of the first `n` ports.
    pub fn holds(&self, n: u16, port: u64) -> bool {
        (u64::from(self.low)..u64::from(self.low + n)).contains(&port)
    }
}

fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("pm-test-ports");
    if fs::create_dir(&dir).is_ok() {
        // Any user's tests share the blocks.
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777));
    }
    dir
}

/// The lock on `path`, or `None` when another holds it.
fn try_lock(path: &PathBuf) -> Option<Flock<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .or_else(|_| File::open(path))
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()
}

/// A port on which nothing listens: bound on port 0, then released.
pub fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
