//! The example service is reachable over HTTP: `front_door --self-test` starts its three nodes
//! and its gateway on a free port, sends real requests (a write with and without the right
//! key, bad bodies, a deadline, an unknown route, a burst past the rate limit) and checks every
//! status; it exits 0 only when all were as expected.

use std::process::Command;
use std::time::Duration;

#[test]
fn the_front_door_example_answers_over_http() {
    let child = Command::new(env!("CARGO_BIN_EXE_front_door"))
        .arg("--self-test")
        .env_remove("GATEWAY_ADDR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the example starts");
    let pid = child.id();
    // Bounded: the self-test takes a few seconds; past 120 s it is killed.
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match outcome.recv_timeout(Duration::from_secs(120)) {
        Ok(output) => output.expect("the example's output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the self-test did not finish within 120 s");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "front_door --self-test failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("200"), "{stdout}");
}
