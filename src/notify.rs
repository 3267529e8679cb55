//! The systemd readiness protocol (`sd_notify`), without libsystemd.
//!
//! When the service manager set `NOTIFY_SOCKET` (a `Type=notify` unit), a
//! datagram such as `READY=1` or `STOPPING=1` is sent to that Unix socket;
//! a name starting with `@` is in the abstract namespace. Without the
//! variable nothing is sent: the heart runs the same everywhere.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1\nMAINPID=42`) to the service manager.
/// Returns false when there is no manager to tell or the send failed; a
/// service manager that does not listen is never fatal.
pub(crate) fn notify(state: &str) -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|path| notify_to(&path, state))
}

/// Sends `state` to the notification socket `path`.
fn notify_to(path: &std::ffi::OsStr, state: &str) -> bool {
    let Ok(socket) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        None => socket.send_to(state.as_bytes(), path),
    };
    sent.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_the_socket_named_by_notify_socket() {
        let dir = std::env::temp_dir().join(format!("pm-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        assert!(notify_to(path.as_os_str(), "READY=1"));
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(!notify_to(dir.join("nobody").as_os_str(), "READY=1"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
