//! Mutual TLS on links: who may connect, what each refusal says, rotation without restart.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actormesh::prelude::*;
use actormesh::{DevCa, LinkTls};
use common::link::{handshake, link_request, RawBytes};
use common::*;

const DAY: Duration = Duration::from_secs(86_400);

async fn tls_node(discovery: &MemoryDiscovery, id: &str, tls: LinkTls) -> Node {
    Node::builder()
        .cluster("secure")
        .node_id(id)
        .discovery(discovery.clone())
        .tls(tls)
        .start()
        .await
        .unwrap_or_else(|e| panic!("node {id} starts: {e}"))
}

/// What `node` gets when it asks the counter registered as `ctr` (and must fail).
async fn refused_ask(node: &Node) -> Error {
    node.lookup::<Counter>("ctr")
        .await
        .unwrap()
        .ask(Add(1))
        .await
        .unwrap_err()
}

/// `a` asks a counter registered on `b` under `name`.
async fn counter_on(b: &Node, a: &Node, name: &str) -> ActorRef<Counter> {
    a.wait_for_node(b.id(), Duration::from_secs(5))
        .await
        .unwrap();
    counter_seen_from(b, a, name).await
}

#[actix::test]
async fn nodes_of_one_ca_talk_over_mutual_tls() {
    let ca = DevCa::new("secure").unwrap();
    let d = MemoryDiscovery::new();
    let a = tls_node(&d, "a", ca.link_tls("a").unwrap()).await;
    let b = tls_node(&d, "b", ca.link_tls("b").unwrap()).await;
    let counter = counter_on(&b, &a, "ctr").await;
    assert_eq!(counter.ask(Add(2)).await.unwrap(), 2);
    // And the other way round, on b's own link to a.
    let back = counter_on(&a, &b, "back").await;
    assert_eq!(back.ask(Add(5)).await.unwrap(), 5);
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn a_node_refuses_to_start_with_a_certificate_for_another_node() {
    let ca = DevCa::new("secure").unwrap();
    let err = Node::builder()
        .node_id("a")
        .tls(ca.link_tls("mallory").unwrap())
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls(text) if text.contains("does not name node id `a`")),
        "{err}"
    );
}

#[actix::test]
async fn another_clusters_ca_is_refused_with_a_typed_error_and_the_cluster_goes_on() {
    let ca = DevCa::new("secure").unwrap();
    let other = DevCa::new("secure").unwrap();
    let d = MemoryDiscovery::new();
    let a = tls_node(&d, "a", ca.link_tls("a").unwrap()).await;
    let b = tls_node(&d, "b", ca.link_tls("b").unwrap()).await;
    let intruder = tls_node(&d, "x", other.link_tls("x").unwrap()).await;
    intruder
        .wait_for_node(b.id(), Duration::from_secs(5))
        .await
        .unwrap();
    let counter = b.spawn(Counter::default());
    b.register_name("ctr", &counter).await.unwrap();
    let err = refused_ask(&intruder).await;
    assert!(
        matches!(&err, Error::HandshakeRefused { reason, .. } if reason.contains("not signed by this cluster's CA")),
        "{err}"
    );
    // b handled nothing from it, and a legitimate peer is served as before.
    let from_a = a.lookup::<Counter>("ctr").await.unwrap();
    assert_eq!(from_a.ask(Add(1)).await.unwrap(), 1);
    for node in [intruder, b, a] {
        node.shutdown().await;
    }
}

