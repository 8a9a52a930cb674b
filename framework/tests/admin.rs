//! The admin listener over real HTTP: metrics (checked by `promtool check metrics`), health,
//! readiness, the status JSON, the dashboard page, and a drain request.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use actormesh::prelude::*;
use common::{eventually, Add, Counter, Get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request with `Connection: close`; returns the status and the body.
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the admin listener accepts");
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the admin listener answers within 10 s")
        .unwrap();
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

/// Two nodes on one memory discovery, both with an admin listener on a free port.
async fn pair_with_admin() -> (Node, Node) {
    let discovery = MemoryDiscovery::new();
    let start = |id: &'static str| {
        Node::builder()
            .cluster("ops")
            .node_id(id)
            .discovery(discovery.clone())
            .admin(SocketAddr::from(([127, 0, 0, 1], 0)))
            .shutdown_timeout(Duration::from_secs(3))
            .start()
    };
    let a = start("a").await.expect("node a starts");
    let b = start("b").await.expect("node b starts");
    a.wait_for_node(b.id(), Duration::from_secs(5))
        .await
        .unwrap();
    b.wait_for_node(a.id(), Duration::from_secs(5))
        .await
        .unwrap();
    (a, b)
}

/// Waits (at most 10 s) for `node` to leave, as `events` tell it.
async fn left(
    events: &mut tokio::sync::broadcast::Receiver<actormesh::MembershipEvent>,
    node: &str,
    what: &str,
) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(actormesh::MembershipEvent::Left(id)) if id.as_str() == node => break,
                Ok(_) => continue,
                Err(e) => panic!("membership events ended: {e}"),
            }
        }
    })
    .await
    .expect(what);
}

