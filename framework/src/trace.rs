//! Trace context carried in envelopes, so a remote handler's span is a child of its caller's.
//!
//! A [`TraceContext`] is a trace id shared by every hop of one causal chain (128 bits, as in
//! W3C Trace Context) and the span id of the hop that sent the message. The framework only
//! creates one when the `actormesh` spans are enabled, so a node without a tracing subscriber
//! pays one byte per envelope for it.
//!
//! Code that receives work from outside the cluster (an HTTP gateway, a queue consumer)
//! continues the caller's trace with [`TraceContext::from_traceparent`] and [`in_trace`]:
//! every send made while the wrapped future runs is a child of that position, and the trace
//! id travels to the handlers on other nodes. When it also has a span of its own for the
//! work, [`continue_trace`] gives that span its place (and, with OpenTelemetry export on,
//! makes the caller the exported span's parent).
//!
//! ```
//! use actormesh::trace::{in_trace, TraceContext};
//!
//! let parent = TraceContext::from_traceparent(
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
//! )
//! .expect("a valid traceparent");
//! assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! let here = parent.child();
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! rt.block_on(in_trace(here, async move {
//!     // Sends made here (ActorRef::ask, GroupRef::ask, EntityRef::tell...) carry `here`.
//!     assert_eq!(actormesh::trace::current(), Some(here));
//! }));
//! assert_eq!(actormesh::trace::current(), None);
//! ```

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bincode::{Decode, Encode};

use crate::id::random_u64;

/// The trace position of a message: which trace it belongs to and which span sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct TraceContext {
    /// Shared by every span of one causal chain (never 0).
    pub trace_id: u128,
    /// The span that sent the message (the parent of the receiving span; never 0).
    pub span_id: u64,
}

impl TraceContext {
    /// The root of a new trace: a random trace id and span id.
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: random_trace_id(),
            span_id: random_span_id(),
        }
    }

    /// A new span in the same trace, whose parent is `self`.
    pub fn child(&self) -> Self {
        TraceContext {
            trace_id: self.trace_id,
            span_id: random_span_id(),
        }
    }

    /// Reads a W3C `traceparent` header value (`00-{32 hex trace id}-{16 hex span id}-{2 hex
    /// flags}`). `None` when it is malformed or names the all-zero trace or span, as the W3C
    /// recommendation says (the caller then starts a new trace). Versions above `00` are read
    /// by their first four fields, as the recommendation asks.
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        let is_hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !is_hex(version, 2) || version == "ff" || !is_hex(trace, 32) || !is_hex(span, 16) {
            return None;
        }
        if !is_hex(flags, 2) || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext { trace_id, span_id })
    }

    /// This position as a W3C `traceparent` header value (version `00`, sampled).
    pub fn to_traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }

    /// The trace id as 32 lowercase hex digits, as it appears in the `trace_id` field of the
    /// framework's spans and in a `traceparent`.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 lowercase hex digits, as in the `span_id` fields of the spans.
    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

fn random_span_id() -> u64 {
    loop {
        let id = random_u64();
        if id != 0 {
            return id;
        }
    }
}

fn random_trace_id() -> u128 {
    (u128::from(random_u64()) << 64) | u128::from(random_span_id())
}

thread_local! {
    static CURRENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// The trace position of the handler or [`in_trace`] future running on this thread, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.with(Cell::get)
}

/// Runs `future` with `context` as the current trace position during each of its polls: the
/// framework's sends made inside it continue that trace (their spans are children of
/// `context.span_id`).
pub fn in_trace<F: Future>(context: TraceContext, future: F) -> InTrace<F> {
    InTrace {
        context,
        future: Box::pin(future),
    }
}

/// The future returned by [`in_trace`].
#[derive(Debug)]
pub struct InTrace<F> {
    context: TraceContext,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for InTrace<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let context = self.context;
        with_current(Some(context), || self.future.as_mut().poll(cx))
    }
}

/// Places `span` in the trace of `parent` (a position received from outside, e.g. a
/// `traceparent` header), or at the root of a new trace when there is none, and returns the
/// position to run its work in (with [`in_trace`]).
///
/// Records the ids in the span's `trace_id`, `span_id` and `parent_span_id` fields (lowercase
/// hex) when it declares them. With OpenTelemetry export on (feature `otlp`, the layer of
/// `otel::OtlpExport` installed), `parent` becomes the exported span's remote parent and the
/// position returned is the exported span's own, so the caller, this span and the handlers
/// on other nodes are one exported trace. A disabled span gets no fields; the position is
/// returned all the same.
pub fn continue_trace(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
    #[allow(unused_mut)]
    let mut here = parent.map_or_else(TraceContext::new_root, |p| p.child());
    if span.is_disabled() {
        return here;
    }
    if let Some(parent) = parent {
        span.record(
            "parent_span_id",
            tracing::field::display(format_args!("{:016x}", parent.span_id)),
        );
        #[cfg(feature = "otlp")]
        otel::set_remote_parent(span, &parent);
    }
    #[cfg(feature = "otlp")]
    if let Some(otel) = otel::position(span) {
        here = otel;
    }
    record(span, &here);
    here
}

/// A new span position: a child of the running handler's trace, or the root of a new trace.
pub(crate) fn child_of_current() -> TraceContext {
    current().map_or_else(TraceContext::new_root, |c| c.child())
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

/// Records `ctx` in a span's `trace_id` and `span_id` fields, in the hex form of W3C ids.
pub(crate) fn record(span: &tracing::Span, ctx: &TraceContext) {
    span.record(
        "trace_id",
        tracing::field::display(format_args!("{:032x}", ctx.trace_id)),
    );
    span.record(
        "span_id",
        tracing::field::display(format_args!("{:016x}", ctx.span_id)),
    );
}

/// The OpenTelemetry side of trace positions (feature `otlp`): here rather than in `otel`,
/// which depends on this module, not the other way round.
#[cfg(feature = "otlp")]
pub(crate) mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceContext;

    /// The OpenTelemetry position of `span`, when an OpenTelemetry layer records it.
    pub(crate) fn position(span: &tracing::Span) -> Option<TraceContext> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| TraceContext {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        })
    }

    /// Makes `parent` (from another node) the OpenTelemetry parent of `span`.
    pub(crate) fn set_remote_parent(span: &tracing::Span, parent: &TraceContext) {
        let sc = SpanContext::new(
            TraceId::from_bytes(parent.trace_id.to_be_bytes()),
            SpanId::from_bytes(parent.span_id.to_be_bytes()),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
    }
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

    #[test]
    fn traceparent_round_trips_and_rejects_malformed_values() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::from_traceparent(text).unwrap();
        assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ctx.span_id, 0x00f067aa0ba902b7);
        assert_eq!(ctx.to_traceparent(), text);
        // A future version with more fields is read by its first four.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(TraceContext::from_traceparent(future), Some(ctx));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn roots_are_random_and_never_zero() {
        let a = TraceContext::new_root();
        let b = TraceContext::new_root();
        assert_ne!(a.trace_id, b.trace_id);
        assert!(a.trace_id != 0 && a.span_id != 0);
        assert_eq!(a.child().trace_id, a.trace_id);
    }
}
