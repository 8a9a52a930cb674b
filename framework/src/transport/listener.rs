//! The accepting socket, hardened: a cap on open connections, a deadline for a new
//! connection to become a link (TLS handshake and link handshake included), a pause instead of
//! a busy loop when the process runs out of file descriptors, and, with TLS, the handshake and
//! its checks before any byte reaches HTTP/2.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::tls::{explain, rustls_error, LinkTls};
use crate::ratelog::warn_limited;

/// The accepting side's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections open at once (links and connections still in their handshake).
    pub(crate) max_connections: usize,
    /// How long a new connection may take to become a link: TCP accepted to the link request
    /// accepted, TLS handshake included. Past it the connection is closed.
    pub(crate) handshake_timeout: Duration,
}

/// What the server knows of a connection, handed to each request on it.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    /// The caller's address.
    pub(crate) remote: SocketAddr,
    /// The caller's certificate (TLS links), checked against the node id it claims.
    pub(crate) peer_cert: Option<CertificateDer<'static>>,
    /// Set once a link request on this connection passed the handshake: the connection's
    /// deadline no longer applies.
    pub(crate) linked: Arc<AtomicBool>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection: plaintext or TLS, closed if it has not become a link by its
/// deadline, holding its place under the connection cap.
pub(crate) struct LinkIo {
    stream: Stream,
    info: ConnInfo,
    deadline: Option<Pin<Box<Sleep>>>,
    _permit: OwnedSemaphorePermit,
}

impl LinkIo {
    fn new(
        stream: Stream,
        info: ConnInfo,
        permit: OwnedSemaphorePermit,
        deadline: tokio::time::Instant,
    ) -> Self {
        LinkIo {
            stream,
            info,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            _permit: permit,
        }
    }

    /// Fails reads once the deadline to become a link has passed without a link.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> Result<(), io::Error> {
        if let Some(deadline) = &mut self.deadline {
            if self.info.linked.load(Ordering::Acquire) {
                self.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                warn_limited!(caller = %self.info.remote, "a connection did not become a link in time; closed");
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no link handshake in time",
                ));
            }
        }
        Ok(())
    }
}

impl Connected for LinkIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for LinkIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check_deadline(cx) {
            return Poll::Ready(Err(e));
        }
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LinkIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Whether an `accept` error means the process or the system is out of descriptors or
/// memory: accepting again at once would fail again, so the loop pauses.
fn exhausted(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// How long the accept loop pauses after running out of descriptors.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);

/// Accepts connections on `listener` until `shutdown`, and yields those that completed
/// their TLS handshake (if `tls`) as the server's incoming stream.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Option<LinkTls>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> ReceiverStream<io::Result<LinkIo>> {
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let (tcp, remote) = match accepted {
                Ok(ok) => ok,
                Err(e) if exhausted(&e) => {
                    warn_limited!(error = %e, "cannot accept a connection (out of file descriptors or memory); pausing accepts for 100 ms");
                    tokio::time::sleep(EXHAUSTED_PAUSE).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                warn_limited!(caller = %remote, limit = limits.max_connections, "connection refused: the node has its maximum of open connections");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
            let info = ConnInfo {
                remote,
                peer_cert: None,
                linked: Arc::new(AtomicBool::new(false)),
            };
            match &tls {
                None => {
                    let io = LinkIo::new(Stream::Plain(tcp), info, permit, deadline);
                    if tx.send(Ok(io)).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.material().server.clone());
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let peer_cert = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|certs| certs.first())
                                    .map(|c| c.clone().into_owned());
                                let info = ConnInfo { peer_cert, ..info };
                                let io = LinkIo::new(
                                    Stream::Tls(Box::new(stream)),
                                    info,
                                    permit,
                                    deadline,
                                );
                                let _ = tx.send(Ok(io)).await;
                            }
                            Ok(Err(e)) => {
                                let reason = match rustls_error(&e) {
                                    Some(tls) => explain(tls),
                                    None => e.to_string(),
                                };
                                warn_limited!(caller = %remote, %reason, "refused a TLS connection");
                            }
                            Err(_) => {
                                warn_limited!(caller = %remote, "refused a connection: no TLS handshake in time");
                            }
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Raises the process's soft limit of open files to its hard limit, once, where the system
/// allows it: a node holds one descriptor per link and per connection in its handshake, and
/// the usual soft limit (1,024) is easily reached. Logged at debug; a refusal changes nothing.
pub(crate) fn raise_open_files_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(unix)]
        {
            use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
            let limit = getrlimit(Resource::Nofile);
            if limit.current < limit.maximum {
                let raised = Rlimit {
                    current: limit.maximum,
                    maximum: limit.maximum,
                };
                match setrlimit(Resource::Nofile, raised) {
                    Ok(()) => tracing::debug!(from = ?limit.current, to = ?limit.maximum, "raised the soft limit of open files"),
                    Err(e) => tracing::debug!(error = %e, "cannot raise the soft limit of open files"),
                }
            }
        }
    });
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_of_open_files_is_raised_to_the_hard_one() {
        use rustix::process::{getrlimit, Resource};
        raise_open_files_limit();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(limit.current, limit.maximum, "{limit:?}");
    }

    #[test]
    fn running_out_of_descriptors_pauses_the_accept_loop() {
        for errno in [24, 23, 105, 12] {
            assert!(exhausted(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        assert!(
            !exhausted(&io::Error::from_raw_os_error(103)),
            "ECONNABORTED"
        );
    }
}