/// The value of the sample `name{labels}` in Prometheus text, if present.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[actix::test]
async fn metrics_count_messages_and_pass_promtool() {
    let (a, b) = pair_with_admin().await;
    let counter = b.spawn(Counter::default());
    b.register_name("ops.counter", &counter).await.unwrap();
    let remote = a.lookup::<Counter>("ops.counter").await.unwrap();
    for _ in 0..5 {
        remote.tell(Add(1)).unwrap();
    }
    assert_eq!(remote.ask(Get).await.unwrap(), 5);
    let local = b.spawn(Counter::default());
    local.tell(Add(2)).unwrap();
    assert_eq!(local.ask(Get).await.unwrap(), 2);

    let admin_a = a.admin_addr().expect("a runs an admin listener");
    let admin_b = b.admin_addr().expect("b runs an admin listener");
    let (code, text) = http(admin_a, "GET", "/metrics").await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        sample(
            &text,
            r#"actormesh_messages_total{message="test.Add",direction="outbound"}"#
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"actormesh_ask_duration_seconds_count{message="test.Get"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"actormesh_members{state="up"}"#),
        Some(2.0),
        "{text}"
    );
    assert!(
        text.contains(r#"actormesh_dropped_total{reason="queue_full"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"actormesh_link_connects_total{peer="b"} 1"#),
        "{text}"
    );
    // The receiving side counts what came in by message name, and its local sends. The
    // link's frames may still be on their way when the ask's reply is: wait for the count.
    let text_b = eventually(
        "b counts 5 inbound adds",
        Duration::from_secs(5),
        || async {
            let (_, text) = http(admin_b, "GET", "/metrics").await;
            match sample(
                &text,
                r#"actormesh_messages_total{message="test.Add",direction="inbound"}"#,
            ) {
                Some(5.0) => Ok(text),
                other => Err(other),
            }
        },
    )
    .await;
    assert_eq!(
        sample(
            &text_b,
            r#"actormesh_messages_total{message="test.Add",direction="local"}"#
        ),
        Some(1.0),
        "{text_b}"
    );

    // The text passes Prometheus' own linter.
    for (node, text) in [("a", &text), ("b", &text_b)] {
        if let Err(e) = actormesh_testkit::promtool_check(text) {
            panic!("node {node}'s metrics: {e}\n{text}");
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[actix::test]
async fn health_status_dashboard_and_drain() {
    let (a, b) = pair_with_admin().await;
    let admin_a = a.admin_addr().unwrap();
    let admin_b = b.admin_addr().unwrap();

    let (code, body) = http(admin_a, "GET", "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = http(admin_a, "GET", "/readyz").await;
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true, "{body}");

    let (code, body) = http(admin_a, "GET", "/status").await;
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["cluster"], "ops");
    assert_eq!(status["node"], "a");
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{body}");
    assert!(nodes.iter().all(|n| n["state"] == "up"), "{body}");
    let b_entry = nodes.iter().find(|n| n["id"] == "b").unwrap();
    assert_eq!(b_entry["admin"], admin_b.to_string(), "{body}");
    // A group without a spec is listed with its members and no desired count.
    let worker = b.spawn(Counter::default());
    b.join_group("ops.workers", &worker).await.unwrap();
    let (_, body) = http(admin_a, "GET", "/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let group = status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "ops.workers")
        .cloned()
        .unwrap_or_else(|| panic!("the group is listed: {body}"));
    assert_eq!(group["desired"], serde_json::Value::Null, "{body}");
    assert_eq!(group["running"], 1, "{body}");
    assert_eq!(group["per_node"]["b"], 1, "{body}");

    let (code, page) = http(admin_a, "GET", "/").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("<html") && page.contains("status"),
        "the dashboard page"
    );

    let (code, _) = http(admin_a, "GET", "/nowhere").await;
    assert_eq!(code, 404);

    // A drain request: b answers 202, stops being ready, and leaves the cluster.
    let mut events = a.subscribe();
    let (code, body) = http(admin_b, "POST", "/drain").await;
    assert_eq!(code, 202, "{body}");
    assert!(b.is_draining());
    left(
        &mut events,
        "b",
        "b leaves within 10 s of the drain request",
    )
    .await;
    // The departed node stays on a's page, as left, with the event.
    let (_, body) = http(admin_a, "GET", "/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let b_entry = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "b")
        .cloned()
        .unwrap_or_else(|| panic!("b is still listed: {body}"));
    assert_eq!(b_entry["state"], "left", "{body}");
    assert_eq!(status["events"][0]["node"], "b", "{body}");
    assert_eq!(status["events"][0]["kind"], "left", "{body}");
    a.shutdown().await;
}

#[actix::test]
async fn readiness_fails_while_draining_and_metrics_are_off_without_admin() {
    let (a, b) = pair_with_admin().await;
    let admin_b = b.admin_addr().unwrap();
    // An ask from a waits at b's gate: b's drain waits for it (up to its shutdown timeout).
    let (held, gate) = common::gated_counter_seen_from(&b, &a, "ops.gated").await;
    let ask = tokio::spawn(async move { held.ask(common::Hold).await });
    gate.arrived(1).await;
    let drain = tokio::spawn({
        let b = b.clone();
        async move { b.shutdown().await }
    });
    let body = eventually(
        "b's readiness fails while it drains",
        Duration::from_secs(5),
        || async {
            let (code, body) = http(admin_b, "GET", "/readyz").await;
            if code == 503 {
                Ok(body)
            } else {
                Err((code, body))
            }
        },
    )
    .await;
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false, "{body}");
    assert_eq!(ready["draining"]["ok"], false, "{body}");
    // Alive all the same until the drain ends.
    assert_eq!(http(admin_b, "GET", "/healthz").await.0, 200);
    gate.open();
    ask.await
        .unwrap()
        .expect("the ask in flight is answered during the drain");
    drain.await.unwrap();

    let plain = Node::builder().start().await.unwrap();
    assert!(plain.admin_addr().is_none() && plain.metrics().is_none());
    plain.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn run_until_stopped_runs_before_drain_first_then_leaves() {
    let (a, b) = pair_with_admin().await;
    let admin_b = b.admin_addr().unwrap();
    let counter = b.spawn(Counter::default());
    b.register_name("ops.order", &counter).await.unwrap();
    let remote = a.lookup::<Counter>("ops.order").await.unwrap();
    remote.tell(Add(7)).unwrap();
    let mut events = a.subscribe();

    // What `before_drain` sees: b already refuses readiness, yet it is still a member of the
    // cluster and still answers asks (its own drain has not begun).
    let seen = std::rc::Rc::new(std::cell::RefCell::new(None));
    let stopped = b.run_until_stopped_with({
        let (seen, a, b, remote) = (seen.clone(), a.clone(), b.clone(), remote.clone());
        move || async move {
            let ready = http(admin_b, "GET", "/readyz").await.0;
            let answer = remote.ask(Get).await;
            let member = a.members().iter().any(|n| n.id == *b.id());
            *seen.borrow_mut() = Some((b.is_draining(), ready, answer, member));
        }
    });
    let (cause, (code, body)) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(15), stopped),
        http(admin_b, "POST", "/drain")
    );
    assert_eq!(code, 202, "{body}");
    let cause = cause
        .expect("the drain ends within 15 s")
        .expect("signal handlers installed");
    assert_eq!(cause, actormesh::StopCause::DrainRequest);
    let (draining, ready, answer, member) = seen
        .borrow_mut()
        .take()
        .expect("before_drain ran during the drain");
    assert!(draining, "draining is set before before_drain runs");
    assert_eq!(ready, 503, "readiness fails before before_drain runs");
    assert_eq!(
        answer.expect("b still answers asks while before_drain runs"),
        7
    );
    assert!(member, "b is still a member while before_drain runs");

    // Then b drained: it left the cluster and its actors stopped.
    left(&mut events, "b", "a sees b leave after its drain").await;
    assert!(
        remote.ask(Get).await.is_err(),
        "b's actors are gone after the drain"
    );
    a.shutdown().await;
}

#[actix::test]
async fn services_add_metrics_and_shared_ones_are_written_once() {
    use prometheus_client::metrics::counter::Counter as PromCounter;
    use prometheus_client::metrics::gauge::Gauge;
    let node = Node::builder()
        .admin(SocketAddr::from(([127, 0, 0, 1], 0)))
        .start()
        .await
        .unwrap();
    let metrics = node.metrics().expect("metrics with an admin listener");
    let own = PromCounter::<u64>::default();
    metrics.register("orders_placed", "Orders placed", own.clone());
    own.inc_by(3);
    // Two components asking for the same shared counter get one, written once.
    let first = metrics
        .register_shared("jobs_done", "Jobs done", PromCounter::<u64>::default)
        .unwrap();
    let second = metrics
        .register_shared("jobs_done", "Jobs done", PromCounter::<u64>::default)
        .unwrap();
    first.inc();
    second.inc();
    assert!(
        metrics
            .register_shared("jobs_done", "Jobs done", Gauge::<i64>::default)
            .is_none(),
        "the name is taken by a counter"
    );
    let (code, text) = http(node.admin_addr().unwrap(), "GET", "/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(sample(&text, "actormesh_orders_placed_total"), Some(3.0));
    assert_eq!(sample(&text, "actormesh_jobs_done_total"), Some(2.0));
    assert_eq!(
        text.matches("# TYPE actormesh_jobs_done").count(),
        1,
        "{text}"
    );
    if let Err(e) = actormesh_testkit::promtool_check(&text) {
        panic!("{e}\n{text}");
    }
    node.shutdown().await;
}
