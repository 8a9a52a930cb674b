//! Real node processes on loopback, driven from the test process (itself a node).

use std::time::{Duration, Instant};

use actormesh::{Error, Node};
use actormesh_cluster_tests::{Add, Counter, NodeProcess, Relay, WhoAreYou};

const BIN: &str = env!("CARGO_BIN_EXE_cluster-node");

#[actix::test]
async fn asks_across_processes_and_a_killed_process_fails_fast() {
    let mut p1 = NodeProcess::start(BIN, "proc", "p1").await.unwrap();
    let mut p2 = NodeProcess::start(BIN, "proc", "p2").await.unwrap();
    let me = Node::builder()
        .cluster("proc")
        .node_id("driver")
        .start()
        .await
        .unwrap();
    let c1 = me.actor_ref_from_bytes::<Counter>(&p1.counter).unwrap();
    let c2 = me.actor_ref_from_bytes::<Counter>(&p2.counter).unwrap();

    assert_eq!(c1.ask(WhoAreYou).await.unwrap(), p1.child.id().unwrap());
    assert_eq!(c2.ask(WhoAreYou).await.unwrap(), p2.child.id().unwrap());
    assert_eq!(c1.ask(Add(2)).await.unwrap(), 2);
    c1.tell(Add(3)).unwrap();
    // p2 asks p1 with a reference the driver handed it: three processes, one reference.
    let relayed = c2
        .ask(Relay {
            counter: c1.clone(),
            amount: 5,
        })
        .await
        .unwrap();
    assert_eq!(relayed, Ok(10));

    // SIGKILL p1: asks to it fail fast (well before the 5 s ask timeout) while p2 answers on.
    p1.child.start_kill().unwrap();
    p1.child.wait().await.unwrap();
    let started = Instant::now();
    let err = c1.ask(Add(1)).await.unwrap_err();
    assert!(matches!(err, Error::NodeUnreachable { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(c2.ask(Add(1)).await.unwrap(), 1);
    let relayed = c2
        .ask(Relay {
            counter: c1.clone(),
            amount: 1,
        })
        .await
        .unwrap();
    assert!(
        relayed.is_err(),
        "p2 learns p1 is unreachable too: {relayed:?}"
    );

    // Graceful stop of p2: close its stdin, it drains and exits 0.
    drop(p2.child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(15), p2.child.wait())
        .await
        .expect("p2 exits within 15 s")
        .unwrap();
    assert!(status.success(), "{status:?}");
    me.shutdown().await;
}

#[actix::test]
async fn a_process_of_another_cluster_is_refused_with_a_clear_error() {
    let p = NodeProcess::start(BIN, "blue", "b1").await.unwrap();
    let me = Node::builder().cluster("green").start().await.unwrap();
    let counter = me.actor_ref_from_bytes::<Counter>(&p.counter).unwrap();
    let err = counter.ask(Add(1)).await.unwrap_err();
    match err {
        Error::HandshakeRefused { reason, .. } => {
            // The refusal names what the caller said, and nothing of the node it reached.
            assert!(
                reason.contains("does not belong to cluster `green`") && !reason.contains("blue"),
                "{reason}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    me.shutdown().await;
}
