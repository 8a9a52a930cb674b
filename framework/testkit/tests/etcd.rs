//! Runs the real etcd (`$ETCD_BIN` or `etcd` on `PATH`): these tests fail, never skip, when it
//! is missing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use actormesh_testkit::Etcd;

/// A raw HTTP/1.0 POST of a JSON body to etcd's v3 JSON gateway; returns the whole response.
fn post(etcd: &Etcd, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", etcd.client_port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn starts_healthy_on_a_loopback_endpoint() {
    let etcd = Etcd::start().unwrap();
    assert!(etcd.is_healthy());
    assert_eq!(
        etcd.endpoint(),
        format!("http://127.0.0.1:{}", etcd.client_port())
    );
    assert_ne!(etcd.client_port(), etcd.peer_port());
    assert!(etcd.data_dir().starts_with(std::env::temp_dir()));
    assert!(etcd.data_dir().join("member").is_dir());
    assert!(etcd.log_path().starts_with(etcd.data_dir()));
}

#[test]
fn restart_keeps_endpoint_and_data() {
    let mut etcd = Etcd::start().unwrap();
    let endpoint = etcd.endpoint();
    // key "foo", value "bar", base64-encoded as the JSON gateway wants.
    let put = post(&etcd, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#);
    assert!(put.starts_with("HTTP/1.0 200"), "{put}");

    etcd.stop();
    assert!(!etcd.is_healthy());
    assert!(etcd.data_dir().is_dir(), "stop keeps the data dir");
    etcd.start_again().unwrap();
    assert!(etcd.is_healthy());
    assert_eq!(etcd.endpoint(), endpoint);

    etcd.restart().unwrap();
    assert!(etcd.is_healthy());
    assert_eq!(etcd.endpoint(), endpoint);
    let range = post(&etcd, "/v3/kv/range", r#"{"key":"Zm9v"}"#);
    assert!(range.contains(r#""value":"YmFy""#), "{range}");
}

#[test]
fn start_again_while_running_is_an_error() {
    let mut etcd = Etcd::start().unwrap();
    let err = etcd.start_again().unwrap_err();
    assert!(err.to_string().contains("already running"), "{err}");
    assert!(etcd.is_healthy());
}

#[test]
fn drop_stops_etcd_and_removes_the_data_dir() {
    let etcd = Etcd::start().unwrap();
    let dir = etcd.data_dir().to_path_buf();
    let port = etcd.client_port();
    assert!(dir.is_dir());
    drop(etcd);
    assert!(!dir.exists(), "{} was left behind", dir.display());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "etcd still listens on {port}"
    );
}

#[test]
fn instances_are_independent() {
    let a = Etcd::start().unwrap();
    let b = Etcd::start().unwrap();
    assert_ne!(a.endpoint(), b.endpoint());
    assert_ne!(a.data_dir(), b.data_dir());
    drop(a);
    assert!(b.is_healthy());
}
