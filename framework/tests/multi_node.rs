//! Several nodes in one process on loopback, sharing the memory discovery.

mod common;

use std::time::Duration;

use actormesh::prelude::*;
use actormesh::{DropReason, TerminationReason};
use common::*;

/// The same body against a local and a remote target.
async fn exercise(target: &ActorRef<Counter>) {
    assert_eq!(target.ask(Add(2)).await.unwrap(), 2);
    target.tell(Add(3)).unwrap();
    assert_eq!(
        target.ask(Get).await.unwrap(),
        5,
        "tell arrives before the later ask"
    );
    let err = target.ask(Panic).await.unwrap_err();
    assert!(matches!(err, Error::HandlerPanicked { .. }), "{err:?}");
    let err = target.ask(Get).await.unwrap_err();
    assert!(
        matches!(err, Error::ActorNotFound { .. }),
        "a stopped actor fails fast, saying the message was not handled: {err:?}"
    );
}

/// Holds its reply in an actor future (spawned in its context, so it ends with the actor).
#[derive(actix::Message, serde::Serialize, serde::Deserialize, Debug)]
#[rtype(result = "()")]
struct Await;
impl RemoteMessage for Await {
    const NAME: &'static str = "test.Await";
}

/// Stops the holder.
#[derive(actix::Message, serde::Serialize, serde::Deserialize, Debug)]
#[rtype(result = "()")]
struct Quit;
impl RemoteMessage for Quit {
    const NAME: &'static str = "test.Quit";
}

/// Answers at once (to know that `Await` is being handled).
#[derive(actix::Message, serde::Serialize, serde::Deserialize, Debug)]
#[rtype(result = "()")]
struct Ping;
impl RemoteMessage for Ping {
    const NAME: &'static str = "test.Ping";
}

struct Holder(Gate);
impl actix::Actor for Holder {
    type Context = actix::Context<Self>;
}
impl actix::Handler<Await> for Holder {
    type Result = actix::ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Await, _: &mut actix::Context<Self>) -> Self::Result {
        use actix::WrapFuture;
        let gate = self.0.clone();
        Box::pin(async move { gate.pass().await }.into_actor(self))
    }
}
impl actix::Handler<Quit> for Holder {
    type Result = ();
    fn handle(&mut self, _: Quit, ctx: &mut actix::Context<Self>) {
        actix::ActorContext::stop(ctx);
    }
}
impl actix::Handler<Ping> for Holder {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut actix::Context<Self>) {}
}
/// Panics in the handler's future (in the actor's task, after the handler returned).
#[derive(actix::Message, serde::Serialize, serde::Deserialize, Debug)]
#[rtype(result = "()")]
struct Choke;
impl RemoteMessage for Choke {
    const NAME: &'static str = "test.Choke";
}
impl actix::Handler<Choke> for Holder {
    type Result = actix::ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Choke, _: &mut actix::Context<Self>) -> Self::Result {
        use actix::{ActorFutureExt, WrapFuture};
        Box::pin(
            tokio::task::yield_now()
                .into_actor(self)
                .map(|_, _, _| panic!("choked in the future")),
        )
    }
}

actormesh::remote_actor!(Holder = "test.Holder" { Await, Quit, Ping, Choke });

/// A panic in a handler's future reaches the callers of the asks the actor was handling as
/// `HandlerPanicked` (not "stopped"), locally and remotely; asks queued behind it were not
/// handled.
#[actix::test]
async fn a_panic_in_a_handlers_future_is_the_callers_panic() {
    let (_d, a, b) = pair().await;
    for remote in [false, true] {
        let holder = a.spawn(Holder(Gate::closed()));
        let target = if remote {
            let name = "choking";
            a.register_name(name, &holder).await.unwrap();
            let found = b.lookup::<Holder>(name).await.unwrap();
            a.unregister_name(name, &holder).await.unwrap();
            found
        } else {
            holder
        };
        // An ask in progress (waiting at the gate) when the actor's task panics.
        let waiting = {
            let target = target.clone();
            actix_rt::spawn(async move { target.ask(Await).await })
        };
        target.ask(Ping).await.unwrap();
        let err = target.ask(Choke).await.unwrap_err();
        assert!(
            matches!(&err, Error::HandlerPanicked { message, .. } if message == "choked in the future"),
            "remote {remote}: {err:?}"
        );
        // The other ask in progress was cut by the same panic, and says so.
        let err = waiting.await.unwrap().unwrap_err();
        assert!(
            matches!(err, Error::HandlerPanicked { .. }),
            "remote {remote}: {err:?}"
        );
        let err = target.ask(Ping).await.unwrap_err();
        assert!(
            matches!(err, Error::ActorNotFound { .. }),
            "remote {remote}: {err:?}"
        );
    }
    b.shutdown().await;
    a.shutdown().await;
}

