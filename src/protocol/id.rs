//! The instance id: `[A-Za-z0-9-]{1,64}`, validated once at the edge.
//!
//! An id names a directory, a log file, a control file and a URL segment,
//! so it is parsed into an [`InstanceId`] wherever it enters (a request
//! path, a JSON body, a control file, a command-line argument) and code
//! behind that edge takes the type and never checks again. The one
//! message for a bad id is [`InvalidId`]'s.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest instance id.
pub const INSTANCE_ID_MAX: usize = 64;

/// A valid instance id: safe as a file name and a URL segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

/// A string that is not a valid instance id; its `Display` is the one
/// message for that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId(pub String);

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid instance id {:?}: expected 1 to {INSTANCE_ID_MAX} of A-Z, a-z, 0-9 and -",
            self.0
        )
    }
}

impl std::error::Error for InvalidId {}

impl InstanceId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InstanceId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<InstanceId, InvalidId> {
        InstanceId::try_from(s.to_string())
    }
}

impl TryFrom<String> for InstanceId {
    type Error = InvalidId;

    fn try_from(s: String) -> Result<InstanceId, InvalidId> {
        let valid = !s.is_empty()
            && s.len() <= INSTANCE_ID_MAX
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if valid {
            Ok(InstanceId(s))
        } else {
            Err(InvalidId(s))
        }
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> String {
        id.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for InstanceId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for InstanceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for InstanceId {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

impl std::borrow::Borrow<str> for InstanceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for InstanceId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for InstanceId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_safe_path_segments() {
        assert!("web-1".parse::<InstanceId>().is_ok());
        assert!("a".repeat(64).parse::<InstanceId>().is_ok());
        for bad in ["", "a/b", "..", "a.b", "a b", &"a".repeat(65), "é"] {
            assert!(bad.parse::<InstanceId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn json_refuses_a_bad_id_with_the_one_message() {
        let err = serde_json::from_str::<InstanceId>(r#""../x""#).unwrap_err();
        assert!(
            err.to_string().contains("invalid instance id \"../x\""),
            "{err}"
        );
        let id: InstanceId = serde_json::from_str(r#""web-1""#).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""web-1""#);
    }
}
