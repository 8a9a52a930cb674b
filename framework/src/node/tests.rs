//! Bad input at the node boundary: frames fed straight into the request path.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use actix::{Actor, Context, Handler, Message};
use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use crate::core::wire::envelope::{
    decode_payload, encode_envelope, encode_payload, Envelopes, Header, WireError,
};
use crate::core::wire::outbox::Outbox;
use crate::stats::DropReason;
use crate::{Node, RemoteMessage};

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Echo(u64);
impl RemoteMessage for Echo {
    const NAME: &'static str = "node-tests.Echo";
}

struct Echoer;
impl Actor for Echoer {
    type Context = Context<Self>;
}
impl Handler<Echo> for Echoer {
    type Result = u64;
    fn handle(&mut self, msg: Echo, _: &mut Context<Self>) -> u64 {
        msg.0
    }
}
crate::remote_actor!(Echoer = "node-tests.Echoer" { Echo });

pub(super) fn ask(id: u64, target: u64, message: u64) -> Header {
    Header::Ask {
        id,
        target,
        message,
        timeout_ms: 5_000,
        deadline_unix_ms: crate::id::unix_ms(std::time::SystemTime::now()) + 5_000,
        trace: None,
    }
}

/// Collects `n` replies (id, result) from `outbox`, waiting up to 5 s.
pub(super) async fn replies(outbox: &Outbox, n: usize) -> Vec<(u64, Result<u64, WireError>)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.len() < n && tokio::time::Instant::now() < deadline {
        let mut cx = TaskContext::from_waker(Waker::noop());
        match outbox.poll_frame(&mut cx, 0) {
            Poll::Ready(Some(frame)) => {
                for envelope in Envelopes::new(frame) {
                    let (header, payload) = envelope.expect("replies are well formed");
                    let Header::Reply { id, error } = header else {
                        panic!("unexpected {header:?}")
                    };
                    got.push((
                        id,
                        match error {
                            None => Ok(decode_payload::<u64>(&payload).unwrap()),
                            Some(e) => Err(e),
                        },
                    ));
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    got.sort_by_key(|(id, _)| *id);
    got
}

#[actix_rt::test]
async fn one_bad_envelope_never_costs_the_others() {
    let node = Node::builder().start().await.unwrap();
    let echo = node.spawn(Echoer);
    let target = echo.id().0;
    let shared = &node.shared;
    let outbox = Arc::new(Outbox::new(1 << 20, 1 << 20));

    let mut frame = BytesMut::new();
    // 1: garbage where a header should be.
    frame.put_u32_le(3);
    frame.put_slice(&[0xee, 0xee, 0xee]);
    // 2: an ask to an actor that does not exist.
    encode_envelope(&mut frame, &ask(1, 999, Echo::WIRE_ID), |b| {
        encode_payload(&Echo(1), b)
    })
    .unwrap();
    // 3: a message type the actor does not accept.
    encode_envelope(&mut frame, &ask(2, target, 0xdead), |b| {
        encode_payload(&Echo(2), b)
    })
    .unwrap();
    // 4: a payload that is not an Echo.
    encode_envelope(&mut frame, &ask(3, target, Echo::WIRE_ID), |b| {
        encode_payload("not a number", b)
    })
    .unwrap();
    // 5: a good one.
    encode_envelope(&mut frame, &ask(4, target, Echo::WIRE_ID), |b| {
        encode_payload(&Echo(44), b)
    })
    .unwrap();
    // 6: a reply-direction envelope on the request direction.
    encode_envelope(&mut frame, &Header::Reply { id: 9, error: None }, |_| {
        Ok::<_, String>(())
    })
    .unwrap();
    // 7: a tell of an unknown type (no reply possible: counted and logged).
    encode_envelope(
        &mut frame,
        &Header::Tell {
            target,
            message: 0xbeef,
            trace: None,
        },
        |b| encode_payload(&Echo(7), b),
    )
    .unwrap();
    // 8: a truncated tail.
    frame.put_u32_le(1000);
    frame.put_slice(&[1, 2, 3]);

    shared.on_request_frame(frame.freeze(), &outbox, 0);

    let got = replies(&outbox, 4).await;
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0], (1, Err(WireError::ActorNotFound)));
    assert!(
        matches!(got[1], (2, Err(WireError::UnknownMessage { .. }))),
        "{got:?}"
    );
    assert!(matches!(got[2], (3, Err(WireError::Codec(_)))), "{got:?}");
    assert_eq!(got[3], (4, Ok(44)));

    let stats = node.stats();
    assert_eq!(
        stats.dropped(DropReason::Malformed),
        3,
        "garbage, wrong direction, truncated"
    );
    assert_eq!(stats.dropped(DropReason::UnknownActor), 1);
    assert_eq!(stats.dropped(DropReason::UnknownMessage), 2);
    assert_eq!(stats.dropped(DropReason::Decode), 1);
    // The actor is unharmed.
    assert_eq!(echo.ask(Echo(5)).await.unwrap(), 5);
    node.shutdown().await;
}

#[actix_rt::test]
async fn spawn_of_unknown_type_and_bad_arguments_get_error_replies() {
    let node = Node::builder().start().await.unwrap();
    let outbox = Arc::new(Outbox::new(1 << 20, 1 << 20));
    let mut frame = BytesMut::new();
    encode_envelope(
        &mut frame,
        &Header::Spawn {
            id: 1,
            actor_type: "no.such.Type".into(),
        },
        |_| Ok::<_, String>(()),
    )
    .unwrap();
    node.shared.on_request_frame(frame.freeze(), &outbox, 0);
    let got = replies(&outbox, 1).await;
    assert!(
        matches!(got[..], [(1, Err(WireError::UnknownActorType { .. }))]),
        "{got:?}"
    );
    node.shutdown().await;
}

#[actix_rt::test]
async fn orders_of_a_node_that_does_not_lead_are_refused() {
    let node = Node::builder().start().await.unwrap();
    let outbox = Arc::new(Outbox::new(1 << 20, 1 << 20));
    let mut frame = BytesMut::new();
    // Nobody leads this cluster: any fencing token is stale.
    encode_envelope(
        &mut frame,
        &Header::SpawnReplica {
            id: 1,
            actor_type: "node-tests.Echoer".into(),
            group: "g".into(),
            fence: 999,
            singleton: false,
        },
        |_| Ok::<_, String>(()),
    )
    .unwrap();
    encode_envelope(
        &mut frame,
        &Header::Retire {
            id: 2,
            target: 1,
            group: "g".into(),
            fence: 999,
        },
        |_| Ok::<_, String>(()),
    )
    .unwrap();
    node.shared.on_request_frame(frame.freeze(), &outbox, 0);
    let got = replies(&outbox, 2).await;
    assert_eq!(
        got,
        vec![(1, Err(WireError::Fenced)), (2, Err(WireError::Fenced))]
    );
    assert_eq!(node.actor_count(), 0, "nothing was spawned");
    node.shutdown().await;
}

/// Actors start wherever `spawn` is called from: the arbiter's own code, a `tokio::spawn`
/// task (outside actix's task set), another thread; each one answers, and a million-actor
/// spawn loop on the arbiter does not need the arbiter's queue (see `runtime/local.rs`).
#[actix_rt::test]
async fn spawn_works_from_the_arbiter_a_tokio_task_and_another_thread() {
    let node = Node::builder().start().await.unwrap();
    let here = node.spawn(Echoer);
    assert_eq!(here.ask(Echo(1)).await.unwrap(), 1);

    let from_task = {
        let node = node.clone();
        tokio::spawn(async move { node.spawn(Echoer) })
            .await
            .unwrap()
    };
    assert_eq!(from_task.ask(Echo(2)).await.unwrap(), 2);

    let from_thread = {
        let node = node.clone();
        std::thread::spawn(move || node.spawn(Echoer))
            .join()
            .unwrap()
    };
    assert_eq!(from_thread.ask(Echo(3)).await.unwrap(), 3);
    assert_eq!(node.actor_count(), 3);
    node.shutdown().await;
}

/// A flood of malformed envelopes is counted in full but logged in a bounded number of lines
/// (each line says how many like it were left out), so that logging does not become the
/// node's work.
#[actix_rt::test]
async fn a_flood_of_malformed_envelopes_keeps_the_log_bounded() {
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    // The process-wide subscriber (no other test of this binary sets one): a subscriber set for
    // this thread only misses call sites that another test's thread registered first.
    tracing::subscriber::set_global_default(subscriber)
        .expect("no other test sets the global subscriber");

    let node = Node::builder().start().await.unwrap();
    let echo = node.spawn(Echoer);
    let outbox = Arc::new(Outbox::new(1 << 20, 1 << 20));
    const FLOOD: u64 = 20_000;
    let mut frame = BytesMut::new();
    for _ in 0..FLOOD {
        // A reply-direction envelope on the request direction: malformed, no reply possible.
        encode_envelope(&mut frame, &Header::Reply { id: 9, error: None }, |_| {
            Ok::<_, String>(())
        })
        .unwrap();
    }
    node.shared.on_request_frame(frame.freeze(), &outbox, 0);
    assert_eq!(node.stats().dropped(DropReason::Malformed), FLOOD);
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    // Other tests running meanwhile may add a line or two of the same kind: still bounded.
    let lines = text
        .lines()
        .filter(|l| l.contains("reply-direction envelope"))
        .count();
    assert!(
        (1..=2 * crate::ratelog::PER_WINDOW as usize).contains(&lines),
        "{lines} lines for {FLOOD} malformed envelopes:\n{text}"
    );
    // The node still serves.
    assert_eq!(echo.ask(Echo(3)).await.unwrap(), 3);
    node.shutdown().await;
}

/// An ask read after its caller's deadline (it waited in a kernel buffer, or this node was
/// frozen) is not started, whatever time its `timeout_ms` would still give it: the deadline
/// travels as a wall-clock time.
#[actix_rt::test]
async fn an_ask_read_after_its_callers_deadline_is_not_started() {
    let node = Node::builder().start().await.unwrap();
    let echo = node.spawn(Echoer);
    let target = echo.id().0;
    let outbox = Arc::new(Outbox::new(1 << 20, 1 << 20));
    let now = crate::id::unix_ms(std::time::SystemTime::now());
    let mut frame = BytesMut::new();
    // Sent 8 s ago with a 5 s timeout: its caller gave up 3 s ago.
    let stale = Header::Ask {
        id: 1,
        target,
        message: Echo::WIRE_ID,
        timeout_ms: 5_000,
        deadline_unix_ms: now - 3_000,
        trace: None,
    };
    encode_envelope(&mut frame, &stale, |b| encode_payload(&Echo(1), b)).unwrap();
    encode_envelope(&mut frame, &ask(2, target, Echo::WIRE_ID), |b| {
        encode_payload(&Echo(2), b)
    })
    .unwrap();
    node.shared.on_request_frame(frame.freeze(), &outbox, 0);
    let got = replies(&outbox, 2).await;
    assert_eq!(got, vec![(1, Err(WireError::DeadlineExpired)), (2, Ok(2))]);
    assert_eq!(node.stats().dropped(DropReason::DeadlineExpired), 1);
    node.shutdown().await;
}
