//! A W3C `traceparent` sent to the gateway continues into the actors' spans on other nodes.
//!
//! Alone in its test binary: it captures spans with a thread-local subscriber, and tracing
//! caches whether a callsite is enabled process-wide, so other tests running at the same time
//! without a subscriber would hide its spans.

mod common;

use std::time::Duration;

use actormesh_gateway::Gateway;
use common::*;
use http::{Method, StatusCode};

// ---- tracing ---------------------------------------------------------------------------------

mod capture {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing_subscriber::layer::Context;
    use tracing_subscriber::Layer;

    pub(crate) type Spans = Arc<Mutex<Vec<(String, HashMap<String, String>)>>>;

    struct Fields<'a>(&'a mut HashMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
    }

    pub(crate) struct Capture {
        pub(crate) spans: Spans,
        pub(crate) index: Mutex<HashMap<Id, usize>>,
    }

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
            let mut fields = HashMap::new();
            attrs.record(&mut Fields(&mut fields));
            let mut spans = self.spans.lock().unwrap();
            spans.push((attrs.metadata().name().to_owned(), fields));
            self.index
                .lock()
                .unwrap()
                .insert(id.clone(), spans.len() - 1);
        }
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut fields = HashMap::new();
            event.record(&mut Fields(&mut fields));
            let name = format!("event:{}", event.metadata().target());
            self.spans.lock().unwrap().push((name, fields));
        }
        fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
            if let Some(&i) = self.index.lock().unwrap().get(id) {
                values.record(&mut Fields(&mut self.spans.lock().unwrap()[i].1));
            }
        }
    }
}

#[actix::test]
async fn a_traceparent_continues_into_the_actor_spans_on_other_nodes() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = capture::Spans::default();
    let subscriber = tracing_subscriber::registry().with(capture::Capture {
        spans: spans.clone(),
        index: std::sync::Mutex::new(Default::default()),
    });
    let _guard = tracing::subscriber::set_default(subscriber);
    let cluster = Cluster::start().await;
    let gateway = Gateway::builder(cluster.a.clone())
        .route(greet_route("/hello/{name}", "greeters"))
        .route(read_tally_route("/tallies/{id}"))
        .build()
        .unwrap();
    let gw = gateway.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let http = Http::new(gw.local_addr());

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace}-00f067aa0ba902b7-01");
    for path in ["/hello/traced", "/tallies/traced"] {
        let answer = http
            .send(Method::GET, path, &[("traceparent", parent.as_str())], "")
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.header("x-trace-id"), trace);
        assert!(answer.header("traceresponse").contains(trace));
    }
    let spans = spans.lock().unwrap().clone();
    let of = |name: &str, message: &str| {
        spans
            .iter()
            .filter(|(n, f)| n == name && f.get("message").map(String::as_str) == Some(message))
            .filter(|(_, f)| f.get("trace_id").map(String::as_str) == Some(trace))
            .count()
    };
    let request = spans
        .iter()
        .find(|(n, f)| {
            n == "actormesh.gateway.request" && f.get("trace_id").map(String::as_str) == Some(trace)
        })
        .expect("the gateway's request span");
    assert_eq!(request.1["parent_span_id"], "00f067aa0ba902b7");
    assert!(
        of("actormesh.send", "gw.Greet") >= 1,
        "the send joined the trace"
    );
    assert_eq!(
        of("actormesh.handle", "gw.Greet"),
        1,
        "the remote handler joined the trace"
    );
    assert_eq!(
        of("actormesh.handle", "gw.Read"),
        1,
        "so did the entity's handler"
    );

    // One access log line per request, with the trace id.
    let access: Vec<_> = spans
        .iter()
        .filter(|(n, f)| {
            n == "event:actormesh_gateway::access"
                && f.get("trace_id").map(String::as_str) == Some(trace)
        })
        .collect();
    assert_eq!(access.len(), 2, "{access:?}");
    let line = &access[0].1;
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/hello/{name}");
    assert_eq!(line["status"], "200");
    assert!(line["client"].starts_with("ip:127.0.0.1"), "{line:?}");
    assert!(line.contains_key("latency_us"));

    // Without a traceparent, each request starts its own trace.
    let one = http.get("/hello/a").await;
    let two = http.get("/hello/b").await;
    assert_ne!(one.header("x-trace-id"), two.header("x-trace-id"));
    // A malformed traceparent starts a new trace too, rather than failing the request.
    let answer = http
        .send(
            Method::GET,
            "/hello/c",
            &[("traceparent", "00-zz-zz-01")],
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-trace-id").len(), 32);
    gw.shutdown(Duration::from_secs(5)).await;
    cluster.stop().await;
}
