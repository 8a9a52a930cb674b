//! Local supervision: restart policies, backoff, intensity, identity kept across restarts.

mod common;

use std::time::Duration;

use actix::{Actor, ActorContext, Context, Handler, Message};
use actormesh::prelude::*;
use actormesh::{Restart, Supervision, TerminationReason};
use common::{eventually, watcher, Add, Counter};
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
struct Value;
impl RemoteMessage for Value {
    const NAME: &'static str = "sup.Value";
}

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
struct Incr;
impl RemoteMessage for Incr {
    const NAME: &'static str = "sup.Incr";
}

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
struct Crash;
impl RemoteMessage for Crash {
    const NAME: &'static str = "sup.Crash";
}

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
struct Quit;
impl RemoteMessage for Quit {
    const NAME: &'static str = "sup.Quit";
}

struct Flaky {
    value: u64,
}

impl Actor for Flaky {
    type Context = Context<Self>;
}

impl Spawnable for Flaky {
    type Args = u64;
    fn from_args(start: u64, _: &mut actormesh::SpawnContext<'_, Self>) -> Self {
        Flaky { value: start }
    }
}

impl Handler<Value> for Flaky {
    type Result = u64;
    fn handle(&mut self, _: Value, _: &mut Context<Self>) -> u64 {
        self.value
    }
}

impl Handler<Incr> for Flaky {
    type Result = ();
    fn handle(&mut self, _: Incr, _: &mut Context<Self>) {
        self.value += 1;
    }
}

impl Handler<Crash> for Flaky {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("crash requested");
    }
}

impl Handler<Quit> for Flaky {
    type Result = ();
    fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

actormesh::remote_actor!(Flaky = "sup.Flaky" { Value, Incr, Crash, Quit });

/// Asks `Value` until it answers (the actor is back), for at most 5 s. A restart has no event
/// (its watchers are not told), so the reference is tried until it answers.
async fn value_when_back(target: &ActorRef<Flaky>) -> u64 {
    eventually("the actor comes back", Duration::from_secs(5), || {
        target.ask(Value)
    })
    .await
}

fn fast(restart: Restart) -> Supervision {
    Supervision::new(restart).backoff(Duration::from_millis(5), Duration::from_millis(50))
}

#[actix::test]
async fn a_panicking_handler_restarts_only_that_actor_with_fresh_state() {
    let discovery = MemoryDiscovery::new();
    let a = Node::builder()
        .cluster("sup")
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let b = Node::builder()
        .cluster("sup")
        .discovery(discovery)
        .start()
        .await
        .unwrap();
    let flaky = a.spawn_supervised::<Flaky>(10, fast(Restart::OnFailure));
    let neighbour = a.spawn(Counter::default());
    a.register_name("flaky", &flaky).await.unwrap();
    let remote = b.lookup::<Flaky>("flaky").await.unwrap();
    for _ in 0..3 {
        flaky.tell(Incr).unwrap();
    }
    assert_eq!(flaky.ask(Value).await.unwrap(), 13);
    let err = remote.ask(Crash).await.unwrap_err();
    assert!(matches!(err, Error::HandlerPanicked { .. }), "{err:?}");
    assert_eq!(
        neighbour.ask(Add(1)).await.unwrap(),
        1,
        "the neighbour keeps answering"
    );
    // The same references, local and remote, reach the restarted actor, with fresh state.
    assert_eq!(value_when_back(&flaky).await, 10);
    assert_eq!(value_when_back(&remote).await, 10);
    // Its name survived the restart.
    let again = b.lookup::<Flaky>("flaky").await.unwrap();
    assert_eq!(again.id(), flaky.id());
    assert_eq!(again.ask(Value).await.unwrap(), 10);
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn a_panic_in_a_plain_tell_counts_as_a_failure() {
    let node = Node::builder().start().await.unwrap();
    let flaky = node.spawn_supervised::<Flaky>(1, fast(Restart::OnFailure));
    flaky.tell(Incr).unwrap();
    flaky.tell(Crash).unwrap();
    assert_eq!(
        value_when_back(&flaky).await,
        1,
        "restarted from its arguments"
    );
    node.shutdown().await;
}

#[actix::test]
async fn policies_decide_which_stops_restart() {
    let node = Node::builder().start().await.unwrap();
    let (recipient, mut seen) = watcher();

    // OnFailure: stopping itself is final.
    let on_failure = node.spawn_supervised::<Flaky>(0, fast(Restart::OnFailure));
    on_failure.watch(recipient.clone());
    on_failure.ask(Quit).await.unwrap();
    let t = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.actor, t.reason),
        (on_failure.id(), TerminationReason::Stopped)
    );

