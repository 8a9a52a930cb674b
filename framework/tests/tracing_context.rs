//! A remote handler's span continues the caller's trace.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

type Recorded = Vec<(String, HashMap<String, String>)>;

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Recorded>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
}

struct Capture {
    spans: Spans,
    index: Mutex<HashMap<Id, usize>>,
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.spans.0.lock().unwrap();
        spans.push((attrs.metadata().name().to_owned(), fields));
        self.index
            .lock()
            .unwrap()
            .insert(id.clone(), spans.len() - 1);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(&i) = self.index.lock().unwrap().get(id) {
            values.record(&mut Fields(&mut self.spans.0.lock().unwrap()[i].1));
        }
    }
}

#[actix::test]
async fn remote_handler_span_is_a_child_of_the_senders() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(Capture {
        spans: spans.clone(),
        index: Mutex::new(HashMap::new()),
    });
    let _guard = tracing::subscriber::set_default(subscriber);
    let (_d, a, b) = pair().await;
    let remote = counter_seen_from(&b, &a, "traced").await;
    assert_eq!(remote.ask(Add(1)).await.unwrap(), 1);
    let spans = spans.0.lock().unwrap().clone();
    let send = spans
        .iter()
        .find(|(name, f)| {
            name == "actormesh.send" && f.get("message").map(String::as_str) == Some("test.Add")
        })
        .expect("a send span");
    let handle = spans
        .iter()
        .find(|(name, f)| {
            name == "actormesh.handle" && f.get("message").map(String::as_str) == Some("test.Add")
        })
        .expect("a handle span");
    assert!(
        spans.iter().any(|(name, _)| name == "actormesh.deliver"),
        "a delivery span"
    );
    assert_eq!(
        send.1.get("trace_id"),
        handle.1.get("trace_id"),
        "same trace"
    );
    assert_eq!(
        send.1.get("span_id"),
        handle.1.get("parent_span_id"),
        "handler's parent is the send"
    );
    assert!(send.1.contains_key("trace_id"));
    b.shutdown().await;
    a.shutdown().await;
}
