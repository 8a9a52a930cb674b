//! The accepting side of links: a tonic server with one hand-written streaming method.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codec::Streaming;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tower_service::Service;

use super::codec::RawCodec;
use super::listener::{ConnInfo, Limits};
use super::tls::LinkTls;
use super::{
    CONNECTION_WINDOW, LINK_PATH, MD_CLUSTER, MD_FROM, MD_PROTOCOL, MD_TO, REFUSED, STREAM_WINDOW,
};
use crate::core::wire::outbox::{FrameStream, Outbox};
use crate::core::wire::PROTOCOL_VERSION;
use crate::id::NodeId;

/// What the accepting side of links needs from the node above it: its identity for the
/// handshake, its limits, whether it still takes links, and where request frames go.
pub(crate) trait Acceptor: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &NodeId;
    /// This node's cluster.
    fn cluster(&self) -> &str;
    /// The largest frame accepted, and the bytes a reply queue may hold.
    fn limits(&self) -> (usize, usize);
    /// The listener's limits (connections, handshake deadline).
    fn listen_limits(&self) -> Limits;
    /// The node's link TLS material, if links are secured.
    fn tls(&self) -> Option<LinkTls>;
    /// Whether the node is shutting down (new links are refused).
    fn is_stopping(&self) -> bool;
    /// Fires (`true`) when the node shuts down.
    fn shutdown_signal(&self) -> watch::Receiver<bool>;
    /// Records a new link's reply queue (flushed at shutdown).
    fn track_inbound(&self, outbox: &Arc<Outbox>);
    /// The node's membership epoch (its lease) that a link accepted now belongs to; every
    /// frame read from the link is handed up with it.
    fn link_epoch(&self) -> u64;
    /// Handles one frame of requests read from a link of `epoch`; replies go to `replies`.
    fn on_request_frame(self: &Arc<Self>, frame: Bytes, replies: &Arc<Outbox>, epoch: u64);
    /// Runs the task that reads one accepted link (next to the node's actors if it can, so
    /// that handing a message to an actor wakes it without crossing task sets).
    fn spawn_reader<F: std::future::Future<Output = ()> + Send + 'static>(
        self: &Arc<Self>,
        reader: F,
    );
}

/// Concurrent HTTP/2 streams one connection may open.
const MAX_STREAMS_PER_CONNECTION: u32 = 8;
/// The largest header list (the link handshake is a few hundred bytes).
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Starts the transport server on `listener`; it stops with the node.
pub(crate) fn serve<N: Acceptor>(node: Arc<N>, listener: TcpListener) {
    let mut shutdown = node.shutdown_signal();
    let mut hard_stop = node.shutdown_signal();
    let incoming = super::listener::incoming(
        listener,
        node.tls(),
        node.listen_limits(),
        node.shutdown_signal(),
    );
    let service = MeshService {
        node,
        peers: Arc::new(PeerLinks::default()),
    };
    tokio::spawn(async move {
        let server = tonic::transport::Server::builder()
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            // A peer needs one link stream per connection (a few while it reconnects).
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .http2_max_header_list_size(Some(MAX_HEADER_LIST))
            .http2_max_pending_accept_reset_streams(Some(16))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            });
        tokio::select! {
            result = server => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "transport server failed");
                }
            }
            // Graceful shutdown waits for open streams; do not wait for ever.
            _ = async {
                let _ = hard_stop.wait_for(|stop| *stop).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            } => {}
        }
    });
}

/// The tonic service: routes the link method, refuses everything else.
struct MeshService<N> {
    node: Arc<N>,
    peers: Arc<PeerLinks>,
}

/// Links open per authenticated peer node (a peer needs one; a few while it reconnects).
const MAX_LINKS_PER_PEER: usize = 4;

/// How many links each authenticated peer has open. Only a TLS-authenticated id is counted:
/// a plaintext caller could claim a peer's id to use up that peer's share.
#[derive(Default)]
struct PeerLinks(std::sync::Mutex<std::collections::HashMap<String, usize>>);

/// One counted link of a peer; uncounted on drop (when its reader ends).
struct PeerLink {
    peers: Arc<PeerLinks>,
    peer: String,
}

