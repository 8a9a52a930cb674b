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
    let mut child = Command::new(env!("CARGO_BIN_EXE_cluster_service"))
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

    // The service logs `ready` once its group can answer (the controller starts the greeters
    // on this node alone): wait for that line, at most 30 s.
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, logged) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Every line, until the process closes its stdout.
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match logged.recv_timeout(left) {
            Ok(line) if line.contains("ready: GET /hello") => break,
            Ok(_) => continue,
            Err(_) => {
                kill();
                panic!("the service did not log `ready` within 30 s");
            }
        }
    }
    let (code, ready) = get(admin, "/readyz").expect("the admin listener answers");
    assert_eq!(code, 200, "{ready}");
    assert!(ready.contains("\"ready\":true"), "{ready}");
    let (code, body) = get(gateway, "/hello/ada").expect("the gateway answers");
    assert_eq!(code, 200, "{body}");
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
    if let Err(e) = actormesh_testkit::promtool_check(&metrics) {
        kill();
        panic!("{e}");
    }

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
    // The rest of its stdout (the reader ends at the process's exit), then its stderr.
    let log =
        logged.iter().collect::<Vec<_>>().join("\n") + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {}: {log}", output.status);
    assert!(
        log.contains("gateway drained") && log.contains("Terminate"),
        "{log}"
    );
}
