//! The answer of `GET /instances`, serialised one view at a time.
//!
//! A listing holds only the `Arc<Record>` pointers copied under the map
//! lock; each record's view is built, written and dropped in turn while
//! the answer is serialised, so a request never holds thousands of views
//! at once (at 5,000 instances that was several MiB per concurrent
//! request). The JSON is that of [`crate::protocol::InstanceList`].

use std::sync::Arc;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::heart::record::Record;

/// The instances of one `GET /instances`, in id order.
pub(crate) struct Listing(pub(super) Vec<Arc<Record>>);

/// The `instances` array of a [`Listing`].
struct Views<'a>(&'a [Arc<Record>]);

impl Serialize for Views<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|r| r.view()))
    }
}

impl Serialize for Listing {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut list = serializer.serialize_struct("InstanceList", 1)?;
        list.serialize_field("instances", &Views(&self.0))?;
        list.end()
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::InstanceList;

    use super::*;

    #[test]
    fn an_empty_listing_is_an_instance_list() {
        let json = serde_json::to_string(&Listing(Vec::new())).unwrap();
        let list: InstanceList = serde_json::from_str(&json).unwrap();
        assert!(list.instances.is_empty());
        assert_eq!(json, r#"{"instances":[]}"#);
    }
}
