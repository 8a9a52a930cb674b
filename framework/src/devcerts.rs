//! A development certificate authority for link TLS (feature `dev-certs`): the cluster CA and
//! node certificates that name their node ids, made in memory with rcgen, so that tests, demos
//! and a first cluster need no `openssl` commands. For production, issue node certificates from
//! your own CA (each with its node id as a DNS subject alternative name).

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::error::Error;
use crate::transport::tls::LinkTls;

/// A cluster's development CA: it signs node certificates.
pub struct DevCa {
    cluster: String,
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// A node's certificate and private key, PEM.
#[derive(Clone)]
pub struct NodeCert {
    /// The certificate, naming the node id.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert").finish_non_exhaustive()
    }
}

fn rcgen_error(e: rcgen::Error) -> Error {
    Error::Tls(format!("cannot make a certificate: {e}"))
}

impl DevCa {
    /// A new CA for `cluster` (a fresh key each time: two `DevCa`s never trust each other).
    pub fn new(cluster: &str) -> Result<Self, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            format!("actormesh {cluster} development CA"),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let pem = params.self_signed(&key).map_err(rcgen_error)?.pem();
        Ok(DevCa {
            cluster: cluster.to_owned(),
            params,
            key,
            pem,
        })
    }

    /// The CA certificate, PEM: every node of the cluster trusts it.
    pub fn ca_pem(&self) -> &str {
        &self.pem
    }

    /// A certificate for node `node`, valid from a day ago for a year.
    pub fn node(&self, node: &str) -> Result<NodeCert, Error> {
        let now = SystemTime::now();
        self.node_valid(
            node,
            now - Duration::from_secs(86_400),
            now + Duration::from_secs(365 * 86_400),
        )
    }

    /// A certificate for node `node`, valid from `not_before` to `not_after` (to test expired
    /// and not-yet-valid certificates, or to make short-lived ones).
    pub fn node_valid(
        &self,
        node: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<NodeCert, Error> {
        let mut params = CertificateParams::new(vec![node.to_owned()]).map_err(rcgen_error)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, node);
        name.push(
            DnType::OrganizationName,
            format!("actormesh {}", self.cluster),
        );
        params.distinguished_name = name;
        params.not_before = time::OffsetDateTime::from(not_before);
        params.not_after = time::OffsetDateTime::from(not_after);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        // A node is both: it accepts links and opens them.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(rcgen_error)?;
        Ok(NodeCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The link TLS of node `node`: this CA and a new certificate for the node.
    pub fn link_tls(&self, node: &str) -> Result<LinkTls, Error> {
        let cert = self.node(node)?;
        LinkTls::from_pem(&self.pem, &cert.cert_pem, &cert.key_pem)
    }

    /// Writes `ca.pem` and, for each node, `{node}.pem` and `{node}.key` (mode 0600 on Unix)
    /// into `dir`, for [`LinkTls::from_files`].
    pub fn write(&self, dir: &Path, nodes: &[&str]) -> Result<(), Error> {
        let io =
            |e: std::io::Error| Error::Tls(format!("cannot write into {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::write(dir.join("ca.pem"), &self.pem).map_err(io)?;
        for node in nodes {
            let cert = self.node(node)?;
            std::fs::write(dir.join(format!("{node}.pem")), &cert.cert_pem).map_err(io)?;
            write_private(&dir.join(format!("{node}.key")), &cert.key_pem).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}
