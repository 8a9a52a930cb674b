//! OpenTelemetry export against a real OTLP/gRPC receiver (a tonic server of the OTLP trace
//! service, from `opentelemetry-proto`): a remote ask from node a to node b arrives as one
//! trace, b's handler span a child of a's send span through the trace context that crossed
//! the link; and work that came from outside with a `traceparent` (`trace::continue_trace`)
//! is exported in the caller's trace. Its own test binary: it installs a subscriber.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actormesh::otel::OtlpExport;
use actormesh::trace::{continue_trace, in_trace, TraceContext};
use common::{counter_seen_from, Get};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tracing::Instrument;
use tracing_subscriber::prelude::*;

/// What the receiver got: (service name, span).
type Received = Arc<Mutex<Vec<(String, Span)>>>;

#[derive(Clone)]
struct Receiver(Received);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    got.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts the receiver on a thread of its own; returns its address.
fn start_receiver(received: Received) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Receiver(received)))
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the receiver listens")
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

#[actix::test]
async fn a_remote_ask_is_one_trace_across_both_nodes() {
    let received: Received = Arc::default();
    let addr = start_receiver(received.clone());
    let export = OtlpExport::start(format!("http://{addr}"), "otlp-test").expect("exporter");
    let subscriber = tracing_subscriber::registry()
        .with(export.layer())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    let guard = tracing::subscriber::set_default(subscriber);

    let (_discovery, a, b) = common::pair().await;
    let counter = counter_seen_from(&b, &a, "otlp.counter").await;
    assert!(!counter.is_local());
    assert_eq!(counter.ask(Get).await.unwrap(), 0);

    // Work from outside: a span continuing an incoming traceparent, an ask inside it.
    let incoming =
        TraceContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap();
    let request = tracing::info_span!(
        "outside.request",
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    let here = continue_trace(&request, Some(incoming));
    assert_eq!(here.trace_id, incoming.trace_id, "the caller's trace");
    let answer = in_trace(here, counter.ask(Get)).instrument(request).await;
    assert_eq!(answer.unwrap(), 0);
    a.shutdown().await;
    b.shutdown().await;
    drop(guard);

    // Export what was recorded (blocking: off the node's thread), then look.
    let export = Arc::new(export);
    let flushing = export.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .unwrap()
        .expect("the spans are exported");
    let spans = received.lock().unwrap().clone();
    assert!(
        spans.iter().all(|(service, _)| service == "otlp-test"),
        "service name"
    );
    let send = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| {
            s.name == "actormesh.send"
                && attr(s, "message").as_deref() == Some("test.Get")
                && attr(s, "kind").as_deref() == Some("ask")
        })
        .unwrap_or_else(|| {
            panic!(
                "a's send span was exported: {:?}",
                spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(attr(send, "target_node").as_deref(), Some("b"));
    let handle = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "actormesh.handle" && attr(s, "message").as_deref() == Some("test.Get"))
        .expect("b's handler span was exported");
    assert_eq!(
        handle.trace_id, send.trace_id,
        "the handler on b is in the trace of the send on a"
    );
    assert_eq!(
        handle.parent_span_id, send.span_id,
        "the handler's parent is the send, through the trace context on the wire"
    );
    // The ids the framework records as span fields are the exported ones.
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(attr(send, "trace_id"), Some(hex(&send.trace_id)));
    assert_eq!(attr(send, "span_id"), Some(hex(&send.span_id)));
    println!(
        "[otlp] {} spans received; trace {} spans a's send {} and b's handler {}",
        spans.len(),
        hex(&send.trace_id),
        hex(&send.span_id),
        hex(&handle.span_id)
    );

    // The outside request: exported in the caller's trace, the caller its parent, at the
    // position `continue_trace` returned; b's handler of that ask in the same trace.
    let request = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "outside.request")
        .expect("the request span was exported");
    assert_eq!(request.trace_id, incoming.trace_id.to_be_bytes());
    assert_eq!(request.parent_span_id, incoming.span_id.to_be_bytes());
    assert_eq!(request.span_id, here.span_id.to_be_bytes());
    assert_eq!(attr(request, "trace_id"), Some(incoming.trace_id_hex()));
    assert!(
        spans
            .iter()
            .any(|(_, s)| s.name == "actormesh.handle"
                && s.trace_id == incoming.trace_id.to_be_bytes()),
        "b's handler of the request's ask is in the caller's trace"
    );
    Arc::try_unwrap(export)
        .expect("one owner left")
        .shutdown()
        .expect("the exporter stops");
}
