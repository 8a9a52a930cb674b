//! The example service of `deploy/` as a process: it serves `GET /hello/{name}` through its
//! gateway, its admin listener answers `/readyz` and `/metrics` (the gateway's request
//! counters among them, passing `promtool check metrics`), and SIGTERM drains it: exit 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the service to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One HTTP/1.1 GET with `Connection: close`: the status and the body, or `None` when nothing
/// listens yet.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

#[test]
fn the_cluster_service_serves_reports_and_drains_on_sigterm() {
    let (links, admin, gateway) = (free_port(), free_port(), free_port());
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let gateway: SocketAddr = format!("127.0.0.1:{gateway}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cluster_service"))
        .env("ACTORMESH_NODE_ID", "svc-1")
        .env("LISTEN", format!("127.0.0.1:{links}"))
        .env("ADMIN", admin.to_string())
        .env("GATEWAY", gateway.to_string())
        .env("DRAIN_TIMEOUT", "5")
        .env("RUST_LOG", "info")
        .env_remove("ACTORMESH_ETCD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example service starts");
    let pid = child.id();
    let kill = || {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    };

    // Ready within 30 s (the controller starts the three greeters on this node alone).
    let started = Instant::now();
    let ready = loop {
        match get(admin, "/readyz") {
            Some((200, body)) => break body,
            _ if started.elapsed() > Duration::from_secs(30) => {
                kill();
                panic!("the service was not ready within 30 s");
            }
            // Nothing signals readiness to another process: it can only be looked at.
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert!(ready.contains("\"ready\":true"), "{ready}");
    let answered = (0..100).find_map(|_| match get(gateway, "/hello/ada") {
        Some((200, body)) => Some(body),
        // The group's replicas may still be starting: its route answers 503 until then.
        Some((503, _)) | None => {
            std::thread::sleep(Duration::from_millis(100));
            None
        }
        Some((code, body)) => {
            kill();
            panic!("GET /hello/ada answered {code}: {body}")
        }
    });
    let body = answered.unwrap_or_else(|| {
        kill();
        panic!("GET /hello/ada never answered 200 within 10 s")
    });
    assert!(body.contains("\"greeting\":\"hello, ada\""), "{body}");

    let (code, metrics) = get(admin, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains(
            r#"actormesh_gateway_requests_total{route="/hello/{name}",method="GET",status="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"actormesh_group_running_replicas{group="greeters"} 3"#),
        "{metrics}"
    );
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            kill();
            panic!("promtool is not installed ({e}): run scripts/ensure-deps.sh --etcd (Debian package `prometheus`)")
        });
    let mut promtool = promtool;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let linted = promtool.wait_with_output().unwrap();
    assert!(
        linted.status.success() && linted.stdout.is_empty() && linted.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );

    // SIGTERM: the service drains and exits 0, bounded.
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match outcome.recv_timeout(Duration::from_secs(30)) {
        Ok(output) => output.expect("the service's output"),
        Err(_) => {
            kill();
            panic!("the service did not exit within 30 s of SIGTERM");
        }
    };
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {}: {log}", output.status);
    assert!(
        log.contains("gateway drained") && log.contains("Terminate"),
        "{log}"
    );
}
