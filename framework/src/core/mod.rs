//! The I/O-free core: pure logic with no tokio, no network, no clock and no storage types,
//! which the runtime parts (discovery backends, the node) call into, unit-tested on its own.

// Only the etcd follower uses it so far.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) mod diff;
