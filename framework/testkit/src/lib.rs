//! # actormesh-testkit
//!
//! Test support for actormesh: [`Etcd`] starts a real, throwaway etcd server on free loopback
//! ports with its own temporary data directory, waits until it reports healthy, and cleans up
//! (process and directory) when dropped. [`Postgres`] does the same with a PostgreSQL server
//! (see its docs).
//!
//! ```no_run
//! use actormesh_testkit::Etcd;
//!
//! let mut etcd = Etcd::start().unwrap();
//! let endpoint = etcd.endpoint(); // "http://127.0.0.1:<port>"
//! // ... point the code under test at `endpoint` ...
//! etcd.restart().unwrap(); // same endpoint, same data
//! # let _ = endpoint;
//! ```
//!
//! The binary is taken from `ETCD_BIN` if set, else `etcd` on `PATH`. When it cannot be found,
//! [`Etcd::start`] fails with [`EtcdError::NotFound`], whose message says what to install: tests
//! using this crate fail loudly rather than silently skipping.
//!
//! [`Postgres`] takes its binaries from `PG_BIN`, `PATH` or `/usr/lib/postgresql/*/bin` and
//! fails with [`PostgresError::NotFound`] in the same way when there are none.
//!
//! Only the standard library is used.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod postgres;
mod promtool;

pub use postgres::{Postgres, PostgresError};
pub use promtool::promtool_check;

/// How long [`Etcd::start`] and [`Etcd::start_again`] wait for `/health` to report healthy.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two health polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Bound on connecting to etcd's client port during one health poll.
const HEALTH_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// Bound on reading or writing during one health poll.
const HEALTH_IO_TIMEOUT: Duration = Duration::from_millis(1000);
/// How many times a start is attempted when etcd loses a race for its ports.
const START_ATTEMPTS: usize = 4;
/// The member name given to every etcd started here.
const MEMBER_NAME: &str = "actormesh-testkit";
/// The name of etcd's log file inside the data directory.
const LOG_FILE: &str = "etcd.log";
/// At most this many bytes of the log end up in an error message.
const LOG_TAIL_BYTES: u64 = 4096;
/// At most this many lines of the log end up in an error message.
const LOG_TAIL_LINES: usize = 40;

/// Distinguishes data directories made by this process.
static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The message of [`EtcdError::NotFound`].
const NOT_FOUND_MESSAGE: &str = "etcd 3.4 or newer was not found (looked at $ETCD_BIN and PATH): \
     on Debian/Ubuntu `apt-get install etcd-server`, on Fedora `dnf install etcd`, \
     on macOS `brew install etcd`, or set ETCD_BIN to the binary";

/// Why an [`Etcd`] could not be started.
///
/// `Debug` prints the same text as `Display`, so `Etcd::start().unwrap()` and tests returning
/// `Result<(), EtcdError>` fail with a readable message (including what to install).
#[non_exhaustive]
pub enum EtcdError {
    /// No etcd binary: `$ETCD_BIN` names no file, or it is unset and `PATH` has no `etcd`.
    NotFound {
        /// The path that was tried, if there was one (`$ETCD_BIN` or an explicit binary).
        tried: Option<PathBuf>,
    },
    /// An I/O operation needed to run etcd failed.
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// etcd exited before reporting healthy.
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// etcd did not report healthy before the deadline; it has been killed.
    Unhealthy {
        /// The client endpoint that was polled.
        endpoint: String,
        /// How long it was waited for.
        waited: Duration,
        /// The end of its log.
        log_tail: String,
    },
    /// [`Etcd::start_again`] was called while etcd was still running.
    AlreadyRunning,
}

impl EtcdError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        EtcdError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether etcd died because one of its ports was taken in the meantime.
    fn is_port_race(&self) -> bool {
        match self {
            EtcdError::Exited { log_tail, .. } => log_tail.contains("address already in use"),
            _ => false,
        }
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::NotFound { .. } => f.write_str(NOT_FOUND_MESSAGE),
            EtcdError::Io { context, source } => write!(f, "{context}: {source}"),
            EtcdError::Exited { status, log_tail } => write!(
                f,
                "etcd exited ({status}) before reporting healthy; end of its log:\n{log_tail}"
            ),
            EtcdError::Unhealthy {
                endpoint,
                waited,
                log_tail,
            } => write!(
                f,
                "etcd at {endpoint} did not report healthy within {waited:?} and was killed; \
                 end of its log:\n{log_tail}"
            ),
            EtcdError::AlreadyRunning => {
                f.write_str("etcd is already running: stop it before starting it again")
            }
        }
    }
}

