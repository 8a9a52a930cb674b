//! The connecting side of a link: one per remote node, reconnecting with backoff.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::Recipient;
use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use tokio::sync::{oneshot, Notify};
use tonic::codec::Streaming;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

use super::codec::RawCodec;
use super::{
    CONNECTION_WINDOW, LINK_PATH, MD_CLUSTER, MD_FROM, MD_PROTOCOL, MD_TO, REFUSED, STREAM_WINDOW,
};
use crate::core::terminated::{Terminated, TerminationReason};
use crate::core::wire::envelope::{Envelopes, Header, WireError, WireTermination};
use crate::core::wire::outbox::{FrameStream, Outbox, PushError};
use crate::core::wire::PROTOCOL_VERSION;
use crate::error::Error;
use crate::id::{ActorId, NodeId};
use crate::stats::{DropReason, Stats};

/// What every link of a node shares.
#[derive(Debug)]
pub(crate) struct LinkConfig {
    /// Mutual TLS for the links' connections (`None`: plaintext h2c).
    pub(crate) tls: Option<super::tls::LinkTls>,
    pub(crate) local: NodeId,
    pub(crate) cluster: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_frame: usize,
    pub(crate) send_queue_bytes: usize,
    pub(crate) stats: Arc<Stats>,
    /// The node's metrics, when it has an admin listener.
    pub(crate) metrics: Option<Arc<crate::metrics::NodeMetrics>>,
}

const OPEN: u8 = 0;
const DOWN: u8 = 1;
const CLOSED: u8 = 2;

/// First and longest pause between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long replies are still read from a peer that left gracefully.
const LEAVE_GRACE: Duration = Duration::from_secs(2);

type PendingReply = oneshot::Sender<Result<Bytes, Error>>;

