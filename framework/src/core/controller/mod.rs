//! The controller: keeps every group at its desired state ([`GroupSpec`](crate::GroupSpec)).
//!
//! Every node started with [`NodeBuilder::controller`](crate::NodeBuilder::controller)
//! campaigns for the cluster's leadership ([`Discovery::campaign`](crate::Discovery::campaign)); the leader follows the
//! specs, the groups' members and the nodes, and closes the difference: it asks nodes to
//! start replicas where the spec's [`placement`](crate::placement) policy says, and retires
//! the excess (a retired replica leaves its group first, then stops after the messages already
//! queued for it). When a node dies, its replicas leave their groups with it and the leader
//! starts replacements on the survivors. When the leader dies, another node takes over.
//!
//! Every order carries the leader's fencing token, and a node checks it against the current
//! leader before acting: a deposed leader cannot act.

pub(crate) mod autoscale;