impl fmt::Debug for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EtcdError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A single-member etcd server on loopback ports, owned by a test.
///
/// Dropping it kills the process and removes its data directory.
#[derive(Debug)]
pub struct Etcd {
    binary: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// Plain-HTTP port of `/health` and `/metrics`, also when the client port is TLS-only.
    metrics_port: u16,
    tls: Option<TlsFiles>,
    data_dir: PathBuf,
    child: Option<Child>,
}

/// PEM files for an etcd that serves clients over TLS and requires client certificates.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the server's and the clients' certificates.
    pub ca: PathBuf,
    /// The server certificate (valid for `127.0.0.1`).
    pub cert: PathBuf,
    /// The server key.
    pub key: PathBuf,
}

impl Etcd {
    /// Starts etcd and waits (at most 20 s) until it reports healthy.
    ///
    /// The binary is `$ETCD_BIN` if that is set and non-empty, else `etcd` on `PATH`. It gets
    /// two free loopback ports (client and peer) and a fresh directory under
    /// [`std::env::temp_dir`]; its output goes to `etcd.log` in that directory. If etcd loses a
    /// race for its ports, the whole start is retried a few times with new ports.
    ///
    /// # Errors
    ///
    /// [`EtcdError::NotFound`] (with install instructions) if there is no binary; otherwise
    /// an error carrying the end of etcd's log if it exits or stays unhealthy.
    pub fn start() -> Result<Etcd, EtcdError> {
        let binary = resolve_binary(std::env::var_os("ETCD_BIN"), std::env::var_os("PATH"))?;
        Etcd::start_with_binary(&binary, None)
    }

    /// Like [`Etcd::start`], but clients must use TLS (`https://` endpoint) and present a
    /// certificate signed by `tls.ca` (`--client-cert-auth`).
    pub fn start_tls(tls: TlsFiles) -> Result<Etcd, EtcdError> {
        let binary = resolve_binary(std::env::var_os("ETCD_BIN"), std::env::var_os("PATH"))?;
        Etcd::start_with_binary(&binary, Some(tls))
    }

