//! The deployment files (deploy/k8s, deploy/Dockerfile) checked offline by
//! `scripts/validate-deploy.sh --offline`: the manifests must pass, and a copy of them with a
//! misspelt field must be rejected (so the check can fail).
//!
//! The validator, kubernetes-validate in a virtual environment, is installed by
//! `scripts/ensure-deps.sh --etcd` (which `scripts/test.sh` runs first); without it these
//! tests fail and say so, they never skip.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one run of the script may take (a few seconds on an idle machine: it validates
/// the manifests for two Kubernetes versions, and again after the kustomize render).
const TIMEOUT: Duration = Duration::from_secs(240);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cluster-tests is in the repository root")
        .to_path_buf()
}

/// What a run of the script did: its exit status (`None`: killed at the timeout) and its
/// output, stdout then stderr.
struct Run {
    success: Option<bool>,
    output: String,
}

/// Runs `scripts/validate-deploy.sh --offline` with `args`, killing it (its whole process
/// group) after [`TIMEOUT`].
fn validate(args: &[&str]) -> Run {
    let script = repo_root().join("scripts/validate-deploy.sh");
    let mut child = Command::new(&script)
        .arg("--offline")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + TIMEOUT;
    let success = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break Some(status.success());
        }
        if Instant::now() >= deadline {
            // The script and the validators it started.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "{}{}",
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader")
    );
    Run { success, output }
}

/// Fails with the fix when the validator is not installed.
fn require_validator(run: &Run) {
    assert!(
        !run.output.contains("is not installed"),
        "the offline validator of the deployment files is missing: run scripts/ensure-deps.sh \
         --etcd (it installs kubernetes-validate from PyPI into a virtual environment).\n{}",
        run.output
    );
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn manifests_and_dockerfile_validate() {
    let run = validate(&[]);
    require_validator(&run);
    match run.success {
        Some(true) => {}
        Some(false) => panic!(
            "scripts/validate-deploy.sh rejects the deployment files:\n{}",
            run.output
        ),
        None => panic!(
            "scripts/validate-deploy.sh did not finish within {TIMEOUT:?}:\n{}",
            run.output
        ),
    }
    assert!(
        run.output.contains("validate-deploy: ok:"),
        "no success line in:\n{}",
        run.output
    );
}

#[test]
fn a_misspelt_field_is_rejected() {
    let manifests = repo_root().join("deploy/k8s");
    let copy = TempDir::new("actormesh-deploy-manifests");
    for entry in std::fs::read_dir(&manifests).expect("deploy/k8s exists") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, copy.0.join(path.file_name().expect("a file name")))
                .expect("copy a manifest");
        }
    }
    let service = copy.0.join("service.yaml");
    let text = std::fs::read_to_string(&service).expect("read service.yaml");
    let broken = text.replacen("\n  replicas: 3\n", "\n  replcas: 3\n", 1);
    assert_ne!(
        broken, text,
        "service.yaml has no `  replicas: 3` line (the Deployment's) to misspell"
    );
    std::fs::write(&service, broken).expect("write the misspelt service.yaml");

    let dir = copy.0.to_str().expect("a UTF-8 temporary path");
    let run = validate(&["--manifests", dir]);
    require_validator(&run);
    match run.success {
        Some(false) => {}
        Some(true) => panic!(
            "scripts/validate-deploy.sh accepted a Deployment with `replcas`:\n{}",
            run.output
        ),
        None => panic!(
            "scripts/validate-deploy.sh did not finish within {TIMEOUT:?}:\n{}",
            run.output
        ),
    }
    assert!(
        run.output.contains("'replcas' was unexpected"),
        "rejected, but not for the misspelt field:\n{}",
        run.output
    );
}
