//! Mutual TLS on links: one certificate authority per cluster, one certificate per node that
//! names the node id (a DNS subject alternative name equal to the id).
//!
//! Both ends verify the other: the connecting node checks that the accepting node's
//! certificate is signed by the cluster CA and names the node it meant to reach (the id it
//! found in discovery); the accepting node checks that the caller presented a certificate
//! signed by the cluster CA, within its validity, and, before it reads any envelope, that the
//! certificate names the node id the caller claims in the link handshake.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::SystemTime;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::error::Error;
use crate::id::NodeId;

/// The TLS material of a node for its links: the cluster's CA certificate(s), this node's
/// certificate chain and its private key, all PEM.
///
/// Loaded [from files](Self::from_files), it is *rotated without restart*: when any of the
/// three files changes, the next connection (accepted or opened) uses the new material, and
/// links already open keep working until they reconnect. [`rotate`](Self::rotate) does the
/// same from PEM in memory. Give it to [`NodeBuilder::tls`](crate::NodeBuilder::tls).
///
/// The node's certificate must name its node id as a DNS subject alternative name, so node
/// ids used with TLS must be valid DNS names (letters, digits, `-` and `.`).
#[derive(Clone)]
pub struct LinkTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: Option<Files>,
    state: RwLock<State>,
}

#[derive(Clone)]
struct Files {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

struct State {
    material: Arc<Material>,
    stamps: Option<Stamps>,
}

type Stamps = [Option<SystemTime>; 3];

/// One loaded generation of TLS material.
pub(crate) struct Material {
    pub(crate) server: Arc<ServerConfig>,
    pub(crate) client: Arc<ClientConfig>,
    own: CertificateDer<'static>,
}

impl fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("LinkTls");
        if let Some(files) = &self.inner.files {
            d.field("ca", &files.ca)
                .field("cert", &files.cert)
                .field("key", &files.key);
        }
        d.finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: &str, e: impl fmt::Display) -> Error {
    Error::Tls(format!("{what}: {e}"))
}

impl Material {
    fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Self, Error> {
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca)
            .collect::<Result<_, _>>()
            .map_err(|e| tls_error("the CA certificate is not valid PEM", e))?;
        if cas.is_empty() {
            return Err(Error::Tls("no CA certificate in the CA file".into()));
        }
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| tls_error("the CA certificate cannot be used", e))?;
        }
        let roots = Arc::new(roots);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(|e| tls_error("the node certificate is not valid PEM", e))?;
        let own = chain
            .first()
            .cloned()
            .ok_or_else(|| Error::Tls("no certificate in the node certificate file".into()))?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| tls_error("the node key is not a valid PEM private key", e))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| tls_error("cannot verify clients with this CA", e))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("TLS versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| tls_error("the node certificate and key do not match", e))?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("TLS versions", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls_error("the node certificate and key do not match", e))?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Material {
            server: Arc::new(server),
            client: Arc::new(client),
            own,
        })
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Tls(format!("cannot read the {what} {}: {e}", path.display())))
}

fn stamps(files: &Files) -> Stamps {
    let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    [at(&files.ca), at(&files.cert), at(&files.key)]
}

impl LinkTls {
    /// Loads the CA certificate(s), the node certificate chain and the node key from PEM
    /// files, and watches them: a change is picked up by the next connection.
    pub fn from_files(
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        let files = Files {
            ca: ca.as_ref().to_owned(),
            cert: cert.as_ref().to_owned(),
            key: key.as_ref().to_owned(),
        };
        let stamps = stamps(&files);
        let material = Material::from_pem(
            &read(&files.ca, "CA certificate")?,
            &read(&files.cert, "node certificate")?,
            &read(&files.key, "node key")?,
        )?;
        Ok(LinkTls {
            inner: Arc::new(Inner {
                files: Some(files),
                state: RwLock::new(State {
                    material: Arc::new(material),
                    stamps: Some(stamps),
                }),
            }),
        })
    }

    /// The same from PEM text in memory (no files to watch; [`rotate`](Self::rotate) to
    /// change it).
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<Self, Error> {
        let material = Material::from_pem(ca.as_bytes(), cert.as_bytes(), key.as_bytes())?;
        Ok(LinkTls {
            inner: Arc::new(Inner {
                files: None,
                state: RwLock::new(State {
                    material: Arc::new(material),
                    stamps: None,
                }),
            }),
        })
    }

