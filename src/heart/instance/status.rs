//! The live part of an instance's view: its health (from the periodic
//! checks) and, where known, the memory and CPU time its application
//! uses: from its control group when it runs in one
//! (`Isolation::add_usage`), else summed from `/proc` over the
//! application's process group, in one pass over `/proc` for all the
//! instances of a view that need it ([`process::usage::of_groups`]).

use std::sync::Arc;

use super::Node;
use crate::heart::record::Record;
use crate::process::usage;
use crate::protocol::InstanceView;

impl Node {
    /// The views of `records` with their health and usage.
    pub(super) fn live_views(&self, records: &[Arc<Record>]) -> Vec<InstanceView> {
        let mut views: Vec<InstanceView> = records
            .iter()
            .map(|rec| {
                let mut view = rec.view();
                view.health = self.checks.health(&rec.instance_id);
                self.isolation.add_usage(view)
            })
            .collect();
        let groups: Vec<i32> = views
            .iter()
            .filter(|v| v.memory_bytes.is_none())
            .filter_map(|v| v.app_pid)
            .collect();
        let found = usage::of_groups(&groups);
        for view in &mut views {
            if view.memory_bytes.is_some() {
                continue;
            }
            if let Some(u) = view.app_pid.and_then(|pid| found.get(&pid)) {
                view.memory_bytes = Some(u.memory_bytes);
                view.cpu_seconds = Some(u.cpu_seconds);
            }
        }
        views
    }
}
