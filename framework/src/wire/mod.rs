//! The wire format (no I/O): envelopes, frames and the batching send queue.

pub(crate) mod envelope;
pub(crate) mod outbox;
