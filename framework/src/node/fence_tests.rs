//! The fence at the node boundary: frames fed straight into the request path of a node whose
//! lease clock the test controls (the in-process discovery has no leases, so the test installs
//! one), and the actor's own count says whether anything was handled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Message};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use super::tests::{ask, replies};
use crate::core::wire::envelope::{encode_envelope, encode_payload, WireError};
use crate::core::wire::outbox::Outbox;
use crate::discovery::LeaseClock;
use crate::stats::DropReason;
use crate::{Node, RemoteMessage};

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Bump;
impl RemoteMessage for Bump {
    const NAME: &'static str = "fence-tests.Bump";
}

struct Tally(Arc<AtomicU64>);
impl Actor for Tally {
    type Context = Context<Self>;
}
impl Handler<Bump> for Tally {
    type Result = u64;
    fn handle(&mut self, _: Bump, _: &mut Context<Self>) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}
crate::remote_actor!(Tally = "fence-tests.Tally" { Bump });

const TTL: Duration = Duration::from_secs(2);

/// A node with a lease clock of epoch 7, certainly alive for the next TTL, and a tally.
async fn fenced_node() -> (Node, Arc<LeaseClock>, u64, Arc<AtomicU64>) {
    let node = Node::builder().start().await.unwrap();
    let clock = Arc::new(LeaseClock::new(7, Instant::now(), TTL));
    node.shared.lease.set(clock.clone()).unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let tally = node.spawn(Tally(count.clone()));
    (node, clock, tally.id().0, count)
}

fn asks(ids: std::ops::Range<u64>, target: u64) -> bytes::Bytes {
    let mut frame = BytesMut::new();
    for id in ids {
        encode_envelope(&mut frame, &ask(id, target, Bump::WIRE_ID), |b| {
            encode_payload(&Bump, b)
        })
        .unwrap();
    }
    frame.freeze()
}

fn outbox() -> Arc<Outbox> {
    Arc::new(Outbox::new(1 << 20, 1 << 20))
}

#[actix_rt::test]
async fn links_of_the_current_lease_are_served_and_links_of_an_older_one_refused() {
    let (node, _clock, target, count) = fenced_node().await;
    assert_eq!(node.shared.link_epoch(), 7);
    let out = outbox();
    node.shared.on_request_frame(asks(1..3, target), &out, 7);
    assert_eq!(replies(&out, 2).await, vec![(1, Ok(1)), (2, Ok(2))]);
    // A link accepted under a lease before this one: nothing it carries is started.
    node.shared.on_request_frame(asks(3..5, target), &out, 6);
    assert_eq!(
        replies(&out, 2).await,
        vec![
            (3, Err(WireError::NotMember)),
            (4, Err(WireError::NotMember))
        ]
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(node.stats().dropped(DropReason::Fenced), 2);
    node.shutdown().await;
}

#[actix_rt::test]
async fn once_the_lease_is_lost_nothing_received_under_it_starts() {
    let (node, clock, target, count) = fenced_node().await;
    let out = outbox();
    // Read while the lease was alive, queued in the actor's mailbox: then the store says the
    // lease is gone before the handler runs (the node was frozen with the ask queued).
    node.shared.on_request_frame(asks(1..4, target), &out, 7);
    clock.lost(7);
    assert_eq!(
        replies(&out, 3).await,
        vec![
            (1, Err(WireError::NotMember)),
            (2, Err(WireError::NotMember)),
            (3, Err(WireError::NotMember))
        ]
    );
    // Read after: refused at once.
    node.shared.on_request_frame(asks(4..5, target), &out, 7);
    assert_eq!(replies(&out, 1).await, vec![(4, Err(WireError::NotMember))]);
    assert_eq!(count.load(Ordering::SeqCst), 0, "nothing was handled");
    // The new incarnation serves its own links, and still refuses the old ones.
    clock.granted(8, Instant::now() + TTL);
    assert_eq!(node.shared.link_epoch(), 8);
    node.shared.on_request_frame(asks(5..6, target), &out, 8);
    node.shared.on_request_frame(asks(6..7, target), &out, 7);
    assert_eq!(
        replies(&out, 2).await,
        vec![(5, Ok(1)), (6, Err(WireError::NotMember))]
    );
    node.shutdown().await;
}

#[actix_rt::test]
async fn requests_read_while_the_lease_is_in_doubt_wait_for_the_store() {
    let (node, clock, target, count) = fenced_node().await;
    // The node's last confirmed renewal is older than the TTL: it was frozen or starved.
    clock.granted(7, Instant::now() - Duration::from_millis(1));
    let out = outbox();
    node.shared.on_request_frame(asks(1..3, target), &out, 7);
    // Held, not handled: nothing has run yet (the store's answer has not come).
    assert_eq!(count.load(Ordering::SeqCst), 0);
    // The in-process discovery cannot say: the node serves, unconfirmed, in order.
    assert_eq!(replies(&out, 2).await, vec![(1, Ok(1)), (2, Ok(2))]);
    assert!(clock.lease().unconfirmed);
    // A renewal ends the unconfirmed state.
    clock.renewed(7, Instant::now() + TTL);
    assert!(!clock.lease().unconfirmed);
    node.shutdown().await;
}
