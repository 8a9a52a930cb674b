//! The wire format (no I/O): envelopes, frames and the batching send queue.

pub(crate) mod envelope;
#[doc(hidden)]
pub mod fuzz;
pub(crate) mod outbox;

/// The version of the wire protocol; nodes of different versions refuse each other.
pub(crate) const PROTOCOL_VERSION: u32 = 5;
