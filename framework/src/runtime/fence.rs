//! The fence's shell: a node that the cluster gave up on (its lease expired while it was
//! frozen, starved or cut off from the store) starts nothing it received under that lease.
//! The decisions are [`core::fence`](crate::core::fence)'s; this file reads the lease clock
//! and the time, holds frames while the lease is in doubt, asks the store, and refuses what
//! must not start.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;

use super::reply::send_reply;
use super::{lock, NodeShared};
use crate::core::fence::{admit, may_host, may_start, Admit};
use crate::core::wire::envelope::{Envelopes, Header, WireError};
use crate::core::wire::outbox::Outbox;
use crate::discovery::{LeaseCheck, LeaseClock};
use crate::ratelog::warn_limited;
use crate::stats::DropReason;

/// The most bytes of request frames held while the lease is in doubt; past it, frames are
/// refused (their asks answered as not handled) rather than held.
const HELD_BYTES: usize = 16 << 20;

/// Frames read while the node's lease was in doubt, waiting for the store's answer.
#[derive(Default)]
pub(crate) struct Held {
    frames: VecDeque<(Bytes, Arc<Outbox>, u64)>,
    bytes: usize,
    /// A confirmation is under way.
    confirming: bool,
}

/// The lease under which a remote ask was read, checked again when its handler is about to
/// run: an ask that waited in a mailbox while its node was frozen past its lease does not
/// start.
pub(crate) struct FenceStamp {
    clock: Arc<LeaseClock>,
    epoch: u64,
    /// For a keyed entity's message: the lease must be certainly alive for this margin more
    /// (`core::fence::may_host`), with no grace while the store is unreachable.
    host_margin: Option<std::time::Duration>,
}

impl FenceStamp {
    /// The stamp of a message to a keyed entity whose shard was taken under lease `epoch`.
    pub(crate) fn hosting(clock: Arc<LeaseClock>, epoch: u64, margin: std::time::Duration) -> Self {
        FenceStamp {
            clock,
            epoch,
            host_margin: Some(margin),
        }
    }

    /// Whether the ask may start at `now`.
    pub(crate) fn may_start(&self, now: Instant) -> bool {
        let lease = self.clock.lease();
        let now = self.clock.time(now);
        match self.host_margin {
            None => may_start(&lease, self.epoch, now),
            Some(margin) => may_host(&lease, self.epoch, now, margin),
        }
    }
}

impl NodeShared {
    /// The lease clock, once the node has joined a discovery with leases.
    fn clock(&self) -> Option<&Arc<LeaseClock>> {
        self.lease.get()
    }

    /// The lease a link accepted now belongs to (0 without leases).
    pub(crate) fn link_epoch(&self) -> u64 {
        self.clock().map_or(0, |c| c.epoch())
    }

    /// What to do with a frame just read from a link accepted under `epoch`.
    pub(crate) fn admit_frame(&self, epoch: u64) -> Admit {
        match self.clock() {
            None => Admit::Start,
            Some(clock) => admit(&clock.lease(), epoch, clock.time(Instant::now())),
        }
    }

    /// The stamp a remote ask read under `epoch` carries to its handler (`None` without
    /// leases: nothing to check).
    pub(crate) fn fence_stamp(&self, epoch: u64) -> Option<FenceStamp> {
        self.clock().map(|clock| FenceStamp {
            clock: clock.clone(),
            epoch,
            host_margin: None,
        })
    }

    /// Keeps a frame read while the lease is in doubt until the store has answered, and
    /// makes sure a confirmation is under way. Past [`HELD_BYTES`] the frame is refused.
    pub(crate) fn hold(self: &Arc<Self>, frame: Bytes, replies: &Arc<Outbox>, epoch: u64) {
        let mut held = lock(&self.held);
        if held.bytes + frame.len() > HELD_BYTES {
            drop(held);
            warn_limited!(node = %self.info.id, "too many requests held while this node's membership is in doubt; refused");
            self.refuse_frame(frame, replies);
            return;
        }
        held.bytes += frame.len();
        held.frames.push_back((frame, replies.clone(), epoch));
        if !held.confirming {
            held.confirming = true;
            tokio::spawn(confirm_and_release(Arc::downgrade(self)));
        }
    }

    /// Refuses every request of a frame without handling it: asks, spawns and orders are
    /// answered [`WireError::NotMember`]; tells, stops and watches are dropped.
    pub(crate) fn refuse_frame(&self, frame: Bytes, replies: &Arc<Outbox>) {
        let mut refused = 0;
        for envelope in Envelopes::new(frame) {
            let Ok((header, _)) = envelope else {
                self.stats.dropped(DropReason::Malformed, 1);
                continue;
            };
            refused += 1;
            match header {
                Header::Ask { id, .. }
                | Header::Spawn { id, .. }
                | Header::SpawnReplica { id, .. }
                | Header::Retire { id, .. } => {
                    send_reply::<()>(self, replies, id, Err(WireError::NotMember))
                }
                _ => {}
            }
        }
        if refused > 0 {
            self.stats.dropped(DropReason::Fenced, refused);
            warn_limited!(node = %self.info.id, refused, "refused requests received under a lost lease (this node was declared down: frozen, starved or cut off from etcd); none was handled");
        }
    }
}

/// Asks the store about the lease, then goes through the held frames again: started if the
/// lease is alive, refused if it is lost, started anyway (unconfirmed) if the store cannot be
/// reached, so that an outage of the store does not stop the cluster.
async fn confirm_and_release(weak: Weak<NodeShared>) {
    let Some(node) = weak.upgrade() else { return };
    let Some(clock) = node.clock().cloned() else {
        return;
    };
    let epoch = clock.epoch();
    let check = node
        .discovery
        .confirm_lease(&node.info.cluster, &node.info.id)
        .await;
    match check {
        Ok(LeaseCheck::Alive) => {
            if node.admit_frame(epoch) == Admit::Hold {
                // A backend that said alive without renewing the clock: do not ask
                // again and again; serve, as when the store cannot be reached.
                clock.unconfirmed(epoch);
            }
            tracing::info!(node = %node.info.id, "membership confirmed after a pause; held requests start");
        }
        Ok(LeaseCheck::Lost) => {
            tracing::warn!(node = %node.info.id, "this node's lease is gone (the cluster declared it down): requests received under it are refused");
        }
        Ok(LeaseCheck::Unreachable) | Err(_) => {
            clock.unconfirmed(epoch);
            tracing::warn!(node = %node.info.id, "cannot reach the discovery store to confirm this node's membership; serving unconfirmed until it answers");
        }
    }
    let frames = {
        let mut held = lock(&node.held);
        held.bytes = 0;
        held.confirming = false;
        std::mem::take(&mut held.frames)
    };
    // A frame held again (the lease fell in doubt again meanwhile) starts a new round.
    for (frame, replies, epoch) in frames {
        node.on_request_frame(frame, &replies, epoch);
    }
}