    // Never: even a failure is final.
    let never = node.spawn_supervised::<Flaky>(0, fast(Restart::Never));
    never.watch(recipient.clone());
    let _ = never.ask(Crash).await;
    let t = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.actor, never.id());
    assert!(never.ask(Value).await.is_err());

    // Always: stopping itself restarts it too, and watchers are not told.
    let always = node.spawn_supervised::<Flaky>(5, fast(Restart::Always));
    always.watch(recipient.clone());
    always.tell(Incr).unwrap();
    always.ask(Quit).await.unwrap();
    assert_eq!(value_when_back(&always).await, 5);
    assert!(
        seen.try_recv().is_err(),
        "a restarted actor is not reported terminated"
    );
    node.shutdown().await;
}

#[actix::test]
async fn the_intensity_limit_gives_up_and_tells_the_watchers() {
    let node = Node::builder().start().await.unwrap();
    let (recipient, mut seen) = watcher();
    let flaky = node.spawn_supervised::<Flaky>(
        0,
        fast(Restart::OnFailure).intensity(2, Duration::from_secs(30)),
    );
    flaky.watch(recipient);
    for round in 0..2 {
        let _ = flaky.ask(Crash).await;
        assert_eq!(value_when_back(&flaky).await, 0, "restart {round}");
    }
    let _ = flaky.ask(Crash).await;
    let t = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.actor, flaky.id());
    let err = flaky.ask(Value).await.unwrap_err();
    assert!(matches!(err, Error::ActorNotFound { .. }), "{err:?}");
    assert_eq!(node.actor_count(), 0);
    node.shutdown().await;
}

#[actix::test]
async fn an_explicit_stop_is_final_even_under_restart_always() {
    let node = Node::builder().start().await.unwrap();
    let (recipient, mut seen) = watcher();
    let always = node.spawn_supervised::<Flaky>(0, fast(Restart::Always));
    always.watch(recipient);
    always.tell(Incr).unwrap();
    always.stop().unwrap();
    let t = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.actor, always.id());
    // Watchers are told only once the actor is removed for good; a restarted one keeps its
    // table entry (and its watchers are never told).
    assert_eq!(node.actor_count(), 0, "not restarted");
    assert!(always.ask(Value).await.is_err());
    node.shutdown().await;
}

/// A stop requested while the actor waits out its restart backoff is final too: it is not
/// restarted when the backoff ends, and its watchers are told.
#[actix::test]
async fn a_stop_during_the_restart_backoff_is_final() {
    let node = Node::builder().start().await.unwrap();
    let (recipient, mut seen) = watcher();
    let flaky = node.spawn_supervised::<Flaky>(
        0,
        Supervision::new(Restart::Always)
            .backoff(Duration::from_millis(200), Duration::from_millis(200)),
    );
    flaky.watch(recipient);
    assert!(matches!(
        flaky.ask(Crash).await,
        Err(Error::HandlerPanicked { .. })
    ));
    // Between incarnations now: the stop is recorded, not lost.
    flaky.stop().unwrap();
    let t = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("the watcher is told once the backoff ends")
        .unwrap();
    assert_eq!(t.actor, flaky.id());
    assert_eq!(node.actor_count(), 0, "not restarted");
    assert!(matches!(
        flaky.ask(Value).await,
        Err(Error::ActorNotFound { .. })
    ));
    node.shutdown().await;
}
