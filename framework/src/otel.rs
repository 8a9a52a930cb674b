//! OpenTelemetry export of the framework's spans over OTLP/gRPC (feature `otlp`).
//!
//! The spans actormesh records (`actormesh.send`, `actormesh.deliver`, `actormesh.handle`,
//! and the gateway's `actormesh.gateway.request`) become OpenTelemetry spans through
//! `tracing-opentelemetry`, and are exported in batches by `opentelemetry-otlp` to any OTLP
//! receiver (an OpenTelemetry Collector, Jaeger, Tempo…). With the layer installed, the trace
//! position a message carries to another node is the OpenTelemetry span's own, and the
//! receiving node's handler span takes it as its remote parent: a remote ask is one trace
//! across both nodes.
//!
//! ```no_run
//! # fn main() -> Result<(), actormesh::Error> {
//! use tracing_subscriber::prelude::*;
//!
//! let export = actormesh::otel::OtlpExport::start("http://127.0.0.1:4317", "shop")?;
//! tracing_subscriber::registry()
//!     .with(export.layer())
//!     .with(tracing_subscriber::filter::LevelFilter::DEBUG)
//!     .init();
//! // ... run the node; before exiting:
//! export.shutdown()?;
//! # Ok(()) }
//! ```
//!
//! The exporter runs on a thread of its own with its own small runtime, so it works under
//! actix's single-threaded runtime and never blocks a node's thread on the network.

use std::thread::JoinHandle;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetryLayer;

use crate::Error;

/// An OTLP/gRPC span exporter and the tracer its [`layer`](OtlpExport::layer) records with.
pub struct OtlpExport {
    provider: SdkTracerProvider,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for OtlpExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExport").finish_non_exhaustive()
    }
}

impl OtlpExport {
    /// Exports to the OTLP/gRPC receiver at `endpoint` (`http://host:4317`), naming the
    /// service `service_name` (the `service.name` resource attribute).
    pub fn start(
        endpoint: impl Into<String>,
        service_name: impl Into<String>,
    ) -> Result<Self, Error> {
        let endpoint = endpoint.into();
        let service_name = service_name.into();
        let (built_tx, built_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("actormesh-otlp".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = built_tx.send(Err(format!("no runtime for the exporter: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let exporter = opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(endpoint.clone())
                        .build()
                        .map_err(|e| format!("OTLP exporter to {endpoint}: {e}"));
                    let ok = exporter.is_ok();
                    let _ = built_tx.send(exporter);
                    if ok {
                        // Drive the exporter's connection until the export is shut down.
                        let _ = stop_rx.await;
                    }
                });
            })
            .map_err(|e| Error::Start(format!("cannot start the OTLP exporter thread: {e}")))?;
        let exporter = built_rx
            .recv()
            .map_err(|_| Error::Start("the OTLP exporter thread ended".to_owned()))?
            .map_err(Error::Start)?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(service_name).build())
            .build();
        Ok(OtlpExport {
            provider,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The `tracing` layer that records spans for this export: add it to the subscriber.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("actormesh"))
    }

    /// Exports every finished span now (blocks until the receiver answered or the export
    /// timed out). Call it from a thread that is not a node's.
    pub fn flush(&self) -> Result<(), Error> {
        self.provider
            .force_flush()
            .map_err(|e| Error::Start(format!("OTLP flush: {e}")))
    }

    /// Exports what is left and stops the exporter.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<(), Error> {
        let Some(stop) = self.stop.take() else {
            return Ok(());
        };
        let flushed = self
            .provider
            .shutdown()
            .map_err(|e| Error::Start(format!("OTLP shutdown: {e}")));
        let _ = stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        flushed
    }
}

impl Drop for OtlpExport {
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}