/// "Stopped while handling" (the message may have been handled) and "not running" (it was
/// not) are different errors, and both say which actor on which node.
async fn stopped_or_not_running(target: &ActorRef<Holder>, node: &str) {
    let holding = {
        let target = target.clone();
        actix_rt::spawn(async move { target.ask(Await).await })
    };
    // Handled in order: once `Ping` is answered, `Await` is being handled.
    target.ask(Ping).await.unwrap();
    target.tell(Quit).unwrap();
    let err = holding.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::ActorStopped { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("stopped while handling the message")
            && text.contains("may or may not have been handled"),
        "{text}"
    );
    assert!(
        text.contains(&format!("test.Holder {} on node {node}", target.id())),
        "{text}"
    );
    let err = target.ask(Ping).await.unwrap_err();
    assert!(matches!(err, Error::ActorNotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("was not running") && text.contains("the message was not handled"),
        "{text}"
    );
    assert!(text.contains(&format!("on node {node}")), "{text}");
}

#[actix::test]
async fn stopped_while_handling_is_told_from_not_running() {
    let (_d, a, b) = pair().await;
    let local = a.spawn(Holder(Gate::closed()));
    stopped_or_not_running(&local, "a").await;
    let held = a.spawn(Holder(Gate::closed()));
    a.register_name("holder", &held).await.unwrap();
    let remote = b.lookup::<Holder>("holder").await.unwrap();
    assert!(!remote.is_local());
    stopped_or_not_running(&remote, "a").await;
    b.shutdown().await;
    a.shutdown().await;
}

/// `?` works on `ActorRef::tell` and `GroupRef::tell` alike in a function returning
/// `actormesh::Result`.
async fn tell_twice(
    target: &ActorRef<Counter>,
    group: &GroupRef<Counter>,
) -> actormesh::Result<()> {
    target.tell(Add(1))?;
    group.tell(Add(1))?;
    Ok(())
}

#[actix::test]
async fn tell_works_with_the_question_mark() {
    let (_d, a, b) = pair().await;
    let counter = a.spawn(Counter::default());
    a.join_group("counters", &counter).await.unwrap();
    let group = a.group::<Counter>("counters").await.unwrap();
    group
        .wait_for_instances(1, Duration::from_secs(5))
        .await
        .unwrap();
    tell_twice(&counter, &group).await.unwrap();
    assert_eq!(counter.ask(Get).await.unwrap(), 2);
    counter.tell(Stop).unwrap();
    let err = eventually(
        "the stopped counter refuses tells",
        Duration::from_secs(5),
        || async {
            match tell_twice(&counter, &group).await {
                Err(e) => Ok(e),
                Ok(()) => Err("accepted"),
            }
        },
    )
    .await;
    assert!(matches!(err, Error::ActorNotFound { .. }), "{err:?}");
    b.shutdown().await;
    a.shutdown().await;
}

/// Dropping every `Node` handle does not stop the node: it keeps serving its actors and its
/// names (its actors may hold handles of their own). It stops with `shutdown` or with its
/// actix system.
#[actix::test]
async fn a_node_keeps_serving_when_its_handles_are_dropped() {
    let (_d, a, b) = pair().await;
    let counter = a.spawn(Counter::default());
    a.register_name("kept", &counter).await.unwrap();
    drop(counter);
    let a_id = a.id().clone();
    drop(a);
    let found = b.lookup::<Counter>("kept").await.unwrap();
    assert_eq!(found.node(), &a_id);
    assert_eq!(found.ask(Add(4)).await.unwrap(), 4);
    b.shutdown().await;
}

#[actix::test]
async fn same_code_for_local_and_remote_targets() {
    let (_d, a, b) = pair().await;
    let local = a.spawn(Counter::default());
    assert!(local.is_local());
    exercise(&local).await;
    let remote = counter_seen_from(&a, &b, "remote-exercise").await;
    assert!(!remote.is_local());
    exercise(&remote).await;
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn spawn_on_a_remote_node() {
    let (_d, a, b) = pair().await;
    let counter = a.spawn_on::<Counter>(b.id(), 40).await.unwrap();
    assert_eq!(counter.node(), b.id());
    assert_eq!(counter.ask(Add(2)).await.unwrap(), 42);
    assert_eq!(b.actor_count(), 1);
    let local = a.spawn_on::<Counter>(a.id(), 1).await.unwrap();
    assert!(local.is_local());
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn spawn_on_unknown_type_or_node_is_a_clear_error() {
    let discovery = MemoryDiscovery::new();
    let a = Node::builder()
        .cluster("t")
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    // b does not register Counter as spawnable.
    let b = Node::builder()
        .cluster("t")
        .discovery(discovery)
        .start()
        .await
        .unwrap();
    a.wait_for_node(b.id(), Duration::from_secs(5))
        .await
        .unwrap();
    let err = a.spawn_on::<Counter>(b.id(), 0).await.unwrap_err();
    assert!(matches!(err, Error::UnknownActorType { .. }), "{err:?}");
    let err = a
        .spawn_on::<Counter>(&NodeId::new("nowhere"), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownNode(_)), "{err:?}");
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn reference_travels_inside_a_message() {
    let (_d, a, b) = pair().await;
    let counter = a.spawn(Counter::default());
    let forwarder = b.spawn(Forwarder);
    b.register_name("fwd", &forwarder).await.unwrap();
    let forwarder_from_a = a.lookup::<Forwarder>("fwd").await.unwrap();
    // a -> b carrying a reference to a's counter; b asks it back across the link.
    let answer = forwarder_from_a
        .ask(Forward {
            counter: counter.clone(),
            amount: 7,
        })
        .await
        .unwrap();
    assert_eq!(answer, Ok(7));
    assert_eq!(counter.ask(Get).await.unwrap(), 7);
    // A reference to a local actor that travels back home becomes local again.
    let local_again = b.spawn(Forwarder);
    let ans = b
        .spawn(Forwarder)
        .ask(Forward {
            counter: counter.clone(),
            amount: 1,
        })
        .await
        .unwrap();
    assert_eq!(ans, Ok(8));
    drop(local_again);
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn named_lookup_and_duplicate_names() {
    let (_d, a, b) = pair().await;
    let first = a.spawn(Counter::default());
    let second = b.spawn(Counter::default());
    a.register_name("svc", &first).await.unwrap();
    let err = b.register_name("svc", &second).await.unwrap_err();
    assert!(matches!(err, Error::NameTaken { .. }), "{err:?}");
    let found = b.lookup::<Counter>("svc").await.unwrap();
    assert_eq!(found, first);
    let err = b.lookup::<Forwarder>("svc").await.unwrap_err();
    assert!(matches!(err, Error::WrongActorType { .. }), "{err:?}");
    let err = b.lookup::<Counter>("nobody").await.unwrap_err();
    assert!(matches!(err, Error::NameNotFound(_)), "{err:?}");
    // Registering a remote actor's name is refused: names belong to the node running the actor.
    let err = b.register_name("other", &found).await.unwrap_err();
    assert!(matches!(err, Error::NotLocal { .. }), "{err:?}");
    // When the actor stops, its name goes with it.
    let (recipient, mut seen) = watcher();
    first.watch(recipient);
    first.ask(Stop).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("the stopped actor is reported terminated")
        .unwrap();
    assert_eq!(a.actor_count(), 0);
    // The name leaves the registry with the actor (discovery has no event for names).
    eventually(
        "the name of a stopped actor is released",
        Duration::from_secs(5),
        || async {
            match b.lookup::<Counter>("svc").await {
                Err(Error::NameNotFound(_)) => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    b.register_name("svc", &second).await.unwrap();
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn watch_local_and_remote_actor_death() {
    let (_d, a, b) = pair().await;
    let (recipient, mut seen) = watcher();
    let local = a.spawn(Counter::default());
    let remote = counter_seen_from(&b, &a, "watched").await;
    local.watch(recipient.clone());
    remote.watch(recipient.clone());
    local.tell(Stop).unwrap();
    let t = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.actor, t.reason),
        (local.id(), TerminationReason::Stopped)
    );
    remote.tell(Stop).unwrap();
    let t = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.actor, &t.node, t.reason),
        (remote.id(), b.id(), TerminationReason::Stopped)
    );
    // Watching something already gone is answered at once.
    remote.watch(recipient);
    let t = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.reason, TerminationReason::NotFound);
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn node_down_fails_pending_and_later_asks_fast() {
    let (discovery, a, b) = pair().await;
    let (remote, gate) = gated_counter_seen_from(&b, &a, "doomed").await;
    let (recipient, mut seen) = watcher();
    remote.watch(recipient);
    assert_eq!(remote.ask(Add(1)).await.unwrap(), 1);
    // An ask that is being handled (held at the gate) when the node is declared down.
    let slow = remote.clone();
    let pending =
        tokio::spawn(async move { slow.ask_timeout(Hold, Duration::from_secs(30)).await });
    gate.arrived(1).await;
    let started = std::time::Instant::now();
    assert!(discovery.fail("test", b.id()));
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::NodeDown { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "failed fast, not at the timeout"
    );
    let err = remote.ask(Get).await.unwrap_err();
    assert!(matches!(err, Error::NodeDown { .. }), "{err:?}");
    let err = remote.tell(Get).unwrap_err();
    assert!(matches!(err.error, Error::NodeDown { .. }));
    let t = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.reason, TerminationReason::NodeDown);
    gate.open();
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn graceful_shutdown_drains_inflight_asks_then_leaves() {
    let (_d, a, b) = pair().await;
    let (remote, gate) = gated_counter_seen_from(&b, &a, "draining").await;
    let mut events = a.subscribe();
    let slow = remote.clone();
    let inflight = tokio::spawn(async move { slow.ask(Hold).await });
    gate.arrived(1).await;
    // The shutdown starts while the ask is being handled: it waits for the answer.
    let mut shutdown = Box::pin(b.shutdown());
    assert!(
        poll_once(&mut shutdown).await.is_none(),
        "the shutdown waits for the ask in flight"
    );
    gate.open();
    shutdown.await;
    assert_eq!(
        inflight.await.unwrap(),
        Ok(()),
        "the accepted ask was answered before leaving"
    );
    let left = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(actormesh::MembershipEvent::Left(id)) = events.recv().await {
                return id;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&left, b.id());
    let err = remote.ask(Get).await.unwrap_err();
    assert!(matches!(err, Error::NodeDown { .. }), "{err:?}");
    assert_eq!(a.members().len(), 1);
    a.shutdown().await;
}

#[actix::test]
async fn ask_timeout_is_typed_and_late_reply_counted() {
    let (_d, a, b) = pair().await;
    // Both handlers are held at the gate until the callers have given up.
    let (remote, gate) = gated_counter_seen_from(&b, &a, "slow").await;
    let err = remote
        .ask_timeout(Hold, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::Timeout {
            after: Duration::from_millis(50)
        }
    );
    let local = a.spawn(Counter::gated(&gate));
    let err = local
        .ask_timeout(Hold, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::Timeout {
            after: Duration::from_millis(50)
        }
    );
    gate.open();
    // The remote node dropped the expired work or the reply arrived late: either is counted.
    eventually_now("the expired ask counted", Duration::from_secs(5), || {
        let (late, expired) = (
            a.stats().dropped(DropReason::LateReply),
            b.stats().dropped(DropReason::DeadlineExpired),
        );
        if late + expired > 0 {
            Ok(())
        } else {
            Err((late, expired))
        }
    })
    .await;
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn duplicate_node_id_and_other_cluster_are_refused() {
    let discovery = MemoryDiscovery::new();
    let a = Node::builder()
        .cluster("c")
        .node_id("same")
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let err = Node::builder()
        .cluster("c")
        .node_id("same")
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap_err();
    assert_eq!(err, Error::NodeIdTaken(NodeId::new("same")));
    let other = Node::builder()
        .cluster("other")
        .node_id("same")
        .discovery(discovery)
        .start()
        .await
        .unwrap();
    assert_eq!(a.members().len(), 1);
    assert_eq!(other.members().len(), 1);
    other.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn many_concurrent_asks_across_nodes() {
    let (_d, a, b) = pair().await;
    let remote = counter_seen_from(&b, &a, "busy").await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let r = remote.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                r.ask(Add(1)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(remote.ask(Get).await.unwrap(), 6400);
    for _ in 0..10_000 {
        remote.tell(Add(1)).unwrap();
    }
    assert_eq!(
        remote.ask(Get).await.unwrap(),
        16_400,
        "tells are ordered before a later ask"
    );
    assert_eq!(a.stats().dropped_total(), 0);
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn reference_as_bytes_out_of_band() {
    // Two nodes that do not share discovery: the reference carries the address.
    let a = Node::builder()
        .cluster("oob")
        .spawnable::<Counter>()
        .start()
        .await
        .unwrap();
    let b = Node::builder().cluster("oob").start().await.unwrap();
    let counter = a.spawn(Counter::default());
    let bytes = counter.to_bytes();
    let remote = b.actor_ref_from_bytes::<Counter>(&bytes).unwrap();
    assert_eq!(remote.ask(Add(5)).await.unwrap(), 5);
    assert!(
        b.actor_ref_from_bytes::<Forwarder>(&bytes).is_err(),
        "type is checked"
    );
    assert!(
        b.actor_ref_from_bytes::<Counter>(&bytes[..3]).is_err(),
        "truncated bytes are an error"
    );
    // A node of another cluster is refused by the handshake, with a clear error that tells
    // an unauthenticated caller nothing about the node it reached.
    let c = Node::builder().cluster("elsewhere").start().await.unwrap();
    let foreign = c.actor_ref_from_bytes::<Counter>(&bytes).unwrap();
    let err = foreign.ask(Get).await.unwrap_err();
    match err {
        Error::HandshakeRefused { reason, .. } => {
            assert!(
                reason.contains("does not belong to cluster `elsewhere`")
                    && !reason.contains("oob"),
                "{reason}"
            )
        }
        other => panic!("expected a handshake refusal, got {other:?}"),
    }
    c.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn oversized_message_is_refused_and_the_link_lives_on() {
    let discovery = MemoryDiscovery::new();
    let a = Node::builder()
        .cluster("big")
        .discovery(discovery.clone())
        .max_frame_size(4096)
        .start()
        .await
        .unwrap();
    let b = Node::builder()
        .cluster("big")
        .discovery(discovery)
        .max_frame_size(4096)
        .start()
        .await
        .unwrap();
    let remote = counter_seen_from(&b, &a, "big").await;
    let huge = Echoed(vec![7u8; 10_000]);
    let err = remote.ask(huge).await.unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { limit: 4096, .. }),
        "{err:?}"
    );
    assert_eq!(remote.ask(Add(1)).await.unwrap(), 1, "the link still works");
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn full_send_queue_hands_the_message_back() {
    let discovery = MemoryDiscovery::new();
    let a = Node::builder()
        .cluster("q")
        .discovery(discovery.clone())
        .send_queue_bytes(512)
        .start()
        .await
        .unwrap();
    let b = Node::builder()
        .cluster("q")
        .discovery(discovery)
        .start()
        .await
        .unwrap();
    let remote = counter_seen_from(&b, &a, "q").await;
    let mut refused = None;
    // Without yielding, the writer cannot drain: the queue must fill up within a few tells.
    for i in 0..1_000u64 {
        if let Err(e) = remote.tell(Add(i)) {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("the queue filled up");
    assert!(matches!(
        refused.error,
        Error::MailboxFull {
            limit_bytes: 512,
            ..
        }
    ));
    let Add(_) = refused.into_inner();
    assert_eq!(
        a.stats().dropped_total(),
        0,
        "a refused tell is handed back, not dropped"
    );
    // An ask while the queue is full fails the same way; once drained, sending works again.
    eventually("the queue drains", Duration::from_secs(5), || async {
        match remote.ask(Get).await {
            Ok(_) => Ok(()),
            Err(full @ Error::MailboxFull { .. }) => Err(full),
            Err(other) => panic!("unexpected {other:?}"),
        }
    })
    .await;
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn an_ask_queued_behind_a_stop_gets_actor_stopped_at_once() {
    let (_d, a, b) = pair().await;
    let remote = counter_seen_from(&b, &a, "stopping").await;
    remote.tell(Stop).unwrap();
    let started = std::time::Instant::now();
    // Queued right behind the Stop: the actor never handles it.
    let err = remote
        .ask_timeout(Get, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ActorStopped { .. } | Error::ActorNotFound { .. }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not at the timeout"
    );
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn work_whose_caller_gave_up_is_dropped_unhandled() {
    let (_d, a, b) = pair().await;
    let (remote, gate) = gated_counter_seen_from(&b, &a, "busy").await;
    let busy = remote.clone();
    let blocker = tokio::spawn(async move { busy.ask(Block).await });
    gate.arrived(1).await;
    // Queued behind the busy handler; the caller gives up before it could run.
    let err = remote
        .ask_timeout(Add(1), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    gate.open();
    blocker.await.unwrap().unwrap();
    assert_eq!(
        remote.ask(Get).await.unwrap(),
        0,
        "the expired Add never ran"
    );
    assert!(b.stats().dropped(DropReason::DeadlineExpired) >= 1);
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn a_peer_that_cannot_be_reached_fails_fast_between_reconnects() {
    // No shared discovery: nobody will declare b down, only the transport sees it go.
    let a = Node::builder().cluster("gone").start().await.unwrap();
    let b = Node::builder().cluster("gone").start().await.unwrap();
    let counter = b.spawn(Counter::default());
    let remote = a
        .actor_ref_from_bytes::<Counter>(&counter.to_bytes())
        .unwrap();
    assert_eq!(remote.ask(Add(1)).await.unwrap(), 1);
    b.shutdown().await;
    // Once a connection attempt has failed, sends fail at once with its error instead of
    // waiting in the queue for the next attempt (the link's state has no event: look).
    let refused = eventually_now(
        "b's address is known unreachable",
        Duration::from_secs(10),
        || match remote.tell(Add(1)) {
            Err(e) => Ok(e.error),
            Ok(()) => Err("a tell to b is still queued"),
        },
    )
    .await;
    assert!(
        matches!(refused, Error::NodeUnreachable { .. }),
        "{refused:?}"
    );
    let started = std::time::Instant::now();
    let err = remote
        .ask_timeout(Get, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NodeUnreachable { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "failed fast: {:?}",
        started.elapsed()
    );
    a.shutdown().await;
}

#[actix::test]
async fn stop_ends_local_and_remote_actors_and_tells_their_watchers() {
    let (_d, a, b) = pair().await;
    let (recipient, mut seen) = watcher();
    let remote = counter_seen_from(&b, &a, "to-stop").await;
    remote.watch(recipient.clone());
    for _ in 0..100 {
        remote.tell(Add(1)).unwrap();
    }
    remote.stop().unwrap();
    let t = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.actor, t.reason),
        (remote.id(), TerminationReason::Stopped)
    );
    assert_eq!(b.actor_count(), 0);
    let local = a.spawn(Counter::default());
    local.watch(recipient);
    local.tell(Add(1)).unwrap();
    local.stop().unwrap();
    let t = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.actor, local.id());
    assert!(matches!(local.stop(), Err(Error::ActorNotFound { .. })));
    b.shutdown().await;
    a.shutdown().await;
}

/// An ask whose deadline passes while it waits in a busy actor's mailbox ends in `Timeout`,
/// whichever of the caller's timer and the actor (which drops it unhandled) gets there first;
/// never in "not running".
#[actix::test]
async fn an_ask_that_expires_in_a_busy_mailbox_is_a_timeout() {
    let gate = Gate::closed();
    let node = Node::builder().start().await.unwrap();
    let counter = node.spawn(Counter::gated(&gate));
    let busy = {
        let counter = counter.clone();
        actix_rt::spawn(async move { counter.ask(Block).await })
    };
    gate.arrived(1).await;
    let waiting = {
        let counter = counter.clone();
        actix_rt::spawn(async move { counter.ask_timeout(Get, Duration::from_millis(20)).await })
    };
    tokio::task::yield_now().await;
    // Hold the thread past the deadline, then free the actor: the actor may reach the
    // expired ask before the caller's timer fires.
    std::thread::sleep(Duration::from_millis(40));
    gate.let_through(1);
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    busy.await.unwrap().unwrap();
    assert_eq!(
        counter.ask(Get).await.unwrap(),
        0,
        "the expired ask was not handled"
    );
    node.shutdown().await;
}
