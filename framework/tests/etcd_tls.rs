//! EtcdDiscovery over TLS with client certificates, against a real etcd (feature `etcd-tls`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use actormesh::discovery::{EtcdConfig, EtcdDiscovery, EtcdTls};
use actormesh::{Error, Node};
use actormesh_testkit::{Etcd, TlsFiles};

/// Runs openssl with `args` in `dir`; fails the test with install advice if it is missing.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect(
            "the TLS test needs the openssl command: on Debian/Ubuntu `apt-get install openssl`",
        );
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A throw-away CA, a server certificate for 127.0.0.1 and a client certificate.
fn certificates() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "actormesh-tls-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=actormesh-test-ca",
    ]);
    openssl(&dir, &ca);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let key = format!("{who}.key");
        let csr = format!("{who}.csr");
        let pem = format!("{who}.pem");
        let ext = format!("{who}.ext");
        let subject = format!("/CN={who}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(&dir, &req);
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
    dir
}

#[actix::test]
async fn a_node_joins_over_tls_with_a_client_certificate() {
    let dir = certificates();
    let etcd = Etcd::start_tls(TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
    .expect("a TLS etcd starts");
    assert!(etcd.endpoint().starts_with("https://"));
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let tls = EtcdTls::new(read("ca.pem")).client_identity(read("client.pem"), read("client.key"));
    let config = EtcdConfig::new([etcd.endpoint()])
        .lease_ttl(Duration::from_secs(2))
        .tls(tls);
    let a = Node::builder()
        .cluster("tls")
        .discovery(
            EtcdDiscovery::connect(config.clone())
                .await
                .expect("TLS connect"),
        )
        .insecure_links()
        .start()
        .await
        .expect("joins over TLS");
    let b = Node::builder()
        .cluster("tls")
        .discovery(EtcdDiscovery::connect(config).await.unwrap())
        .insecure_links()
        .start()
        .await
        .unwrap();
    a.wait_for_node(b.id(), Duration::from_secs(5))
        .await
        .unwrap();

    // Without a client certificate etcd refuses us, with a clear error and no hang.
    let no_identity = EtcdConfig::new([etcd.endpoint()])
        .connect_timeout(Duration::from_secs(2))
        .tls(EtcdTls::new(read("ca.pem")));
    let refused = match EtcdDiscovery::connect(no_identity).await {
        Err(e) => e,
        Ok(d) => Node::builder()
            .cluster("tls")
            .discovery(d)
            .insecure_links()
            .start()
            .await
            .unwrap_err(),
    };
    assert!(matches!(refused, Error::Discovery(_)), "{refused:?}");
    b.shutdown().await;
    a.shutdown().await;
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
}