impl PeerLinks {
    fn open(self: &Arc<Self>, peer: &str) -> Option<PeerLink> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(peer.to_owned()).or_default();
        if *count >= MAX_LINKS_PER_PEER {
            return None;
        }
        *count += 1;
        Some(PeerLink {
            peers: self.clone(),
            peer: peer.to_owned(),
        })
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        let mut open = self.peers.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

impl<N> Clone for MeshService<N> {
    fn clone(&self) -> Self {
        MeshService {
            node: self.node.clone(),
            peers: self.peers.clone(),
        }
    }
}

impl<N> NamedService for MeshService<N> {
    const NAME: &'static str = "actormesh.Mesh";
}

impl<N: Acceptor> Service<http::Request<Body>> for MeshService<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != LINK_PATH {
            let path = request.uri().path().to_owned();
            return Box::pin(async move {
                Ok(
                    Status::unimplemented(format!("actormesh serves {LINK_PATH} only, not {path}"))
                        .into_http(),
                )
            });
        }
        let node = self.node.clone();
        let peers = self.peers.clone();
        Box::pin(async move {
            let limit = node.limits().0 + 1024;
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit);
            Ok(grpc.streaming(LinkHandler { node, peers }, request).await)
        })
    }
}

/// Accepts one link: checks the handshake, then reads requests until the stream ends.
struct LinkHandler<N> {
    node: Arc<N>,
    peers: Arc<PeerLinks>,
}

impl<N: Acceptor> Service<Request<Streaming<Bytes>>> for LinkHandler<N> {
    type Response = Response<ReplyStream>;
    type Error = Status;
    type Future = Ready<Result<Response<ReplyStream>, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        ready(accept(&self.node, &self.peers, request))
    }
}

fn bin(request: &Request<Streaming<Bytes>>, key: &str) -> String {
    request
        .metadata()
        .get_bin(key)
        .and_then(|v| v.to_bytes().ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Checks the caller's protocol version, cluster and expected node id.
pub(crate) fn check_handshake<N: Acceptor>(
    node: &N,
    protocol: Option<&str>,
    cluster: &str,
    to: &str,
) -> Result<(), Refusal> {
    let theirs = protocol.and_then(|p| p.parse::<u32>().ok());
    // What the caller sent is echoed in refusals and logs: bounded and escaped, so that a
    // caller can neither inflate the answer nor forge log lines.
    let (cluster_shown, to_shown) = (shown(cluster), shown(to));
    if theirs != Some(PROTOCOL_VERSION) {
        let public = format!(
            "protocol version mismatch: this node speaks version {PROTOCOL_VERSION}, the caller {}; run the same actormesh protocol on every node",
            protocol.map_or_else(|| "none".to_owned(), shown)
        );
        return Err(Refusal {
            detail: format!("{public} (node {})", node.node_id()),
            public,
        });
    }
    if cluster != node.cluster() {
        return Err(Refusal {
            detail: format!(
                "cluster name mismatch: node {} belongs to cluster `{}`, the caller to `{cluster_shown}`",
                node.node_id(),
                node.cluster()
            ),
            public: format!("this node does not belong to cluster `{cluster_shown}`"),
        });
    }
    if to != node.node_id().as_str() {
        return Err(Refusal {
            detail: format!(
                "node id mismatch: this address belongs to node `{}`, not `{to_shown}` (stale address?)",
                node.node_id()
            ),
            public: format!("this address does not belong to node `{to_shown}` (stale address?)"),
        });
    }
    Ok(())
}

/// `text` as it may be echoed: at most 64 characters, control characters escaped.
fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if text.chars().nth(64).is_some() {
        out.push_str("...");
    }
    out
}

/// Why a link handshake was refused: in full (logged, and told to an authenticated caller),
/// and without anything about this node that the caller did not already say (told to an
/// unauthenticated one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) detail: String,
    pub(crate) public: String,
}

