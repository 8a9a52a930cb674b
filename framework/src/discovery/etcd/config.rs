//! How to reach etcd and how to use it: [`EtcdConfig`], and [`EtcdTls`] with feature `etcd-tls`.

use std::time::Duration;

use etcd_client::ConnectOptions;

/// How to reach etcd and how to use it.
#[derive(Clone)]
pub struct EtcdConfig {
    pub(super) endpoints: Vec<String>,
    pub(super) prefix: String,
    pub(super) lease_ttl: Duration,
    credentials: Option<(String, String)>,
    #[cfg(feature = "etcd-tls")]
    tls: Option<EtcdTls>,
    pub(super) connect_timeout: Duration,
    pub(super) request_timeout: Duration,
}

/// The password never appears: only the user name, and whether TLS is configured.
impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("EtcdConfig");
        d.field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("lease_ttl", &self.lease_ttl)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user));
        #[cfg(feature = "etcd-tls")]
        d.field("tls", &self.tls.is_some());
        d.field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// TLS towards etcd (feature `etcd-tls`): the CA that signed etcd's certificate and, for
/// etcd's `--client-cert-auth`, this node's client certificate. Use `https://` endpoints.
#[cfg(feature = "etcd-tls")]
#[derive(Clone)]
pub struct EtcdTls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
}

#[cfg(feature = "etcd-tls")]
impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("EtcdTls")
            .field("client_identity", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "etcd-tls")]
impl EtcdTls {
    /// Trust etcd certificates signed by the CA in `ca_pem` (PEM bytes).
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        EtcdTls {
            ca_pem: ca_pem.into(),
            identity: None,
            domain: None,
        }
    }

    /// Present this client certificate and key (PEM bytes) to etcd.
    pub fn client_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// The name to verify etcd's certificate against, when it differs from the endpoint host.
    pub fn domain(mut self, name: impl Into<String>) -> Self {
        self.domain = Some(name.into());
        self
    }

    fn options(&self) -> etcd_client::TlsOptions {
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        tls
    }
}

impl EtcdConfig {
    /// etcd at `endpoints` (for example `http://127.0.0.1:2379`), with the defaults: key
    /// prefix `/actormesh`, a lease TTL of 3 s, connect and request timeouts of 2 s.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/actormesh".to_owned(),
            lease_ttl: Duration::from_secs(3),
            credentials: None,
            #[cfg(feature = "etcd-tls")]
            tls: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
        }
    }

    /// The key prefix (default `/actormesh`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_owned();
        self
    }

    /// The lease TTL: a dead node is seen down within about this long (whole seconds, at
    /// least 2; etcd refuses shorter leases).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_secs(2));
        self
    }

    /// etcd user and password.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// TLS towards etcd (feature `etcd-tls`).
    #[cfg(feature = "etcd-tls")]
    pub fn tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long connecting to etcd may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one etcd request may take.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The lease TTL in the whole seconds etcd is asked for.
    pub(super) fn ttl_secs(&self) -> i64 {
        self.lease_ttl.as_secs().max(2) as i64
    }

    /// The client options: timeouts, HTTP/2 keep-alive, credentials and TLS.
    pub(super) fn connect_options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &self.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        #[cfg(feature = "etcd-tls")]
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.options());
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = EtcdConfig::new(["http://127.0.0.1:2379"]);
        assert_eq!(config.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(config.prefix, "/actormesh");
        assert_eq!(config.lease_ttl, Duration::from_secs(3));
        assert_eq!(config.ttl_secs(), 3);
        assert_eq!(config.connect_timeout, Duration::from_secs(2));
        assert_eq!(config.request_timeout, Duration::from_secs(2));
    }

    #[test]
    fn prefix_loses_trailing_slashes() {
        let config = EtcdConfig::new(["http://e:2379"]).prefix("/mesh//");
        assert_eq!(config.prefix, "/mesh");
    }

    #[test]
    fn lease_ttl_is_at_least_two_seconds() {
        let config = EtcdConfig::new(["http://e:2379"]).lease_ttl(Duration::from_millis(500));
        assert_eq!(config.lease_ttl, Duration::from_secs(2));
        assert_eq!(config.ttl_secs(), 2);
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn the_password_is_never_printed() {
        let config = EtcdConfig::new(["http://127.0.0.1:2379"]).credentials("shop", "hunter2");
        let text = format!("{config:?}");
        assert!(text.contains("shop") && !text.contains("hunter2"), "{text}");
    }
}