    /// Replaces the material: new connections use it, open links keep theirs until they
    /// reconnect. On error nothing changes.
    pub fn rotate(&self, ca: &str, cert: &str, key: &str) -> Result<(), Error> {
        let material = Material::from_pem(ca.as_bytes(), cert.as_bytes(), key.as_bytes())?;
        let mut state = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
        state.material = Arc::new(material);
        Ok(())
    }

    /// Reads the files again now (they are also read again by the next connection after they
    /// change). On error the material in use stays.
    pub fn reload(&self) -> Result<(), Error> {
        let Some(files) = &self.inner.files else {
            return Ok(());
        };
        let stamps = stamps(files);
        let material = Material::from_pem(
            &read(&files.ca, "CA certificate")?,
            &read(&files.cert, "node certificate")?,
            &read(&files.key, "node key")?,
        )?;
        let mut state = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
        state.material = Arc::new(material);
        state.stamps = Some(stamps);
        Ok(())
    }

    /// The material for a new connection: read again first if the files changed.
    pub(crate) fn material(&self) -> Arc<Material> {
        if let Some(files) = &self.inner.files {
            let now = stamps(files);
            let changed = {
                let state = self.inner.state.read().unwrap_or_else(|p| p.into_inner());
                state.stamps != Some(now)
            };
            if changed {
                match self.reload() {
                    Ok(()) => tracing::info!("link TLS material reloaded (changed files)"),
                    Err(e) => {
                        // Half-written files (a rotation in progress) fail here: keep the
                        // material in use, try again with the next connection.
                        crate::ratelog::warn_limited!(error = %e, "link TLS files changed but cannot be loaded; the previous certificate stays in use");
                    }
                }
            }
        }
        self.inner
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .material
            .clone()
    }

    /// Checks that this node's own certificate names `node`.
    pub(crate) fn check_own_name(&self, node: &NodeId) -> Result<(), Error> {
        let material = self.material();
        if names(&material.own, node) {
            Ok(())
        } else {
            Err(Error::Tls(format!(
                "the link certificate does not name node id `{node}` (its DNS subject alternative names must include it); make a certificate for this node"
            )))
        }
    }
}

/// Whether `cert` names node `node` (as a DNS subject alternative name).
pub(crate) fn names(cert: &CertificateDer<'_>, node: &NodeId) -> bool {
    let Ok(name) = ServerName::try_from(node.as_str()) else {
        return false;
    };
    let Ok(parsed) = ParsedCertificate::try_from(cert) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// Says in words which check of a TLS handshake failed.
pub(crate) fn explain(error: &rustls::Error) -> String {
    match error {
        rustls::Error::NoCertificatesPresented => {
            "the caller presented no client certificate (mutual TLS is required)".into()
        }
        rustls::Error::InvalidCertificate(why) => match why {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the certificate is not valid yet".into()
            }
            CertificateError::UnknownIssuer => {
                "the certificate is not signed by this cluster's CA".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the certificate does not name the node that was meant".into()
            }
            CertificateError::BadSignature => {
                "the certificate is not signed by this cluster's CA (its signature does not verify)"
                    .into()
            }
            CertificateError::Revoked => "the certificate is revoked".into(),
            other => format!("the certificate was refused: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => {
            format!("the other side refused our certificate (TLS alert {alert:?})")
        }
        other => other.to_string(),
    }
}

/// The rustls error inside an I/O error from a TLS handshake, if any.
pub(crate) fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Opens TLS connections to one peer for tonic (its `connect_with_connector`): TCP, then a
/// TLS handshake that checks the peer's certificate names `peer`.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) tls: LinkTls,
    pub(crate) addr: SocketAddr,
    pub(crate) peer: NodeId,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let Connector { tls, addr, peer } = self.clone();
        Box::pin(async move {
            let name = ServerName::try_from(peer.as_str().to_owned()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("node id `{peer}` is not a DNS name, which TLS links need"),
                )
            })?;
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            let connector = tokio_rustls::TlsConnector::from(tls.material().client.clone());
            let stream = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}