#[actix::test]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let ca = DevCa::new("secure").unwrap();
    let d = MemoryDiscovery::new();
    let b = tls_node(&d, "b", ca.link_tls("b").unwrap()).await;
    let counter = b.spawn(Counter::default());
    b.register_name("ctr", &counter).await.unwrap();
    let now = SystemTime::now();
    for (id, from, to, why) in [
        ("old", now - 30 * DAY, now - DAY, "expired"),
        ("early", now + DAY, now + 30 * DAY, "not valid yet"),
    ] {
        let cert = ca.node_valid(id, from, to).unwrap();
        let tls = LinkTls::from_pem(ca.ca_pem(), &cert.cert_pem, &cert.key_pem).unwrap();
        let node = tls_node(&d, id, tls).await;
        node.wait_for_node(b.id(), Duration::from_secs(5))
            .await
            .unwrap();
        let err = refused_ask(&node).await;
        // The accepting side logs which check failed ("the certificate has expired"); the
        // connecting side learns that its certificate was refused.
        assert!(
            matches!(&err, Error::HandshakeRefused { reason, .. } if reason.contains("refused our certificate")),
            "{why}: {err}"
        );
        node.shutdown().await;
    }
    assert_eq!(counter.ask(Add(0)).await.unwrap(), 0, "nothing got through");
    b.shutdown().await;
}

#[actix::test]
async fn a_client_without_a_certificate_is_refused_before_any_envelope_is_read() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::ServerName;
    let ca = DevCa::new("secure").unwrap();
    let d = MemoryDiscovery::new();
    let b = tls_node(&d, "b", ca.link_tls("b").unwrap()).await;
    // A TLS client that trusts the CA but has no certificate of its own.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(b.addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let outcome = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = connector
            .connect(ServerName::try_from("b").unwrap(), tcp)
            .await?;
        // TLS 1.3: the server's refusal arrives with the first read.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        let mut buf = [0u8; 64];
        tls.read(&mut buf).await
    }
    .await;
    assert!(outcome.is_err(), "refused: {outcome:?}");
    // The node goes on serving its peers.
    let a = tls_node(&d, "a", ca.link_tls("a").unwrap()).await;
    let counter = counter_on(&b, &a, "ctr").await;
    assert_eq!(counter.ask(Add(3)).await.unwrap(), 3);
    a.shutdown().await;
    b.shutdown().await;
}

