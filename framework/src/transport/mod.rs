//! The node-to-node transport: tonic (HTTP/2), one long-lived bidirectional stream per link.
//!
//! Node A opens a link to node B when it first needs one: a gRPC bidirectional stream on
//! `/actormesh.Mesh/Link`. The request direction carries A's tells, asks, spawns and watches
//! to B; the response direction carries B's replies and `Terminated` notices back to A. B opens
//! its own link to A for its own requests. Each gRPC message is a frame of batched envelopes
//! (see `wire`). The handshake is the stream's metadata: protocol version, cluster name, the
//! caller's node id and the node id it expects to reach; a mismatch is refused with
//! `FAILED_PRECONDITION` and a message naming both sides' values.

pub(crate) mod codec;
pub(crate) mod link;
pub(crate) mod listener;
pub(crate) mod server;
pub(crate) mod tls;

/// The gRPC path of the link stream.
pub(crate) const LINK_PATH: &str = "/actormesh.Mesh/Link";
/// Metadata keys of the handshake.
pub(crate) const MD_PROTOCOL: &str = "actormesh-protocol";
pub(crate) const MD_CLUSTER: &str = "actormesh-cluster-bin";
pub(crate) const MD_FROM: &str = "actormesh-from-bin";
pub(crate) const MD_TO: &str = "actormesh-to-bin";
/// The prefix of every handshake refusal message.
pub(crate) const REFUSED: &str = "actormesh handshake refused: ";
/// HTTP/2 flow-control windows: large enough that a busy link is never window-bound.
pub(crate) const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
pub(crate) const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
