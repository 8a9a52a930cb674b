//! The I/O-free core: decisions and data, no sockets, no clock, no runtime.
//!
//! Everything here takes events (and, where time matters, `now` as a [`Time`]) and returns
//! values or decisions. The shells above ([`runtime`](crate::runtime), the transport, the
//! discovery backends) do the I/O and feed it; the deterministic simulation drives the same
//! code on virtual time.
//!
//! - [`model`]: the cluster's data: node entries, group members, names, load reports, specs,
//!   and the events that change them.
//! - [`wire`]: envelopes, frames and the batching outbox.
//! - [`balance`]: balancers that pick an instance of a group.
//! - [`placement`]: policies that pick nodes for replicas and replicas to retire.
//! - [`controller`]: the controller's decisions, a pure state machine.
//! - [`singleton`]: when a singleton's host must stop it.
//! - [`fence`]: when a node may start work another node asked of it (its lease).
//! - [`shard`]: keyed entities' shards: key to shard, the allocator, a host's steps.
//! - [`diff`]: the difference between two reads of a key range (the etcd follower's resync).
//! - [`health`]: when a group's caller ejects an instance.
//! - [`view`]: a node's membership view.
//! - [`terminated`]: the notice a watcher gets when a watched actor goes.

pub mod balance;
pub mod controller;
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) mod diff;
pub(crate) mod fence;
pub(crate) mod health;
pub(crate) mod model;
pub mod placement;
pub(crate) mod shard;
pub(crate) mod singleton;
pub(crate) mod status;
pub(crate) mod terminated;
pub(crate) mod view;
pub(crate) mod wire;

/// A point in time for the core: the time elapsed since an origin chosen by the caller (a
/// shell converts its `Instant`s against an origin `Instant`; the simulation starts at zero).
pub(crate) type Time = std::time::Duration;
