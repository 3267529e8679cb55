//! The live part of an instance's view: its health (from the periodic
//! checks) and, where known, the memory and CPU time its application
//! uses. Usage comes from the application's process group, summed from
//! `/proc` in one pass for all the instances of a view
//! ([`process::usage::of_groups`]); an instance run in a control group of
//! its own can answer from that group instead.

use std::collections::HashMap;
use std::sync::Arc;

use super::Node;
use crate::heart::record::Record;
use crate::process::usage::{self, Usage};
use crate::protocol::{InstanceView, State};

impl Node {
    /// The usage of the application of each running record in `records`,
    /// by its process group (its `app_pid`).
    pub(super) fn usage_of(&self, records: &[Arc<Record>]) -> HashMap<i32, Usage> {
        let groups: Vec<i32> = records
            .iter()
            .filter(|r| r.state == State::Running)
            .filter_map(|r| r.app.map(|a| a.pid))
            .collect();
        usage::of_groups(&groups)
    }

    /// The view of `rec` with its health and its usage (from `usage`).
    pub(super) fn live_view(&self, rec: &Record, usage: &HashMap<i32, Usage>) -> InstanceView {
        let mut view = rec.view();
        view.health = self.checks.health(&rec.instance_id);
        if let Some(found) = view.app_pid.and_then(|pid| usage.get(&pid)) {
            view.memory_bytes = Some(found.memory_bytes);
            view.cpu_seconds = Some(found.cpu_seconds);
        }
        view
    }
}
