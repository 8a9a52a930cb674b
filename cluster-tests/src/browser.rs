//! Headless Chromium for the dashboard tests: load a page, let its scripts run, and read the
//! resulting DOM ([`dump_dom`]) or a picture of it ([`screenshot`]).
//!
//! Chromium runs with `--virtual-time-budget`: the page's timers run in virtual time, which
//! advances as fast as the page lets it, so a budget of 3 s renders about three polls of a page
//! that polls every second, in well under 3 s of real time. Network requests are real and
//! virtual time waits for them: a request that never completes stops virtual time, and
//! Chromium with it. Every run is therefore also bounded in wall-clock time (the budget plus
//! [`WALL_CLOCK_MARGIN`]); past that Chromium is killed, with all its helper processes, and the
//! call fails.
//!
//! Each run gets a fresh profile directory, removed afterwards. The functions block: from an
//! async test, call them through `tokio::task::spawn_blocking`.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a run may take beyond its virtual-time budget (Chromium's start, the page's load,
/// the shut-down) before Chromium is killed.
pub const WALL_CLOCK_MARGIN: Duration = Duration::from_secs(30);

/// Where Debian's `chromium` package installs the browser.
const DEBIAN_CHROMIUM: &str = "/usr/bin/chromium";

/// The names a Chromium binary goes by on the PATH.
const NAMES: &[&str] = &[
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// The flags of every run: headless, as root in a container, and quiet on the network (no
/// update checks, no sync, no QUIC probes).
const COMMON_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // A container's /dev/shm is often 64 MiB, too small for the renderer's shared memory.
    "--disable-dev-shm-usage",
];

/// The Chromium binary: `$CHROMIUM` if set, else `/usr/bin/chromium`, else `chromium`,
/// `chromium-browser`, `google-chrome` or `google-chrome-stable` on the PATH; or an error
/// saying how to install it.
pub fn chromium() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "CHROMIUM is set to {}, which is not an executable file",
                path.display()
            ))
        };
    }
    let debian = Path::new(DEBIAN_CHROMIUM);
    if is_executable(debian) {
        return Ok(debian.to_path_buf());
    }
    if let Some(path_var) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path_var) {
            for name in NAMES {
                let candidate = dir.join(name);
                if is_executable(&candidate) {
                    return Ok(candidate);
                }
            }
        }
    }
    Err(format!(
        "headless Chromium not found (looked for $CHROMIUM, {DEBIAN_CHROMIUM}, and {} on the \
         PATH): run `scripts/ensure-deps.sh --etcd`, or on Debian/Ubuntu \
         `sudo apt-get install chromium`",
        NAMES.join(", ")
    ))
}

/// Loads `url`, lets its scripts run for `budget` of virtual time, and returns the serialized
/// DOM (Chromium's `--dump-dom`).
pub fn dump_dom(url: &str, budget: Duration) -> Result<String, String> {
    let output = run(url, budget, &["--dump-dom".to_string()])?;
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    if !dom.contains("<html") {
        return Err(format!(
            "chromium --dump-dom {url} printed no document ({} bytes){}",
            dom.len(),
            stderr_tail(&output.stderr)
        ));
    }
    Ok(dom)
}

/// Loads `url` in a window of `size` (width, height) pixels, lets its scripts run for `budget`
/// of virtual time, and writes a PNG screenshot to `path`.
pub fn screenshot(
    url: &str,
    path: &Path,
    size: (u32, u32),
    budget: Duration,
) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot replace {}: {e}", path.display())),
    }
    let output = run(
        url,
        budget,
        &[
            format!("--screenshot={}", path.display()),
            format!("--window-size={},{}", size.0, size.1),
            "--hide-scrollbars".to_string(),
        ],
    )?;
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > 0 => Ok(()),
        _ => Err(format!(
            "chromium --screenshot {url} wrote nothing to {}{}",
            path.display(),
            stderr_tail(&output.stderr)
        )),
    }
}

/// What a finished run printed.
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs Chromium on `url` with the common flags, a fresh profile, `budget` and `extra`; fails
/// when it cannot start, outlives the wall-clock bound, or exits unsuccessfully.
fn run(url: &str, budget: Duration, extra: &[String]) -> Result<Output, String> {
    let binary = chromium()?;
    let profile = Profile::create()?;
    let mut command = Command::new(&binary);
    command
        .args(COMMON_FLAGS)
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a kill reaches the renderer and helper processes too.
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let pgid = child.id();
    let (done_tx, done_rx) = mpsc::channel();
    let stdout = read_all(child.stdout.take(), done_tx.clone());
    let stderr = read_all(child.stderr.take(), done_tx);

    let limit = budget + WALL_CLOCK_MARGIN;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_group(pgid);
                let _ = child.kill();
                let _ = child.wait();
                let err = join(stderr);
                drop(stdout);
                return Err(format!(
                    "chromium on {url} still running after {limit:?} (a request that never \
                     completes stops virtual time): killed{}",
                    stderr_tail(&err)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                kill_group(pgid);
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot wait for chromium: {e}"));
            }
        }
    };
    // The pipes close when every process holding them has exited; a helper that outlives the
    // browser would keep them open, so it is killed after a grace period.
    let mut closed = 0;
    let grace = Instant::now() + Duration::from_secs(5);
    while closed < 2 {
        let left = grace.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) => closed += 1,
            Err(_) => {
                kill_group(pgid);
                break;
            }
        }
    }
    let output = Output {
        stdout: join(stdout),
        stderr: join(stderr),
    };
    if !status.success() {
        return Err(format!(
            "chromium on {url} failed ({status}){}",
            stderr_tail(&output.stderr)
        ));
    }
    Ok(output)
}

/// Reads `pipe` to its end on a thread; signals `done` when the pipe closes.
fn read_all<R: Read + Send + 'static>(
    pipe: Option<R>,
    done: mpsc::Sender<()>,
) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        let _ = done.send(());
        buf
    })
}

fn join(reader: JoinHandle<Vec<u8>>) -> Vec<u8> {
    reader.join().unwrap_or_default()
}

/// Sends SIGKILL to the process group `pgid` (the Chromium started by [`run`] and its
/// children) with the `kill` command.
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last lines of Chromium's stderr, without the D-Bus complaints of a machine with no
/// session bus, as a suffix of an error message.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("dbus/"))
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(15)..];
    format!("; stderr:\n{}", tail.join("\n"))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A fresh Chromium profile directory under the system's temporary directory, removed on drop.
struct Profile(PathBuf);

impl Profile {
    fn create() -> Result<Profile, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "actormesh-chromium-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create the profile directory {}: {e}", dir.display()))?;
        Ok(Profile(dir))
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tail_drops_dbus_noise() {
        let err = b"[1:1:ERROR:dbus/bus.cc:405] Failed to connect to the bus\nreal problem\n";
        assert_eq!(stderr_tail(err), "; stderr:\nreal problem");
        assert_eq!(stderr_tail(b"[1:1:ERROR:dbus/x.cc:1] y\n"), "");
    }
}