/// An ask waiting for its reply: the actor asked (id and declared type), its timeout, and
/// where the reply goes.
type Pending = ((ActorId, &'static str), Duration, PendingReply);

/// The link from this node to one peer.
pub(crate) struct PeerLink {
    pub(crate) node: NodeId,
    pub(crate) addr: SocketAddr,
    config: Arc<LinkConfig>,
    outbox: Arc<Outbox>,
    pending: Mutex<HashMap<u64, Pending>>,
    watches: Mutex<HashMap<u64, (ActorId, Recipient<Terminated>)>>,
    next_id: AtomicU64,
    state: AtomicU8,
    /// The peer left gracefully and the driver is reading its last replies.
    leaving: AtomicBool,
    /// Why the last connection attempt failed, until one succeeds: sends fail fast with it
    /// instead of waiting in the queue for the next attempt.
    unreachable: Mutex<Option<Error>>,
    state_changed: Notify,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink")
            .field("node", &self.node)
            .field("addr", &self.addr)
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PeerLink {
    /// A link to `node` at `addr`; unless `down`, its driver starts connecting at once.
    pub(crate) fn start(
        config: Arc<LinkConfig>,
        node: NodeId,
        addr: SocketAddr,
        down: bool,
    ) -> Arc<Self> {
        let link = Arc::new(PeerLink {
            node,
            addr,
            outbox: Arc::new(Outbox::new(config.max_frame, config.send_queue_bytes)),
            config,
            pending: Mutex::new(HashMap::new()),
            watches: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            state: AtomicU8::new(if down { DOWN } else { OPEN }),
            leaving: AtomicBool::new(false),
            unreachable: Mutex::new(None),
            state_changed: Notify::new(),
        });
        if !down {
            tokio::spawn(link.clone().run());
        }
        link
    }

    /// Whether messages may be queued now: the link is open and its last connection
    /// attempt did not fail.
    fn check_sendable(&self) -> Result<(), Error> {
        self.check_open()?;
        match &*lock(&self.unreachable) {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        match self.state.load(Ordering::Acquire) {
            OPEN => Ok(()),
            DOWN => Err(Error::NodeDown {
                node: self.node.clone(),
            }),
            _ => Err(Error::Shutdown),
        }
    }

    fn push_error(&self, e: PushError<String>) -> Error {
        match e {
            // Not a drop: the caller gets the message (or the ask's error) back.
            PushError::Full => {
                tracing::debug!(peer = %self.node, "send queue full; message refused");
                Error::MailboxFull {
                    node: self.node.clone(),
                    limit_bytes: self.outbox.limit(),
                }
            }
            PushError::Closed => self.check_open().err().unwrap_or(Error::Shutdown),
            PushError::TooLarge(size) => Error::MessageTooLarge {
                size,
                limit: self.config.max_frame,
            },
            PushError::Encode(e) => Error::Codec(e),
        }
    }

    /// Queues a one-way envelope.
    pub(crate) fn send(
        &self,
        header: &Header,
        payload: impl FnOnce(&mut BytesMut) -> Result<(), String>,
    ) -> Result<(), Error> {
        self.check_sendable()?;
        self.outbox
            .push(header, payload)
            .map_err(|e| self.push_error(e))
    }

    /// Queues a request and waits for its reply payload.
    pub(crate) async fn request(
        &self,
        actor: (ActorId, &'static str),
        timeout: Duration,
        header: impl FnOnce(u64) -> Header,
        payload: impl FnOnce(&mut BytesMut) -> Result<(), String>,
    ) -> Result<Bytes, Error> {
        self.check_sendable()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, (actor, timeout, tx));
        if let Err(e) = self.check_sendable() {
            lock(&self.pending).remove(&id);
            return Err(e);
        }
        if let Err(e) = self.outbox.push(&header(id), payload) {
            lock(&self.pending).remove(&id);
            return Err(self.push_error(e));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::NodeUnreachable {
                node: self.node.clone(),
                reason: "the link was dropped".to_owned(),
            }),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(Error::Timeout { after: timeout })
            }
        }
    }

    /// Asks the peer to report when `actor` terminates.
    pub(crate) fn watch(&self, actor: ActorId, watcher: Recipient<Terminated>) {
        if self.check_open().is_err() {
            watcher.do_send(Terminated {
                actor,
                node: self.node.clone(),
                reason: TerminationReason::NodeDown,
            });
            return;
        }
        let watch = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.watches).insert(watch, (actor, watcher));
        // If this push fails the link is failing too; the watch is re-sent on reconnect.
        let _ = self.outbox.push(
            &Header::Watch {
                watch,
                target: actor.0,
            },
            |_| Ok::<_, String>(()),
        );
    }

    /// Bytes waiting to be written to the peer.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.outbox.queued()
    }

    /// Waits until everything queued has been handed to the connection.
    pub(crate) async fn drained(&self) {
        if self.state.load(Ordering::Acquire) == OPEN {
            self.outbox.drained().await;
        }
    }

    /// Discovery declared the peer down (`graceful`: it left). New sends fail with `NodeDown`
    /// at once. After a crash, pending asks fail at once too; after a graceful leave, replies
    /// the peer sent before closing its end are still read, for up to [`LEAVE_GRACE`].
    pub(crate) fn mark_down(&self, graceful: bool) {
        if self.state.swap(DOWN, Ordering::AcqRel) != OPEN {
            return;
        }
        if graceful {
            self.leaving.store(true, Ordering::Release);
            self.outbox.close();
            self.state_changed.notify_waiters();
        } else {
            self.finish(TerminationReason::NodeDown, DropReason::NodeDown);
        }
    }

    /// The local node shuts down.
    pub(crate) fn close(&self) {
        if self.state.swap(CLOSED, Ordering::AcqRel) != OPEN {
            return;
        }
        self.finish(TerminationReason::NodeShutdown, DropReason::ShuttingDown);
    }

    fn finish(&self, reason: TerminationReason, drop_reason: DropReason) {
        self.outbox.close();
        let dropped = self.outbox.clear();
        if dropped > 0 {
            self.config.stats.dropped(drop_reason, dropped as u64);
            tracing::warn!(peer = %self.node, messages = dropped, "link ended with messages queued; dropped");
        }
        let error = self.check_open().err().unwrap_or(Error::Shutdown);
        self.fail_pending(&error);
        let watches: Vec<_> = lock(&self.watches).drain().collect();
        for (_, (actor, watcher)) in watches {
            watcher.do_send(Terminated {
                actor,
                node: self.node.clone(),
                reason,
            });
        }
        self.state_changed.notify_waiters();
    }

    fn fail_pending(&self, error: &Error) {
        let pending: Vec<_> = lock(&self.pending).drain().collect();
        for (_, (_, _, tx)) in pending {
            let _ = tx.send(Err(error.clone()));
        }
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> Error {
        Error::NodeUnreachable {
            node: self.node.clone(),
            reason: reason.to_string(),
        }
    }

    fn status_error(&self, status: tonic::Status) -> Error {
        match status.message().strip_prefix(REFUSED) {
            Some(reason) if status.code() == tonic::Code::FailedPrecondition => {
                Error::HandshakeRefused {
                    peer: format!("{} at {}", self.node, self.addr),
                    reason: reason.to_owned(),
                }
            }
            _ => self.unreachable(format!("{}: {}", status.code(), status.message())),
        }
    }

    /// `HandshakeRefused` if `error` comes from a TLS refusal (the peer refused our
    /// certificate, or we refused its), else `NodeUnreachable`.
    fn tls_or_unreachable(&self, error: &(dyn std::error::Error + 'static)) -> Error {
        match tls_refusal(error) {
            Some(reason) => Error::HandshakeRefused {
                peer: format!("{} at {}", self.node, self.addr),
                reason,
            },
            None => self.unreachable(error),
        }
    }

    /// Opens the stream and returns its response half.
    async fn connect(&self, epoch: u64) -> Result<Streaming<Bytes>, Error> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))
            .map_err(|e| self.unreachable(e))?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let connect = async {
            match &self.config.tls {
                None => endpoint.connect().await,
                Some(tls) => {
                    endpoint
                        .connect_with_connector(super::tls::Connector {
                            tls: tls.clone(),
                            addr: self.addr,
                            peer: self.node.clone(),
                        })
                        .await
                }
            }
        };
        let channel = tokio::time::timeout(self.config.connect_timeout, connect)
            .await
            .map_err(|_| {
                self.unreachable(format!(
                    "no connection to {} within {:?}",
                    self.addr, self.config.connect_timeout
                ))
            })?
            .map_err(|e| match tls_refusal(&e) {
                Some(reason) => Error::HandshakeRefused {
                    peer: format!("{} at {}", self.node, self.addr),
                    reason,
                },
                None => self.unreachable(connect_error(&e, self.addr)),
            })?;
        let limit = self.config.max_frame + 1024;
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        grpc.ready()
            .await
            .map_err(|e| self.tls_or_unreachable(&e))?;
        let mut request = tonic::Request::new(FrameStream {
            outbox: self.outbox.clone(),
            epoch,
        });
        let md = request.metadata_mut();
        md.insert(MD_PROTOCOL, MetadataValue::from(PROTOCOL_VERSION));
        md.insert_bin(
            MD_CLUSTER,
            MetadataValue::from_bytes(self.config.cluster.as_bytes()),
        );
        md.insert_bin(
            MD_FROM,
            MetadataValue::from_bytes(self.config.local.as_str().as_bytes()),
        );
        md.insert_bin(
            MD_TO,
            MetadataValue::from_bytes(self.node.as_str().as_bytes()),
        );
        let response = tokio::time::timeout(
            self.config.connect_timeout,
            grpc.streaming(request, PathAndQuery::from_static(LINK_PATH), RawCodec),
        )
        .await
        .map_err(|_| {
            self.unreachable(format!(
                "{} accepted the connection but did not answer the handshake within {:?}",
                self.addr, self.config.connect_timeout
            ))
        })?
        .map_err(|s| match tls_refusal(&s) {
            Some(reason) => Error::HandshakeRefused {
                peer: format!("{} at {}", self.node, self.addr),
                reason,
            },
            None => self.status_error(s),
        })?;
        Ok(response.into_inner())
    }

    /// The driver: connect, read replies, reconnect with backoff, until down or closed.
    async fn run(self: Arc<Self>) {
        let mut failures: u32 = 0;
        let mut connected_before = false;
        loop {
            if self.check_open().is_err() {
                if self.leaving.load(Ordering::Acquire) {
                    // Left while no stream was open: nothing more can arrive.
                    self.finish(TerminationReason::NodeDown, DropReason::NodeDown);
                }
                return;
            }
            let epoch = self.outbox.new_epoch();
            let error = match self.connect(epoch).await {
                Ok(inbound) => {
                    failures = 0;
                    *lock(&self.unreachable) = None;
                    self.resend_watches();
                    if let Some(m) = &self.config.metrics {
                        m.link_connected(self.node.as_str(), connected_before);
                    }
                    connected_before = true;
                    tracing::debug!(peer = %self.node, "link up");
                    self.read(inbound).await
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    *lock(&self.unreachable) = Some(e.clone());
                    // Nothing can be delivered now: fail fast rather than at the timeout.
                    let dropped = self.outbox.clear();
                    if dropped > 0 {
                        self.config
                            .stats
                            .dropped(DropReason::LinkFailed, dropped as u64);
                        tracing::warn!(peer = %self.node, messages = dropped, error = %e, "cannot connect; queued messages dropped");
                    }
                    e
                }
            };
            if self.leaving.load(Ordering::Acquire) {
                self.finish(TerminationReason::NodeDown, DropReason::NodeDown);
                return;
            }
            if self.check_open().is_err() {
                return;
            }
            if matches!(error, Error::HandshakeRefused { .. }) {
                tracing::error!(peer = %self.node, error = %error, "link refused");
            } else {
                tracing::warn!(peer = %self.node, error = %error, "link lost");
            }
            self.fail_pending(&error);
            let exp = failures.min(7);
            let delay = (BACKOFF_MIN * 2u32.pow(exp)).min(BACKOFF_MAX);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.state_changed.notified() => {}
            }
        }
    }

    /// Reads reply frames until the stream ends; returns why it ended.
    async fn read(&self, mut inbound: Streaming<Bytes>) -> Error {
        let mut grace: Option<tokio::time::Instant> = None;
        loop {
            let state_changed = self.state_changed.notified();
            if grace.is_none() && self.check_open().is_err() {
                if !self.leaving.load(Ordering::Acquire) {
                    return Error::Shutdown;
                }
                grace = Some(tokio::time::Instant::now() + LEAVE_GRACE);
            }
            let until =
                grace.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                frame = inbound.message() => match frame {
                    Ok(Some(frame)) => self.on_frame(frame),
                    Ok(None) => return self.unreachable("the peer closed the link"),
                    Err(status) => return self.status_error(status),
                },
                _ = state_changed => {}
                _ = tokio::time::sleep_until(until) => return self.unreachable("the peer left"),
            }
        }
    }

    fn resend_watches(&self) {
        let watches: Vec<_> = lock(&self.watches)
            .iter()
            .map(|(w, (a, _))| (*w, *a))
            .collect();
        for (watch, actor) in watches {
            let _ = self.outbox.push(
                &Header::Watch {
                    watch,
                    target: actor.0,
                },
                |_| Ok::<_, String>(()),
            );
        }
    }

    fn on_frame(&self, frame: Bytes) {
        for envelope in Envelopes::new(frame) {
            match envelope {
                Ok((Header::Reply { id, error }, payload)) => {
                    let Some((actor, timeout, tx)) = lock(&self.pending).remove(&id) else {
                        self.config.stats.dropped(DropReason::LateReply, 1);
                        tracing::debug!(peer = %self.node, ask = id, "reply for an ask that gave up");
                        continue;
                    };
                    let result = match error {
                        None => Ok(payload),
                        Some(e) => Err(self.wire_error(actor, timeout, e)),
                    };
                    let _ = tx.send(result);
                }
                Ok((Header::Terminated { watch, reason }, _)) => {
                    if let Some((actor, watcher)) = lock(&self.watches).remove(&watch) {
                        watcher.do_send(Terminated {
                            actor,
                            node: self.node.clone(),
                            reason: match reason {
                                WireTermination::Stopped => TerminationReason::Stopped,
                                WireTermination::NotFound => TerminationReason::NotFound,
                                WireTermination::NodeShutdown => TerminationReason::NodeShutdown,
                            },
                        });
                    }
                }
                Ok((other, _)) => {
                    self.config.stats.dropped(DropReason::Malformed, 1);
                    crate::ratelog::warn_limited!(peer = %self.node, header = ?other, "a request envelope arrived as a reply; dropped");
                }
                Err(e) => {
                    self.config.stats.dropped(DropReason::Malformed, 1);
                    crate::ratelog::warn_limited!(peer = %self.node, error = %e, "dropped a malformed reply envelope");
                }
            }
        }
    }

    fn wire_error(
        &self,
        (actor, actor_type): (ActorId, &'static str),
        timeout: Duration,
        e: WireError,
    ) -> Error {
        let node = self.node.clone();
        match e {
            WireError::ActorNotFound => Error::ActorNotFound {
                node,
                actor,
                actor_type,
            },
            WireError::ActorStopped => Error::ActorStopped {
                node,
                actor,
                actor_type,
            },
            WireError::UnknownMessage {
                actor_type,
                message,
            } => Error::UnknownMessage {
                actor_type,
                message: format!("wire id {message:#018x}"),
            },
            WireError::UnknownActorType { actor_type } => {
                Error::UnknownActorType { node, actor_type }
            }
            WireError::Codec(text) => Error::Codec(text),
            WireError::HandlerPanicked(message) => Error::HandlerPanicked {
                node,
                actor,
                actor_type,
                message,
            },
            WireError::DeadlineExpired => Error::Timeout { after: timeout },
            WireError::ShuttingDown => Error::NodeDown { node },
            WireError::Fenced => Error::Discovery(format!(
                "node {node} refused the order: the sender no longer leads the cluster"
            )),
            WireError::NotMember => Error::NodeFenced { node },
            WireError::NotOwner => Error::EntityUnavailable {
                kind: actor_type,
                key: String::new(),
                why: format!("node {node} does not host its shard (it moved or is moving)"),
            },
            WireError::EntityBufferFull => Error::EntityBufferFull {
                kind: actor_type,
                limit: 0,
            },
        }
    }
}

