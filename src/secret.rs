//! Secrets: random keys and tokens, and comparing them.
//!
//! Keys come from `/dev/urandom` as lowercase hex (safe in a URL path
//! segment and a file); a presented secret is compared in time that
//! depends only on the lengths, so a wrong guess learns nothing from how
//! long the refusal took.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// `bytes` random bytes from `/dev/urandom`, in hex.
///
/// # Errors
///
/// `/dev/urandom` cannot be read.
pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let path = Path::new("/dev/urandom");
    let mut buf = vec![0u8; bytes];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("read", path, e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_of_the_asked_length_and_differ() {
        let a = random_hex(16).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(16).unwrap());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abc", b"abd"));
        assert!(!secret_eq(b"abc", b"ab"));
    }
}
