//! The live part of an instance's view: its health (from the periodic
//! checks) and, where known, the memory and CPU time its application
//! uses: from its control group when it runs in one
//! (`Isolation::add_usage`), else summed from `/proc` over the
//! application's process group, in one pass over `/proc` for all the
//! instances of a view that need it ([`process::usage::of_groups`]).

use std::collections::HashMap;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::Node;
use crate::heart::record::Record;
use crate::process::usage;
use crate::protocol::{InstanceView, State};

/// What the views of one answer need from `/proc`: the usage of each
/// application process group that has no control group to ask.
pub(crate) struct ProcUsage(HashMap<i32, usage::Usage>);

/// The instances of one `GET /instances`, serialised one view at a time
/// (each built, written and dropped in turn), so that an answer never
/// holds thousands of views at once. The JSON is that of
/// [`crate::protocol::InstanceList`].
pub(crate) struct Listing<'a> {
    node: &'a Node,
    records: Vec<Arc<Record>>,
    found: ProcUsage,
}

impl Serialize for Listing<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Views<'b>(&'b Listing<'b>);
        impl Serialize for Views<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let listing = self.0;
                serializer.collect_seq(
                    listing
                        .records
                        .iter()
                        .map(|rec| listing.node.live_view(rec, &listing.found)),
                )
            }
        }
        let mut list = serializer.serialize_struct("InstanceList", 1)?;
        list.serialize_field("instances", &Views(self))?;
        list.end()
    }
}

impl Node {
    /// A listing of `records` with their health and usage.
    pub(super) fn listing(&self, records: Vec<Arc<Record>>) -> Listing<'_> {
        let found = self.proc_usage(&records);
        Listing {
            node: self,
            records,
            found,
        }
    }

    /// One pass over `/proc` for the applications of `records` (used
    /// for those that run in no control group of theirs).
    fn proc_usage(&self, records: &[Arc<Record>]) -> ProcUsage {
        let groups: Vec<i32> = records
            .iter()
            .filter(|rec| matches!(rec.state, State::Running | State::Starting))
            .filter_map(|rec| rec.app.map(|app| app.pid))
            .collect();
        ProcUsage(usage::of_groups(&groups))
    }

    /// The view of `rec` with its health and usage.
    fn live_view(&self, rec: &Record, found: &ProcUsage) -> InstanceView {
        let mut view = rec.view();
        view.health = self.checks.health(&rec.instance_id);
        let mut view = self.isolation.add_usage(view);
        if view.memory_bytes.is_none() {
            if let Some(u) = view.app_pid.and_then(|pid| found.0.get(&pid)) {
                view.memory_bytes = Some(u.memory_bytes);
                view.cpu_seconds = Some(u.cpu_seconds);
            }
        }
        view
    }

    /// The views of `records` with their health and usage.
    pub(super) fn live_views(&self, records: &[Arc<Record>]) -> Vec<InstanceView> {
        let found = self.proc_usage(records);
        records
            .iter()
            .map(|rec| self.live_view(rec, &found))
            .collect()
    }
}