    /// [`Etcd::start`] with an explicit binary, leaving the environment alone.
    pub(crate) fn start_with_binary(
        binary: &Path,
        tls: Option<TlsFiles>,
    ) -> Result<Etcd, EtcdError> {
        if !binary.is_file() {
            return Err(EtcdError::NotFound {
                tried: Some(binary.to_path_buf()),
            });
        }
        let mut attempt = 1;
        loop {
            let [client_port, peer_port, metrics_port] = free_ports::<3>()
                .map_err(|e| EtcdError::io("cannot pick free loopback ports", e))?;
            let mut etcd = Etcd {
                binary: binary.to_path_buf(),
                client_port,
                peer_port,
                metrics_port,
                tls: tls.clone(),
                data_dir: make_data_dir()?,
                child: None,
            };
            match etcd.spawn_and_wait() {
                Ok(()) => return Ok(etcd),
                // Dropping `etcd` removes the directory; the next attempt gets new ports.
                Err(e) if e.is_port_race() && attempt < START_ATTEMPTS => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The client URL, `http://127.0.0.1:<client port>` (`https://` when started with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The client port on 127.0.0.1; it stays the same across [`Etcd::restart`].
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The peer port on 127.0.0.1; it stays the same across [`Etcd::restart`].
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// The temporary data directory (etcd's `--data-dir`, also holding `etcd.log`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file receiving etcd's stdout and stderr (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// Whether the process is running (as far as this handle knows) and `GET /health` answers
    /// `"health":"true"` right now. Bounded by about a second.
    pub fn is_healthy(&self) -> bool {
        self.child.is_some() && health_check(self.metrics_port)
    }

    /// Kills etcd (`SIGKILL` on Unix) and waits for it to exit; the data directory is kept.
    ///
    /// Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `kill` only fails if the process has already been reaped, which `wait` settles.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again after [`Etcd::stop`], on the same ports with the same data directory
    /// (so the same endpoint and the same data), and waits until it reports healthy.
    ///
    /// # Errors
    ///
    /// [`EtcdError::AlreadyRunning`] if it was not stopped; otherwise as [`Etcd::start`].
    pub fn start_again(&mut self) -> Result<(), EtcdError> {
        if self.child.is_some() {
            return Err(EtcdError::AlreadyRunning);
        }
        let mut attempt = 1;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                // The ports are fixed now: give whoever holds one a moment to let go.
                Err(e) if e.is_port_race() && attempt < START_ATTEMPTS => {
                    attempt += 1;
                    thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`Etcd::stop`] followed by [`Etcd::start_again`]: same endpoint, same data.
    ///
    /// # Errors
    ///
    /// As [`Etcd::start_again`].
    pub fn restart(&mut self) -> Result<(), EtcdError> {
        self.stop();
        self.start_again()
    }

    /// Spawns the process and waits until it is healthy; on failure nothing is left running.
    fn spawn_and_wait(&mut self) -> Result<(), EtcdError> {
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| EtcdError::io(format!("cannot open {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| EtcdError::io(format!("cannot open {}", log_path.display()), e))?;
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let metrics_url = format!("http://127.0.0.1:{}", self.metrics_port);
        let mut command = Command::new(&self.binary);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name")
            .arg(MEMBER_NAME)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("{MEMBER_NAME}={peer_url}"))
            .arg("--listen-metrics-urls")
            .arg(&metrics_url)
            // zap is accepted by 3.4 and the only logger from 3.5 on; quiet unless broken.
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => EtcdError::NotFound {
                    tried: Some(self.binary.clone()),
                },
                _ => EtcdError::io(format!("cannot run {}", self.binary.display()), e),
            })?;
        self.child = Some(child);
        self.wait_healthy()
    }

    /// Polls `/health` every [`POLL_INTERVAL`] until healthy, exited, or [`STARTUP_TIMEOUT`].
    fn wait_healthy(&mut self) -> Result<(), EtcdError> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                let exited = child
                    .try_wait()
                    .map_err(|e| EtcdError::io("cannot check on etcd", e))?;
                if let Some(status) = exited {
                    self.child = None;
                    return Err(EtcdError::Exited {
                        status,
                        log_tail: log_tail(&self.log_path()),
                    });
                }
            }
            if health_check(self.metrics_port) {
                return Ok(());
            }
            if started.elapsed() >= STARTUP_TIMEOUT {
                self.stop();
                return Err(EtcdError::Unhealthy {
                    endpoint: self.endpoint(),
                    waited: started.elapsed(),
                    log_tail: log_tail(&self.log_path()),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.data_dir);
    }
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// It binds `127.0.0.1:0`, reads the port the OS chose and closes the socket again, so
/// another process may grab the port before the caller binds it: callers should retry on
/// "address in use".
///
/// # Panics
///
/// If no loopback socket can be bound at all.
pub fn free_port() -> u16 {
    match free_ports::<1>() {
        Ok([port]) => port,
        Err(e) => panic!("cannot bind a socket on 127.0.0.1: {e}"),
    }
}

/// `N` distinct free loopback ports: all listeners are held until every port is known.
fn free_ports<const N: usize>() -> io::Result<[u16; N]> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        *port = listener.local_addr()?.port();
        listeners.push(listener);
    }
    Ok(ports)
}

/// `$ETCD_BIN` when set and non-empty (whether or not it exists), else `etcd` on `path`.
fn resolve_binary(
    etcd_bin: Option<OsString>,
    path: Option<OsString>,
) -> Result<PathBuf, EtcdError> {
    if let Some(bin) = etcd_bin.filter(|bin| !bin.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let names: &[&str] = if cfg!(windows) {
        &["etcd.exe", "etcd"]
    } else {
        &["etcd"]
    };
    path.iter()
        .flat_map(|path| std::env::split_paths(path).collect::<Vec<_>>())
        .filter(|dir| !dir.as_os_str().is_empty())
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| is_executable(candidate))
        .ok_or(EtcdError::NotFound { tried: None })
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Creates a new, empty, private directory under the system temp dir.
fn make_data_dir() -> Result<PathBuf, EtcdError> {
    let base = std::env::temp_dir();
    make_dir(&base, "actormesh-etcd").map_err(|e| {
        EtcdError::io(
            format!("cannot create a directory under {}", base.display()),
            e,
        )
    })
}

/// Creates a new, empty, private (0700) directory `{prefix}-{pid}-{n}-{nanos}` under `base`.
fn make_dir(base: &Path, prefix: &str) -> io::Result<PathBuf> {
    let pid = std::process::id();
    loop {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = base.join(format!("{prefix}-{pid}-{n}-{nanos}"));
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        {
            // etcd and PostgreSQL want their data directories private (0700).
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        match builder.create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether `GET /health` on the client port answers `"health":"true"`, within about a second.
fn health_check(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, HEALTH_CONNECT_TIMEOUT) else {
        return false;
    };
    let deadline = Instant::now() + HEALTH_IO_TIMEOUT;
    if stream.set_read_timeout(Some(HEALTH_IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(HEALTH_IO_TIMEOUT)).is_err()
    {
        return false;
    }
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    // HTTP/1.0: the server closes the connection after the response.
    let mut response = Vec::new();
    let mut buf = [0; 1024];
    while Instant::now() < deadline && response.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    contains(&response, br#""health":"true""#)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The last lines of etcd's log, for error messages.
fn log_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) if text.trim().is_empty() => format!("({} is empty)", path.display()),
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn missing_binary_gives_install_instructions() {
        let missing = std::env::temp_dir().join("actormesh-testkit-no-such-etcd");
        let err = Etcd::start_with_binary(&missing, None).expect_err("a missing binary must fail");
        assert!(matches!(err, EtcdError::NotFound { tried: Some(ref p) } if *p == missing));
        assert_eq!(
            err.to_string(),
            "etcd 3.4 or newer was not found (looked at $ETCD_BIN and PATH): on Debian/Ubuntu \
             `apt-get install etcd-server`, on Fedora `dnf install etcd`, on macOS \
             `brew install etcd`, or set ETCD_BIN to the binary"
        );
        // `unwrap()` and `-> Result` tests print Debug: it must carry the same message.
        assert_eq!(format!("{err:?}"), err.to_string());
    }

    #[test]
    fn etcd_bin_wins_over_path_even_when_missing() {
        let bin = resolve_binary(os("/nonexistent/etcd"), os("/usr/bin:/bin")).unwrap();
        assert_eq!(bin, PathBuf::from("/nonexistent/etcd"));
        let err = Etcd::start_with_binary(&bin, None).unwrap_err();
        assert!(err.to_string().contains("apt-get install etcd-server"));
    }

    #[test]
    fn empty_path_and_no_etcd_bin_is_not_found() {
        let err = resolve_binary(None, None).unwrap_err();
        assert!(matches!(err, EtcdError::NotFound { tried: None }));
        let err = resolve_binary(os(""), os("/nonexistent-dir")).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("etcd 3.4 or newer was not found"));
    }

    #[cfg(unix)]
    #[test]
    fn path_is_searched_for_an_executable_etcd() {
        use std::os::unix::fs::PermissionsExt;
        let dir = make_data_dir().unwrap();
        let fake = dir.join("etcd");
        fs::write(&fake, "#!/bin/sh\n").unwrap();
        // Not executable: skipped.
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o600)).unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent-dir"), &dir]).unwrap();
        assert!(resolve_binary(None, Some(path.clone())).is_err());
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(resolve_binary(None, Some(path)).unwrap(), fake);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let [a, b, c] = free_ports::<3>().unwrap();
        assert!(a != 0 && a != b && b != c && a != c);
        let port = free_port();
        assert_ne!(port, 0);
        drop(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port should be free"));
    }

    #[test]
    fn data_dirs_are_unique_and_private() {
        let a = make_data_dir().unwrap();
        let b = make_data_dir().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(std::env::temp_dir()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&a).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = make_data_dir().unwrap();
        let path = dir.join(LOG_FILE);
        assert!(log_tail(&path).starts_with("(cannot read"));
        fs::write(&path, "").unwrap();
        assert!(log_tail(&path).ends_with("is empty)"));
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, text).unwrap();
        let tail = log_tail(&path);
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert!(tail.ends_with("line 99"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn health_check_on_a_closed_port_is_false() {
        assert!(!health_check(free_port()));
    }

    /// A fake etcd: a shell script running `body`.
    #[cfg(unix)]
    fn fake_etcd(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let fake = dir.join("fake-etcd");
        fs::write(&fake, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o700)).unwrap();
        fake
    }

    #[cfg(unix)]
    #[test]
    fn early_exit_is_reported_with_the_log() {
        let dir = make_data_dir().unwrap();
        let fake = fake_etcd(&dir, "echo 'unknown flag: --broken' >&2\nexit 3");
        let err = Etcd::start_with_binary(&fake, None).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, EtcdError::Exited { .. }), "{text}");
        assert!(text.contains("unknown flag: --broken"), "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn lost_port_race_is_retried_with_fresh_dirs() {
        let dir = make_data_dir().unwrap();
        let count = dir.join("attempts");
        let fake = fake_etcd(
            &dir,
            &format!(
                "echo \"$4\" >> '{}'\necho 'listen tcp: bind: address already in use' >&2\nexit 1",
                count.display()
            ),
        );
        let err = Etcd::start_with_binary(&fake, None).unwrap_err();
        assert!(err.is_port_race(), "{err}");
        // One line per attempt, each naming its own (since removed) data directory.
        let attempts = fs::read_to_string(&count).unwrap();
        let dirs: Vec<&str> = attempts.lines().collect();
        assert_eq!(dirs.len(), START_ATTEMPTS, "{attempts}");
        for (i, d) in dirs.iter().enumerate() {
            assert!(!dirs[..i].contains(d), "{attempts}");
            assert!(!Path::new(d).exists(), "{d} was left behind");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