/// Rotation without restart: new files are picked up by the next connection, links already
/// open keep working, and asks under load lose nothing meanwhile.
#[actix::test]
async fn certificate_files_rotate_without_restart_and_lose_nothing() {
    let dir = std::env::temp_dir().join(format!("actormesh-tls-{}", std::process::id()));
    let ca = DevCa::new("secure").unwrap();
    ca.write(&dir, &["a", "b"]).unwrap();
    let files = |node: &str| {
        LinkTls::from_files(
            dir.join("ca.pem"),
            dir.join(format!("{node}.pem")),
            dir.join(format!("{node}.key")),
        )
        .unwrap()
    };
    let d = MemoryDiscovery::new();
    let a = tls_node(&d, "a", files("a")).await;
    let b = tls_node(&d, "b", files("b")).await;
    let counter = counter_on(&b, &a, "ctr").await;

    // Asks under load while b's files change twice.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let (counter, stop, sent) = (counter.clone(), stop.clone(), sent.clone());
        actix::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..100_000 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                match counter.ask(Add(1)).await {
                    Ok(_) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        })
    };
    let other = DevCa::new("secure").unwrap();
    for round in 0..2 {
        let before = sent.load(Ordering::Relaxed);
        eventually("the load makes progress", Duration::from_secs(10), || {
            let now = sent.load(Ordering::Relaxed);
            async move { (now >= before + 200).then_some(()).ok_or(now) }
        })
        .await;
        // b now presents a certificate of another CA (round 0), then of its own again.
        let issuer = if round == 0 { &other } else { &ca };
        let cert = issuer.node("b").unwrap();
        std::fs::write(dir.join("b.pem"), &cert.cert_pem).unwrap();
        std::fs::write(dir.join("b.key"), &cert.key_pem).unwrap();
        // A new connection to b uses the new certificate: a new node trusting only the
        // cluster CA is refused in round 0 and accepted in round 1.
        let id = format!("c{round}");
        let c = tls_node(&d, &id, ca.link_tls(&id).unwrap()).await;
        c.wait_for_node(b.id(), Duration::from_secs(5))
            .await
            .unwrap();
        let outcome = c.lookup::<Counter>("ctr").await.unwrap().ask(Add(0)).await;
        if round == 0 {
            assert!(
                matches!(&outcome, Err(Error::HandshakeRefused { .. })),
                "b presents the rotated certificate to new connections: {outcome:?}"
            );
        } else {
            assert!(outcome.is_ok(), "rotated back: {outcome:?}");
        }
        c.shutdown().await;
    }
    stop.store(true, Ordering::Release);
    let failures = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "the open link kept working: {failures:?}"
    );
    let total = sent.load(Ordering::Relaxed);
    assert_eq!(counter.ask(Add(0)).await.unwrap(), total, "nothing lost");
    a.shutdown().await;
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS connection to `addr` presenting `cert` (no name check of the server: the test is
/// about what the server does).
async fn raw_tls_channel(
    ca: &DevCa,
    cert: &actormesh::NodeCert,
    server: &str,
    addr: std::net::SocketAddr,
) -> tonic::transport::Channel {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server = ServerName::try_from(server.to_owned()).unwrap();
    let connect = RawConnector {
        connector,
        server,
        addr,
    };
    tonic::transport::Endpoint::from_static("http://peer")
        .connect_with_connector(connect)
        .await
        .unwrap()
}

/// TCP + TLS to one address, for tonic.
#[derive(Clone)]
struct RawConnector {
    connector: tokio_rustls::TlsConnector,
    server: rustls::pki_types::ServerName<'static>,
    addr: std::net::SocketAddr,
}

impl tower_service::Service<http::Uri> for RawConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, std::io::Error>> + Send>,
    >;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::io::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(this.addr).await?;
            let tls = this.connector.connect(this.server, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// A peer with a valid certificate for one node id cannot claim another, and an
/// authenticated peer's refusals are detailed while nothing it did not know leaks before.
#[actix::test]
async fn a_certificate_for_one_node_cannot_claim_another() {
    let ca = DevCa::new("secure").unwrap();
    let d = MemoryDiscovery::new();
    let b = tls_node(&d, "b", ca.link_tls("b").unwrap()).await;
    let protocol = b.info().protocol;
    let mallory = ca.node("mallory").unwrap();
    let channel = raw_tls_channel(&ca, &mallory, "b", b.addr()).await;
    let refused = link_request(channel.clone(), protocol, "secure", "a", "b")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("does not name the node id claimed"),
        "{refused:?}"
    );
    // Claiming its own id, it is authenticated: a wrong cluster is explained in full.
    let wrong = link_request(channel, protocol, "elsewhere", "mallory", "b")
        .await
        .unwrap_err();
    assert!(
        wrong.message().contains("`secure`") && wrong.message().contains("`elsewhere`"),
        "{wrong:?}"
    );
    b.shutdown().await;
}

/// An authenticated peer may hold a few links at once, not more.
#[actix::test]
async fn an_authenticated_peer_holds_at_most_a_few_links() {
    let ca = DevCa::new("secure").unwrap();
    let d = MemoryDiscovery::new();
    let b = tls_node(&d, "b", ca.link_tls("b").unwrap()).await;
    let protocol = b.info().protocol;
    let peer = ca.node("peer").unwrap();
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..6 {
        let channel = raw_tls_channel(&ca, &peer, "b", b.addr()).await;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        // A request stream that stays open: the link stays open.
        let mut request = tonic::Request::new(tokio_stream::pending::<bytes::Bytes>());
        handshake(&mut request, protocol, "secure", "peer", "b");
        match grpc
            .streaming(
                request,
                http::uri::PathAndQuery::from_static("/actormesh.Mesh/Link"),
                RawBytes,
            )
            .await
        {
            Ok(response) => held.push(response),
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("one link too many is refused");
    assert_eq!(held.len(), 4, "four links held");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    b.shutdown().await;
}
