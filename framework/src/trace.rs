//! Trace context carried in envelopes, so a remote handler's span is a child of its caller's.
//!
//! A [`TraceContext`] is a trace id shared by every hop of one causal chain and the span id of
//! the hop that sent the message. It is only created when the `actormesh` spans are enabled, so
//! a node without a tracing subscriber pays one byte per envelope for it.

use std::cell::Cell;

use bincode::{Decode, Encode};

use crate::id::random_u64;

/// The trace position of a message: which trace it belongs to and which span sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub(crate) struct TraceContext {
    /// Shared by every span of one causal chain.
    pub(crate) trace_id: u64,
    /// The span that sent the message (the parent of the receiving handler's span).
    pub(crate) span_id: u64,
}

thread_local! {
    static CURRENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// The context of the handler running on this thread, if any.
pub(crate) fn current() -> Option<TraceContext> {
    CURRENT.with(Cell::get)
}

/// A new span position: a child of the running handler's trace, or the root of a new trace.
pub(crate) fn child_of_current() -> TraceContext {
    let trace_id = current().map_or_else(random_u64, |c| c.trace_id);
    TraceContext {
        trace_id,
        span_id: random_u64(),
    }
}

/// Runs `f` with `ctx` as the current handler context, restoring the previous one after.
pub(crate) fn with_current<R>(ctx: Option<TraceContext>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<TraceContext>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(ctx)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_inherits_trace_id() {
        let parent = TraceContext {
            trace_id: 7,
            span_id: 8,
        };
        let child = with_current(Some(parent), child_of_current);
        assert_eq!(child.trace_id, 7);
        assert_ne!(child.span_id, 8);
        assert_eq!(current(), None, "context restored after the handler");
    }
}
