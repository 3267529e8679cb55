//! The forward channel, supervisor side: a request to forward a signal to
//! the command (`pm-supervisor(8)`, FORWARD CHANNEL), made by queueing
//! the supervisor `signal::FORWARD_SIGNAL` with the signal's number as
//! its value, reaches the `signal-forwarder` thread as
//! `Caught::Forward(N)`. Only the signals of `protocol::ForwardSignal`
//! are passed on, to the command's process group, and only while the
//! command is unreaped (`process::forward::Slot`). A forwarded signal is
//! not a stop request: if the command dies of it, that is reported like
//! any exit nobody asked for (`128 + N`).

use nix::sys::signal::Signal;

use super::log::Log;
use crate::process::{self, forward::Slot};
use crate::protocol::ForwardSignal;

/// Forwards signal `number` to the command's group, if it may be
/// forwarded and the command still runs; logs what it did.
pub(super) fn forward_request(number: i32, slot: &Slot, log: &Log) {
    let allowed = ForwardSignal::from_number(number)
        .and_then(|s| Signal::try_from(s.number()).ok().map(|signal| (s, signal)));
    let Some((named, signal)) = allowed else {
        log.warn(format_args!(
            "Ignored a request to forward signal {number}: not one that may be forwarded"
        ));
        return;
    };
    let sent = slot.with_child(|pid| {
        log.info(format_args!(
            "Forwarding {named} to process group {pid} on request"
        ));
        if let Err(errno) = process::signal_group(pid, signal) {
            log.warn(format_args!(
                "Unable to send {named} to process group {pid}: {}",
                errno.desc()
            ));
        }
    });
    if sent.is_none() {
        log.info(format_args!(
            "Did not forward {named}: the command has ended"
        ));
    }
}
