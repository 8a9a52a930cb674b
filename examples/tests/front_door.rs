//! The example service is reachable over HTTP: `front_door --self-test` starts its three nodes
//! and its gateway on a free port, sends real requests (a write with and without the right
//! key, bad bodies, a deadline, an unknown route, a burst past the rate limit) and checks every
//! status; it exits 0 only when all were as expected.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_front_door_example_answers_over_http() {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_front_door"))
        .arg("--self-test")
        .env_remove("GATEWAY_ADDR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the example starts");
    // Bounded: the self-test takes a few seconds; kill it if it hangs.
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the example") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the self-test did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50)); // pacing a poll of the child's exit
    };
    let output = child.wait_with_output().expect("its output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        status.success(),
        "front_door --self-test failed ({status}):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("200"), "{stdout}");
}
