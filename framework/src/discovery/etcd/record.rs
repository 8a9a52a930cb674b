//! The value a node keeps under `nodes/{node}`: its [`NodeInfo`] and its state.

use serde::{Deserialize, Serialize};

use crate::core::model::NodeInfo;

/// A node's entry under `nodes/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct NodeRecord {
    #[serde(flatten)]
    pub(super) info: NodeInfo,
    pub(super) state: NodeState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum NodeState {
    Up,
    Leaving,
}
