//! What the heart reports to the optional controller (`--pacemaker URL`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::State;

/// What the heart tells the pacemaker about itself (register and update).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's name (its host name unless configured).
    pub node: String,
    /// The heart's API address.
    pub address: String,
    /// Runtimes with their versions.
    pub runtimes: BTreeMap<String, Vec<String>>,
    /// Instance id to state.
    pub instances: BTreeMap<String, State>,
}

/// Pacemaker paths, relative to its base URL.
pub mod paths {
    /// Node register.
    pub const REGISTER: &str = "/node/register";
    /// Node update, on every state change.
    pub const UPDATE: &str = "/node/update";
    /// Node shutdown, when the heart stops.
    pub const SHUTDOWN: &str = "/node/shutdown";
}
