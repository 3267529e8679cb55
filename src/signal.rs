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
//!
//! The forward channel (used by `pm-supervisor`): a process that may
//! signal the supervisor queues it the real-time signal
//! [`FORWARD_SIGNAL`] with `sigqueue(3)`, carrying as its value the
//! number of the signal to forward to the application
//! ([`request_forward`]). The supervisor catches it with an `SA_SIGINFO`
//! handler ([`catch_forward_requests`]) that writes the value, tagged with
//! [`FORWARD_TAG`], into the same self-pipe; [`SignalPipe::recv_caught`]
//! returns it as [`Caught::Forward`]. Only a queued signal (`SI_QUEUE`)
//! with a value from 1 to 31 is passed on; what may be forwarded is the
//! reader's policy. A forward byte lost to a full buffer is lost (the
//! request is answered, not retried): the buffer holds thousands.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::error::{Error, Result};

/// The real-time signal that carries a forward request: within the
/// real-time range of both glibc (34-64) and musl (35-64).
pub(crate) const FORWARD_SIGNAL: libc::c_int = 50;

/// The bit that marks a byte of the pipe as a forward request; the low
/// bits are the signal to forward (1-31). Plain signals are written as
/// their number (below 65), so the two never meet.
const FORWARD_TAG: u8 = 0x80;

/// What the self-pipe carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caught {
    /// A signal sent to this process.
    Signal(Signal),
    /// A forward request: the number of the signal to forward (1-31).
    Forward(i32),
}

/// Write end of the pipe, read by the handler; -1 until installed.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

/// The read end of the self-pipe.
#[derive(Debug)]
pub(crate) struct SignalPipe {
    read: UnixStream,
}

extern "C" fn on_signal(signo: libc::c_int) {
    let saved = Errno::last_raw();
    send_byte(signo as u8);
    Errno::set_raw(saved);
}

/// Sends `byte` into the self-pipe, if installed. Async-signal-safe.
fn send_byte(byte: u8) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
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
}

extern "C" fn on_forward(
    _signo: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    let saved = Errno::last_raw();
    if !info.is_null() {
        // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo;
        // `si_value` is meaningful for SI_QUEUE, checked first.
        let value = unsafe {
            ((*info).si_code == libc::SI_QUEUE).then(|| (*info).si_value().sival_ptr as usize)
        };
        if let Some(value) = value.filter(|v| (1..=31).contains(v)) {
            send_byte(FORWARD_TAG | value as u8);
        }
    }
    Errno::set_raw(saved);
}

/// An `SA_SIGINFO` handler.
type InfoHandler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Catches [`FORWARD_SIGNAL`] into the self-pipe as forward requests.
/// Call it after [`install`], before spawning any child or thread.
///
/// # Errors
///
/// `sigaction` fails.
pub(crate) fn catch_forward_requests() -> Result<()> {
    // SAFETY: a zeroed sigaction is a valid starting point (empty mask,
    // no flags); every field that matters is set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    let handler: InfoHandler = on_forward;
    action.sa_sigaction = handler as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `action.sa_mask` is a valid sigset to empty; `on_forward`
    // is async-signal-safe (an atomic load and `send`, errno preserved);
    // the old action is not asked for.
    let rc = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(FORWARD_SIGNAL, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(Error::sys("catch the forward signal", Errno::last()));
    }
    Ok(())
}

/// Queues [`FORWARD_SIGNAL`] to `pid`, carrying `signal` (the number of
/// the signal it is to forward). The caller has verified that `pid` is
/// the process it means, and that it catches the signal
/// ([`catches_forward_requests`]): uncaught, a real-time signal ends it.
///
/// # Errors
///
/// `sigqueue` fails (no such process, not permitted).
pub(crate) fn request_forward(pid: i32, signal: i32) -> Result<()> {
    let value = libc::sigval {
        sival_ptr: signal as usize as *mut libc::c_void,
    };
    // SAFETY: `sigqueue` takes plain values; a pid that is gone is an
    // error return, never undefined behaviour.
    let rc = unsafe { libc::sigqueue(pid, FORWARD_SIGNAL, value) };
    if rc != 0 {
        return Err(Error::sys(
            format!("queue signal {FORWARD_SIGNAL} to process {pid}"),
            Errno::last(),
        ));
    }
    Ok(())
}

/// True when process `pid` catches [`FORWARD_SIGNAL`] (`SigCgt` of
/// `/proc/PID/status`): a supervisor that does not (one older than the
/// forward channel) would die of it.
pub(crate) fn catches_forward_requests(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (FORWARD_SIGNAL - 1)) != 0)
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

/// Ignores `signals` (`SIG_IGN`) for the rest of the process's life.
///
/// # Errors
///
/// `sigaction` fails.
pub(crate) fn ignore(signals: &[Signal]) -> Result<()> {
    let action = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for &signal in signals {
        // SAFETY: SIG_IGN runs no code of ours in a signal context.
        unsafe { sigaction(signal, &action) }
            .map_err(|errno| Error::sys(format!("ignore {signal}"), errno))?;
    }
    Ok(())
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
        loop {
            if let Caught::Signal(signal) = self.recv_caught()? {
                return Ok(signal);
            }
        }
    }

    /// Blocks until a signal or a forward request arrives and returns it.
    ///
    /// # Errors
    ///
    /// Reading the pipe fails for a reason other than `EINTR`.
    pub(crate) fn recv_caught(&self) -> io::Result<Caught> {
        let mut byte = [0u8; 1];
        loop {
            match (&self.read).read(&mut byte) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) if byte[0] & FORWARD_TAG != 0 => {
                    return Ok(Caught::Forward(i32::from(byte[0] & !FORWARD_TAG)));
                }
                Ok(_) => {
                    if let Ok(signal) = Signal::try_from(i32::from(byte[0])) {
                        return Ok(Caught::Signal(signal));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