fn accept<N: Acceptor>(
    node: &Arc<N>,
    peers: &Arc<PeerLinks>,
    request: Request<Streaming<Bytes>>,
) -> Result<Response<ReplyStream>, Status> {
    let protocol = request
        .metadata()
        .get(MD_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let cluster = bin(&request, MD_CLUSTER);
    let from = bin(&request, MD_FROM);
    let from_shown = shown(&from);
    let to = bin(&request, MD_TO);
    let info = request.extensions().get::<ConnInfo>().cloned();
    let remote = info
        .as_ref()
        .map_or_else(|| "unknown".to_owned(), |i| i.remote.to_string());
    // With TLS, the caller is who its certificate says, and must claim that id.
    let authenticated = match node.tls() {
        None => false,
        Some(_) => {
            let names_caller = info
                .as_ref()
                .and_then(|i| i.peer_cert.as_ref())
                .is_some_and(|cert| super::tls::names(cert, &NodeId::new(from.clone())));
            if !names_caller {
                crate::ratelog::warn_limited!(node = %node.node_id(), %remote, claimed = %from_shown, "refused a link: the caller's certificate does not name the node id it claims");
                return Err(Status::permission_denied(format!(
                    "{REFUSED}the certificate presented does not name the node id claimed"
                )));
            }
            true
        }
    };
    if let Err(refusal) = check_handshake(&**node, protocol.as_deref(), &cluster, &to) {
        crate::ratelog::warn_limited!(node = %node.node_id(), %remote, caller = %from_shown, reason = %refusal.detail, "refused a link");
        // Only an authenticated caller learns this node's side of a mismatch.
        let told = if authenticated {
            refusal.detail
        } else {
            refusal.public
        };
        return Err(Status::failed_precondition(format!("{REFUSED}{told}")));
    }
    if let Some(info) = &info {
        info.linked
            .store(true, std::sync::atomic::Ordering::Release);
    }
    if node.is_stopping() {
        return Err(Status::unavailable(format!(
            "node {} is shutting down",
            node.node_id()
        )));
    }
    let counted = if authenticated {
        match peers.open(&from) {
            Some(counted) => Some(counted),
            None => {
                crate::ratelog::warn_limited!(node = %node.node_id(), %remote, caller = %from_shown, limit = MAX_LINKS_PER_PEER, "refused a link: the peer has its maximum of links open");
                return Err(Status::resource_exhausted(format!(
                    "{REFUSED}too many links open from node `{from_shown}`"
                )));
            }
        }
    } else {
        None
    };
    let (max_frame, queue_bytes) = node.limits();
    let outbox = Arc::new(Outbox::new(max_frame, queue_bytes));
    node.track_inbound(&outbox);
    let epoch = node.link_epoch();
    tracing::debug!(node = %node.node_id(), caller = %from, epoch, "accepted a link");
    node.spawn_reader(read_link(
        node.clone(),
        request.into_inner(),
        outbox.clone(),
        from,
        epoch,
        counted,
    ));
    Ok(Response::new(ReplyStream(FrameStream { outbox, epoch: 0 })))
}

async fn read_link<N: Acceptor>(
    node: Arc<N>,
    mut inbound: Streaming<Bytes>,
    outbox: Arc<Outbox>,
    from: String,
    epoch: u64,
    _counted: Option<PeerLink>,
) {
    let mut shutdown = node.shutdown_signal();
    loop {
        tokio::select! {
            frame = inbound.message() => match frame {
                Ok(Some(frame)) => node.on_request_frame(frame, &outbox, epoch),
                Ok(None) => break,
                Err(status) => {
                    crate::ratelog::warn_limited!(node = %node.node_id(), caller = %from, error = %status, "link from a peer failed");
                    break;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    outbox.close();
}

/// The response body of a link: the reply outbox's frames.
pub(crate) struct ReplyStream(FrameStream);

impl Stream for ReplyStream {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx).map(|f| f.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Node;

    #[test]
    fn an_authenticated_peer_has_a_bounded_share_of_links() {
        let peers = Arc::new(PeerLinks::default());
        let held: Vec<_> = (0..MAX_LINKS_PER_PEER)
            .map(|_| peers.open("n2").expect("within the share"))
            .collect();
        assert!(peers.open("n2").is_none(), "one more is refused");
        assert!(peers.open("n3").is_some(), "another peer has its own share");
        drop(held);
        assert!(peers.open("n2").is_some(), "closed links free their place");
    }

    #[actix_rt::test]
    async fn handshake_refusals_name_both_sides_but_tell_a_stranger_nothing_new() {
        let node = Node::builder()
            .cluster("blue")
            .node_id("n1")
            .start()
            .await
            .unwrap();
        let shared = &*node.shared;
        let v = PROTOCOL_VERSION.to_string();
        assert_eq!(check_handshake(shared, Some(&v), "blue", "n1"), Ok(()));
        let e = check_handshake(shared, Some("999"), "blue", "n1").unwrap_err();
        assert!(
            e.detail.contains("protocol version mismatch") && e.detail.contains("999"),
            "{e:?}"
        );
        let e = check_handshake(shared, None, "blue", "n1").unwrap_err();
        assert!(e.detail.contains("none"), "{e:?}");
        let e = check_handshake(shared, Some(&v), "green", "n1").unwrap_err();
        assert!(
            e.detail.contains("`blue`") && e.detail.contains("`green`"),
            "{e:?}"
        );
        // What an unauthenticated caller is told names only what it said itself.
        assert!(
            !e.public.contains("blue") && !e.public.contains("n1") && e.public.contains("green"),
            "{e:?}"
        );
        let e = check_handshake(shared, Some(&v), "blue", "n2").unwrap_err();
        assert!(e.detail.contains("node id mismatch"), "{e:?}");
        // What the caller sent comes back bounded and escaped.
        let long = format!("evil\n{}", "x".repeat(10_000));
        let e = check_handshake(shared, Some(&v), &long, "n1").unwrap_err();
        assert!(
            e.public.len() < 200 && !e.public.contains('\n') && e.public.contains("evil\\n"),
            "{e:?}"
        );
        assert!(
            !e.public.contains("n1") && !e.public.contains("blue"),
            "{e:?}"
        );
        node.shutdown().await;
    }
}
