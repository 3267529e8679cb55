//! The self-pipe: signals become bytes that an ordinary thread reads.
//!
//! Signal handlers can do almost nothing safely, so ours does one thing:
//! it `send`s the signal number as one byte into a socket pair, without
//! blocking, saving and restoring `errno` around the call. A thread blocked
//! in [`SignalPipe::recv`] does the real work. Both ends are close-on-exec,
//! so no child ever inherits them, and a caught signal reverts to its
//! default disposition across `exec`, so children start clean.
//!
//! A full socket buffer drops the byte, which is harmless: the reader is
//! already awake with bytes to read.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::error::{Error, Result};

/// Write end of the pipe, read by the handler; -1 until installed.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

/// The read end of the self-pipe.
#[derive(Debug)]
pub(crate) struct SignalPipe {
    read: UnixStream,
}

extern "C" fn on_signal(signo: libc::c_int) {
    let saved = Errno::last_raw();
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signo as u8;
        // SAFETY: `send` is async-signal-safe; the buffer is a live local
        // byte and the length is 1. A failure (full buffer) is ignored on
        // purpose: the reader is already awake.
        unsafe {
            libc::send(
                fd,
                std::ptr::addr_of!(byte).cast(),
                1,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            );
        }
    }
    Errno::set_raw(saved);
}

/// Catches `signals` and routes them into a new self-pipe. Call it once per
/// process, before spawning any child or thread.
///
/// # Errors
///
/// The socket pair cannot be created, the pipe is already installed, or
/// `sigaction` fails.
pub(crate) fn install(signals: &[Signal]) -> Result<SignalPipe> {
    let (read, write) = UnixStream::pair().map_err(|e| Error::Sys {
        op: "create signal pipe".into(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
    })?;
    write
        .set_nonblocking(true)
        .map_err(|e| Error::sys("make signal pipe non-blocking", errno_of(&e)))?;
    let fd = write.as_raw_fd();
    if WRITE_FD
        .compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return Err(Error::sys("install signal pipe twice", Errno::EBUSY));
    }
    // The write end must live as long as the process: the handler may run
    // at any moment until exit.
    std::mem::forget(write);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for &signal in signals {
        // SAFETY: `on_signal` is async-signal-safe: it reads an atomic and
        // calls `send`, touching nothing else, and preserves errno.
        unsafe { sigaction(signal, &action) }
            .map_err(|errno| Error::sys(format!("catch {signal}"), errno))?;
    }
    Ok(SignalPipe { read })
}

fn errno_of(err: &io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(0))
}

impl SignalPipe {
    /// Blocks until a signal arrives and returns it.
    ///
    /// # Errors
    ///
    /// Reading the pipe fails for a reason other than `EINTR`.
    pub(crate) fn recv(&self) -> io::Result<Signal> {
        let mut byte = [0u8; 1];
        loop {
            match (&self.read).read(&mut byte) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {
                    if let Ok(signal) = Signal::try_from(i32::from(byte[0])) {
                        return Ok(signal);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