/// The TLS check that failed, in words, when a connection failed in its TLS handshake: a
/// refusal that retrying will not cure (a certificate for another node, another cluster's CA,
/// an expired certificate), so the caller gets `HandshakeRefused`.
fn tls_refusal(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(tls) = super::tls::rustls_error(io) {
                return Some(format!("TLS: {}", super::tls::explain(tls)));
            }
            // An alert that arrived after the handshake (TLS 1.3 sends the verdict on our
            // certificate then) reaches us as text.
            if let Some(alert) = io.to_string().strip_prefix("received fatal alert: ") {
                return Some(format!(
                    "TLS: the other side refused our certificate (TLS alert {alert}); its log says which check failed"
                ));
            }
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(format!("TLS: {}", super::tls::explain(tls)));
        }
        next = e.source();
    }
    None
}

/// A readable cause for a failed connection to `addr`: the operating system's verdict when
/// there is one ("connection refused by 127.0.0.1:40711"), else the chain of causes.
fn connect_error(error: &(dyn std::error::Error + 'static), addr: SocketAddr) -> String {
    use std::io::ErrorKind;
    let mut causes: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            let verdict = match io.kind() {
                ErrorKind::ConnectionRefused => Some(format!(
                    "connection refused by {addr} (is the node running and listening there?)"
                )),
                ErrorKind::ConnectionReset => Some(format!("connection reset by {addr}")),
                ErrorKind::TimedOut => Some(format!("connection to {addr} timed out")),
                ErrorKind::AddrNotAvailable => {
                    Some(format!("address {addr} is not available from this host"))
                }
                ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                    Some(format!("{addr} is unreachable from this host ({io})"))
                }
                _ => None,
            };
            if let Some(verdict) = verdict {
                return verdict;
            }
        }
        let text = e.to_string();
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        next = e.source();
    }
    format!("could not connect to {addr}: {}", causes.join(": "))
}

#[cfg(test)]
mod connect_error_tests {
    use super::*;

    /// tonic's error for a refused connection reads as the operating system's verdict, with
    /// the address, not as a debug dump of nested error structs.
    #[tokio::test]
    async fn a_refused_connection_names_the_address() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let error = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect_err("nothing listens there");
        let text = connect_error(&error, addr);
        assert_eq!(
            text,
            format!("connection refused by {addr} (is the node running and listening there?)")
        );
    }
}
