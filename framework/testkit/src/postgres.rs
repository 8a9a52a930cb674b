//! [`Postgres`]: a real, throwaway PostgreSQL server on a free loopback port.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::{free_ports, is_executable, log_tail, make_dir};

/// How long [`Postgres::start`] and [`Postgres::start_again`] wait for the server to accept
/// connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `initdb` may take (a few seconds usually, with `--no-sync`).
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `pg_ctl kill` (sending one signal) may take.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two readiness probes, or two checks on a process.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Bound on connecting to the server during one readiness probe.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// Bound on reading or writing during one readiness probe.
const PROBE_IO_TIMEOUT: Duration = Duration::from_millis(1000);
/// How many times a start is attempted when the server loses a race for its port.
const START_ATTEMPTS: usize = 4;
/// The user and group (`nobody`/`nogroup` on Debian) that run PostgreSQL when this process
/// is root: PostgreSQL refuses to run as root.
const UNPRIVILEGED_ID: u32 = 65534;
/// The name of that user, for `runuser` and `su`.
const UNPRIVILEGED_USER: &str = "nobody";
/// The superuser `initdb` creates, and the one [`Postgres::conninfo`] logs in as.
const SUPERUSER: &str = "postgres";
/// Inside the temporary directory: the cluster (`PGDATA`).
const DATA_DIR: &str = "data";
/// Inside the temporary directory: the server's output, appended to across restarts.
const LOG_FILE: &str = "postgres.log";
/// Inside the temporary directory: `initdb`'s output.
const INITDB_LOG_FILE: &str = "initdb.log";
/// Where Debian and Ubuntu install the server binaries, one directory per major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The message of [`PostgresError::NotFound`].
const NOT_FOUND_MESSAGE: &str = "PostgreSQL was not found (looked at $PG_BIN, PATH and \
     /usr/lib/postgresql/*/bin): on Debian/Ubuntu `apt-get install postgresql`, on Fedora \
     `dnf install postgresql-server`, on macOS `brew install postgresql`, or set PG_BIN to the \
     directory of initdb and postgres";

/// Why a [`Postgres`] could not be started.
///
/// `Debug` prints the same text as `Display`, so `Postgres::start().unwrap()` and tests
/// returning `Result<(), PostgresError>` fail with a readable message (including what to
/// install).
#[non_exhaustive]
pub enum PostgresError {
    /// No directory with `initdb`, `postgres` and `pg_ctl`: not `$PG_BIN`, nor one on `PATH`,
    /// nor `/usr/lib/postgresql/*/bin`.
    NotFound {
        /// The directory that was tried, if there was one (`$PG_BIN`).
        tried: Option<PathBuf>,
    },
    /// This process is root, and none of `setpriv`, `runuser` and `su` is there to run
    /// PostgreSQL (which refuses to run as root) as `nobody`.
    NoUnprivilegedRunner,
    /// An I/O operation needed to run PostgreSQL failed.
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// `initdb` failed, or did not finish in time (then it was killed).
    Initdb {
        /// How it exited; `None` if it was killed for taking too long.
        status: Option<ExitStatus>,
        /// The end of its output.
        log_tail: String,
    },
    /// The server exited before accepting connections.
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// The server did not accept connections before the deadline; it has been stopped.
    NotReady {
        /// The address that was probed.
        address: String,
        /// How long it was waited for.
        waited: Duration,
        /// The end of its log.
        log_tail: String,
    },
    /// [`Postgres::start_again`] was called while the server was still running.
    AlreadyRunning,
}

impl PostgresError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        PostgresError::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostgresError::NotFound { .. } => f.write_str(NOT_FOUND_MESSAGE),
            PostgresError::NoUnprivilegedRunner => f.write_str(
                "PostgreSQL refuses to run as root, and none of setpriv, runuser and su was \
                 found to run it as `nobody`: install util-linux, or run the tests as another user",
            ),
            PostgresError::Io { context, source } => write!(f, "{context}: {source}"),
            PostgresError::Initdb {
                status: Some(status),
                log_tail,
            } => write!(
                f,
                "initdb failed ({status}); end of its output:\n{log_tail}"
            ),
            PostgresError::Initdb {
                status: None,
                log_tail,
            } => write!(
                f,
                "initdb did not finish within {INITDB_TIMEOUT:?} and was killed; end of its \
                 output:\n{log_tail}"
            ),
            PostgresError::Exited { status, log_tail } => write!(
                f,
                "postgres exited ({status}) before accepting connections; end of its log:\n\
                 {log_tail}"
            ),
            PostgresError::NotReady {
                address,
                waited,
                log_tail,
            } => write!(
                f,
                "postgres at {address} did not accept connections within {waited:?} and was \
                 stopped; end of its log:\n{log_tail}"
            ),
            PostgresError::AlreadyRunning => {
                f.write_str("postgres is already running: stop it before starting it again")
            }
        }
    }
}

impl fmt::Debug for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for PostgresError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PostgresError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A PostgreSQL server on 127.0.0.1, owned by a test, with its own cluster in a temporary
/// directory (made by `initdb`, superuser `postgres`, `trust` authentication, `fsync=off`).
///
/// ```no_run
/// use actormesh_testkit::Postgres;
///
/// let mut pg = Postgres::start().unwrap();
/// let conninfo = pg.conninfo(); // "host=127.0.0.1 port=<port> user=postgres dbname=postgres"
/// // ... point the code under test at `conninfo` ...
/// pg.restart().unwrap(); // same port, same data
/// # let _ = conninfo;
/// ```
///
/// The binaries (`initdb`, `postgres`, `pg_ctl`, from one directory) are taken from `$PG_BIN`
/// if set, else from the first directory on `PATH` that has them, else from Debian's
/// `/usr/lib/postgresql/<version>/bin` of the highest version. When none is found,
/// [`Postgres::start`] fails with [`PostgresError::NotFound`], whose message says what to
/// install: tests using it fail loudly rather than silently skipping.
///
/// PostgreSQL refuses to run as root: when this process is root, the directory is made under
/// `/tmp` and given to `nobody` (uid and gid 65534), and `initdb`, `postgres` and `pg_ctl` run
/// as `nobody` through `setpriv`, else `runuser`, else `su`.
///
/// Dropping it stops the server and removes the directory.
#[derive(Debug)]
pub struct Postgres {
    binaries: Binaries,
    runner: Runner,
    port: u16,
    /// The temporary directory: the cluster, the logs and the Unix socket.
    dir: PathBuf,
    /// The length of the log when the server was last spawned: what it wrote since starts here.
    log_offset: u64,
    child: Option<Child>,
}

impl Postgres {
    /// Makes a new cluster with `initdb`, starts the server on a free loopback port and waits
    /// (at most 30 s) until it accepts connections.
    ///
    /// If the server loses a race for its port, it is started again on another a few times.
    ///
    /// # Errors
    ///
    /// [`PostgresError::NotFound`] (with install instructions) if there are no binaries;
    /// otherwise an error carrying the end of `initdb`'s output or of the server's log.
    pub fn start() -> Result<Postgres, PostgresError> {
        let binaries = find_binaries(
            std::env::var_os("PG_BIN"),
            std::env::var_os("PATH"),
            Path::new(DEBIAN_ROOT),
        )?;
        Postgres::start_with(binaries)
    }

    fn start_with(binaries: Binaries) -> Result<Postgres, PostgresError> {
        let root = running_as_root();
        let runner = if root {
            Runner::unprivileged(std::env::var_os("PATH"))?
        } else {
            Runner::Direct
        };
        // `nobody` must be able to reach the directory: /tmp, not a root-only $TMPDIR.
        let base = if root {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = make_dir(&base, "actormesh-pg").map_err(|e| {
            PostgresError::io(
                format!("cannot create a directory under {}", base.display()),
                e,
            )
        })?;
        let mut pg = Postgres {
            binaries,
            runner,
            port: 0,
            dir,
            log_offset: 0,
            child: None,
        };
        // From here on, dropping `pg` removes the directory.
        if root {
            give_to_nobody(&pg.dir)?;
        }
        pg.initdb()?;
        let mut attempt = 1;
        loop {
            let [port] = free_ports::<1>()
                .map_err(|e| PostgresError::io("cannot pick a free loopback port", e))?;
            pg.port = port;
            match pg.spawn_and_wait() {
                Ok(()) => return Ok(pg),
                Err(e) if pg.lost_port_race(&e) && attempt < START_ATTEMPTS => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The libpq connection string:
    /// `host=127.0.0.1 port=<port> user=postgres dbname=postgres` (no password: the cluster
    /// trusts every local connection).
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname=postgres",
            self.port
        )
    }

    /// The port on 127.0.0.1; it stays the same across [`Postgres::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding the cluster, the logs and the server's Unix socket;
    /// removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster's directory (`PGDATA`), inside [`Postgres::dir`].
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(DATA_DIR)
    }

    /// The file receiving the server's output (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The directory of the `initdb`, `postgres` and `pg_ctl` in use (it usually has `psql`
    /// too).
    pub fn bin_dir(&self) -> &Path {
        &self.binaries.dir
    }

    /// Whether the process is running (as far as this handle knows) and the server accepts a
    /// login right now (the check of `pg_isready`). Bounded by about a second.
    pub fn is_ready(&self) -> bool {
        self.child.is_some() && accepts_login(self.port)
    }

    /// Stops the server and waits for it to exit; the cluster is kept.
    ///
    /// A fast shutdown (`SIGINT`: clients are disconnected, the data is checkpointed); if the
    /// server has not exited within 15 s, it is killed. Does nothing if it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The postmaster's pid: the child itself when run directly or through setpriv (which
        // execs), the pid file's first line when runuser or su stays in between.
        let pid = if self.runner.execs() {
            child.id()
        } else {
            postmaster_pid(&self.data_dir()).unwrap_or(child.id())
        };
        let signalled = self.signal(pid, "INT");
        if signalled && wait_bounded(&mut child, STOP_TIMEOUT).is_some() {
            return;
        }
        if pid != child.id() {
            self.signal(pid, "KILL");
        }
        // `kill` only fails if the process has already been reaped, which `wait` settles.
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the server again after [`Postgres::stop`], on the same port with the same
    /// cluster (so the same [`conninfo`](Postgres::conninfo) and the same data), and waits
    /// until it accepts connections.
    ///
    /// # Errors
    ///
    /// [`PostgresError::AlreadyRunning`] if it was not stopped; otherwise as
    /// [`Postgres::start`].
    pub fn start_again(&mut self) -> Result<(), PostgresError> {
        if self.child.is_some() {
            return Err(PostgresError::AlreadyRunning);
        }
        let mut attempt = 1;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                // The port is fixed now: give whoever holds it a moment to let go.
                Err(e) if self.lost_port_race(&e) && attempt < START_ATTEMPTS => {
                    attempt += 1;
                    thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`Postgres::stop`] followed by [`Postgres::start_again`]: same port, same data.
    ///
    /// # Errors
    ///
    /// As [`Postgres::start_again`].
    pub fn restart(&mut self) -> Result<(), PostgresError> {
        self.stop();
        self.start_again()
    }

    /// Runs `initdb` into [`Postgres::data_dir`], bounded by [`INITDB_TIMEOUT`].
    fn initdb(&mut self) -> Result<(), PostgresError> {
        let log_path = self.dir.join(INITDB_LOG_FILE);
        let (out, err) = open_log(&log_path)?;
        let mut child = self
            .runner
            .command(&self.binaries.initdb)
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
            ])
            .arg("--locale=C")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| self.spawn_error(&self.binaries.initdb, e))?;
        match wait_bounded(&mut child, INITDB_TIMEOUT) {
            Some(status) if status.success() => Ok(()),
            status => {
                if status.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Err(PostgresError::Initdb {
                    status,
                    log_tail: log_tail(&log_path),
                })
            }
        }
    }

    /// Spawns the server and waits until it accepts connections; on failure nothing is left
    /// running.
    fn spawn_and_wait(&mut self) -> Result<(), PostgresError> {
        let log_path = self.log_path();
        let (out, err) = open_log(&log_path)?;
        self.log_offset = fs::metadata(&log_path).map_or(0, |m| m.len());
        let child = self
            .runner
            .command(&self.binaries.postgres)
            .arg("-D")
            .arg(self.data_dir())
            .arg("-k")
            .arg(&self.dir)
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-c", "fsync=off"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| self.spawn_error(&self.binaries.postgres, e))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Probes every [`POLL_INTERVAL`] until ready, exited, or [`STARTUP_TIMEOUT`].
    fn wait_ready(&mut self) -> Result<(), PostgresError> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                let exited = child
                    .try_wait()
                    .map_err(|e| PostgresError::io("cannot check on postgres", e))?;
                if let Some(status) = exited {
                    self.child = None;
                    return Err(PostgresError::Exited {
                        status,
                        log_tail: log_tail(&self.log_path()),
                    });
                }
            }
            if accepts_login(self.port) {
                return Ok(());
            }
            if started.elapsed() >= STARTUP_TIMEOUT {
                self.stop();
                return Err(PostgresError::NotReady {
                    address: format!("127.0.0.1:{}", self.port),
                    waited: started.elapsed(),
                    log_tail: log_tail(&self.log_path()),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether the server died of a taken port, as its log says since it was last spawned.
    fn lost_port_race(&self, e: &PostgresError) -> bool {
        matches!(e, PostgresError::Exited { .. })
            && log_since(&self.log_path(), self.log_offset).contains("Address already in use")
    }

    /// Sends `SIGNAL` to `pid` with `pg_ctl kill` (as the user running the server); whether it
    /// was sent.
    fn signal(&self, pid: u32, signal: &str) -> bool {
        let spawned = self
            .runner
            .command(&self.binaries.pg_ctl)
            .args(["kill", signal])
            .arg(pid.to_string())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = spawned else {
            return false;
        };
        match wait_bounded(&mut child, SIGNAL_TIMEOUT) {
            Some(status) => status.success(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                false
            }
        }
    }

    fn spawn_error(&self, binary: &Path, e: io::Error) -> PostgresError {
        match (e.kind(), &self.runner) {
            (io::ErrorKind::NotFound, Runner::Direct) => PostgresError::NotFound {
                tried: Some(self.binaries.dir.clone()),
            },
            _ => PostgresError::io(
                format!("cannot run {}{}", self.runner.describe(), binary.display()),
                e,
            ),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The server binaries, all from one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binaries {
    dir: PathBuf,
    initdb: PathBuf,
    postgres: PathBuf,
    pg_ctl: PathBuf,
}

impl Binaries {
    /// The binaries in `dir`, if it has all three.
    fn in_dir(dir: &Path) -> Option<Binaries> {
        let exe = |name: &str| {
            let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
            is_executable(&path).then_some(path)
        };
        Some(Binaries {
            dir: dir.to_path_buf(),
            initdb: exe("initdb")?,
            postgres: exe("postgres")?,
            pg_ctl: exe("pg_ctl")?,
        })
    }
}

/// `$PG_BIN` when set and non-empty (and then only it), else the first directory on `path`
/// with all three binaries, else `<debian_root>/<highest version>/bin`.
fn find_binaries(
    pg_bin: Option<OsString>,
    path: Option<OsString>,
    debian_root: &Path,
) -> Result<Binaries, PostgresError> {
    if let Some(dir) = pg_bin.filter(|dir| !dir.is_empty()) {
        let dir = PathBuf::from(dir);
        return Binaries::in_dir(&dir).ok_or(PostgresError::NotFound { tried: Some(dir) });
    }
    let on_path = path
        .iter()
        .flat_map(|path| std::env::split_paths(path).collect::<Vec<_>>())
        .filter(|dir| !dir.as_os_str().is_empty())
        .find_map(|dir| Binaries::in_dir(&dir));
    if let Some(binaries) = on_path {
        return Ok(binaries);
    }
    debian_versions(debian_root)
        .into_iter()
        .find_map(|dir| Binaries::in_dir(&dir.join("bin")))
        .ok_or(PostgresError::NotFound { tried: None })
}

/// The version directories under `root` (`15`, `9.6`, …), highest version first; names that
/// are not versions are left out.
fn debian_versions(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path()))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, path)| path).collect()
}

/// How the server's programs are run: as this process's user, or as `nobody` when that is
/// root.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Runner {
    Direct,
    /// `setpriv --reuid … --regid … --clear-groups -- program …`: execs the program, so the
    /// child is the program itself.
    Setpriv(PathBuf),
    /// `runuser -u nobody -- program …`: stays as the program's parent.
    Runuser(PathBuf),
    /// `su -s /bin/sh -c 'exec "$0" "$@"' -- nobody program …`: the last resort.
    Su(PathBuf),
}

impl Runner {
    /// The first of `setpriv`, `runuser` and `su` found on `path` or in the usual places.
    fn unprivileged(path: Option<OsString>) -> Result<Runner, PostgresError> {
        let mut dirs: Vec<PathBuf> = path
            .iter()
            .flat_map(|path| std::env::split_paths(path).collect::<Vec<_>>())
            .filter(|dir| !dir.as_os_str().is_empty())
            .collect();
        // A root shell's PATH may lack the sbin directories (runuser is in /usr/sbin).
        dirs.extend(["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from));
        let find = |name: &str| {
            dirs.iter()
                .map(|dir| dir.join(name))
                .find(|candidate| is_executable(candidate))
        };
        if let Some(setpriv) = find("setpriv") {
            Ok(Runner::Setpriv(setpriv))
        } else if let Some(runuser) = find("runuser") {
            Ok(Runner::Runuser(runuser))
        } else if let Some(su) = find("su") {
            Ok(Runner::Su(su))
        } else {
            Err(PostgresError::NoUnprivilegedRunner)
        }
    }

    /// A command running `program` (its arguments are added by the caller).
    fn command(&self, program: &Path) -> Command {
        match self {
            Runner::Direct => Command::new(program),
            Runner::Setpriv(setpriv) => {
                let mut command = Command::new(setpriv);
                command
                    .arg(format!("--reuid={UNPRIVILEGED_ID}"))
                    .arg(format!("--regid={UNPRIVILEGED_ID}"))
                    .args(["--clear-groups", "--"])
                    .arg(program);
                command
            }
            Runner::Runuser(runuser) => {
                let mut command = Command::new(runuser);
                command.args(["-u", UNPRIVILEGED_USER, "--"]).arg(program);
                command
            }
            Runner::Su(su) => {
                let mut command = Command::new(su);
                command
                    // `--`: the program's options are not su's.
                    .args(["-s", "/bin/sh", "-c", r#"exec "$0" "$@""#, "--"])
                    .arg(UNPRIVILEGED_USER)
                    .arg(program);
                command
            }
        }
    }

    /// Whether the child is the program itself (no process stays in between).
    fn execs(&self) -> bool {
        matches!(self, Runner::Direct | Runner::Setpriv(_))
    }

    /// For error messages: how the program was run.
    fn describe(&self) -> String {
        match self {
            Runner::Direct => String::new(),
            Runner::Setpriv(p) | Runner::Runuser(p) | Runner::Su(p) => {
                format!("(as {UNPRIVILEGED_USER}, through {}) ", p.display())
            }
        }
    }
}

/// Whether this process runs as root (effective uid 0), from `/proc/self/status`, else from
/// `id -u`.
fn running_as_root() -> bool {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        // "Uid:\t<real>\t<effective>\t<saved>\t<filesystem>"
        if let Some(line) = status.lines().find(|line| line.starts_with("Uid:")) {
            return line.split_whitespace().nth(2) == Some("0");
        }
    }
    Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Makes `dir` `nobody`'s (it is empty and private: 0700).
#[cfg(unix)]
fn give_to_nobody(dir: &Path) -> Result<(), PostgresError> {
    std::os::unix::fs::chown(dir, Some(UNPRIVILEGED_ID), Some(UNPRIVILEGED_ID)).map_err(|e| {
        PostgresError::io(
            format!("cannot give {} to uid {UNPRIVILEGED_ID}", dir.display()),
            e,
        )
    })
}

#[cfg(not(unix))]
fn give_to_nobody(_dir: &Path) -> Result<(), PostgresError> {
    Ok(())
}

/// The log file opened for appending, twice: for stdout and stderr.
fn open_log(path: &Path) -> Result<(fs::File, fs::File), PostgresError> {
    let open_error = |e| PostgresError::io(format!("cannot open {}", path.display()), e);
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(open_error)?;
    let err = out.try_clone().map_err(open_error)?;
    Ok((out, err))
}

/// Waits at most `timeout` for `child` to exit; `None` if it is still running.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if started.elapsed() < timeout => thread::sleep(POLL_INTERVAL),
            // Still running at the deadline, or it cannot be waited for.
            Ok(None) | Err(_) => return None,
        }
    }
}

/// The postmaster's pid: the first line of `postmaster.pid` in the cluster.
fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// What the log says from byte `offset` on (at most its last 64 KiB).
fn log_since(path: &Path, offset: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let read = || -> io::Result<String> {
        let mut file = fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(offset.max(len.saturating_sub(64 * 1024))))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_default()
}

/// Whether the server on `port` accepts a login as `postgres`, within about a second: the
/// check `pg_isready` makes. A server that is starting up, shutting down or recovering
/// answers the startup message with an error; a ready one with an authentication request
/// (with `trust`: "authentication ok").
fn accepts_login(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, PROBE_CONNECT_TIMEOUT) else {
        return false;
    };
    if stream.set_read_timeout(Some(PROBE_IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(PROBE_IO_TIMEOUT)).is_err()
    {
        return false;
    }
    if stream
        .write_all(&startup_message(SUPERUSER, "postgres"))
        .is_err()
    {
        return false;
    }
    let mut kind = [0u8; 1];
    if stream.read_exact(&mut kind).is_err() {
        return false;
    }
    // 'R': an authentication request (or "ok"): the server takes logins. 'E': an error, such
    // as "the database system is starting up".
    let ready = kind[0] == b'R';
    if ready {
        // Terminate, so the server does not log an unexpected EOF.
        let _ = stream.write_all(&[b'X', 0, 0, 0, 4]);
    }
    ready
}

/// A protocol 3.0 startup message for `user` on `database`.
fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    for (name, value) in [("user", user), ("database", database)] {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let len = u32::try_from(body.len() + 4).expect("a short message");
    let mut message = len.to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: impl Into<OsString>) -> Option<OsString> {
        Some(s.into())
    }

    /// A directory with fake, executable `initdb`, `postgres` and `pg_ctl` (those in `names`).
    #[cfg(unix)]
    fn fake_bin_dir(dir: &Path, names: &[&str]) {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(dir).unwrap();
        for name in names {
            let path = dir.join(name);
            fs::write(&path, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    fn scratch() -> PathBuf {
        make_dir(&std::env::temp_dir(), "actormesh-pg-test").unwrap()
    }

    #[test]
    fn missing_binaries_give_install_instructions() {
        let missing = std::env::temp_dir().join("actormesh-testkit-no-such-pg-bin");
        let err = find_binaries(os(&missing), os("/usr/bin"), Path::new("/nonexistent"))
            .expect_err("a PG_BIN without binaries must fail");
        assert!(matches!(err, PostgresError::NotFound { tried: Some(ref p) } if *p == missing));
        assert_eq!(
            err.to_string(),
            "PostgreSQL was not found (looked at $PG_BIN, PATH and /usr/lib/postgresql/*/bin): \
             on Debian/Ubuntu `apt-get install postgresql`, on Fedora `dnf install \
             postgresql-server`, on macOS `brew install postgresql`, or set PG_BIN to the \
             directory of initdb and postgres"
        );
        // `unwrap()` and `-> Result` tests print Debug: it must carry the same message.
        assert_eq!(format!("{err:?}"), err.to_string());
        let err = find_binaries(None, None, Path::new("/nonexistent")).unwrap_err();
        assert!(matches!(err, PostgresError::NotFound { tried: None }));
    }

    #[cfg(unix)]
    #[test]
    fn path_then_the_highest_debian_version_is_taken() {
        let dir = scratch();
        let root = dir.join("lib-postgresql");
        let all = ["initdb", "postgres", "pg_ctl"];
        fake_bin_dir(&root.join("9.6/bin"), &all);
        fake_bin_dir(&root.join("10/bin"), &all);
        fake_bin_dir(&root.join("16/bin"), &["initdb", "postgres"]); // no pg_ctl: skipped
        fake_bin_dir(&root.join("notes/bin"), &all); // not a version: skipped
        let found = find_binaries(None, os("/nonexistent-dir"), &root).unwrap();
        assert_eq!(found.dir, root.join("10/bin"));
        assert_eq!(found.initdb, root.join("10/bin/initdb"));
        assert_eq!(found.pg_ctl, root.join("10/bin/pg_ctl"));

        // PATH comes before Debian's directories, PG_BIN before PATH.
        let on_path = dir.join("path-bin");
        fake_bin_dir(&on_path, &all);
        let path = std::env::join_paths([Path::new("/nonexistent-dir"), &on_path]).unwrap();
        let found = find_binaries(None, Some(path.clone()), &root).unwrap();
        assert_eq!(found.dir, on_path);
        let found = find_binaries(os(root.join("9.6/bin")), Some(path), &root).unwrap();
        assert_eq!(found.dir, root.join("9.6/bin"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debian_versions_sort_numerically() {
        let dir = scratch();
        for version in ["9.6", "15", "10", "16", "main"] {
            fs::create_dir(dir.join(version)).unwrap();
        }
        let names: Vec<String> = debian_versions(&dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["16", "15", "10", "9.6"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runners_wrap_the_program() {
        let program = Path::new("/pg/bin/postgres");
        let args = |runner: Runner| {
            let command = runner.command(program);
            let mut all = vec![command.get_program().to_string_lossy().into_owned()];
            all.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
            all
        };
        assert_eq!(args(Runner::Direct), ["/pg/bin/postgres"]);
        assert_eq!(
            args(Runner::Setpriv("/usr/bin/setpriv".into())),
            [
                "/usr/bin/setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "/pg/bin/postgres"
            ]
        );
        assert_eq!(
            args(Runner::Runuser("/usr/sbin/runuser".into())),
            [
                "/usr/sbin/runuser",
                "-u",
                "nobody",
                "--",
                "/pg/bin/postgres"
            ]
        );
        assert_eq!(
            args(Runner::Su("/bin/su".into())),
            [
                "/bin/su",
                "-s",
                "/bin/sh",
                "-c",
                r#"exec "$0" "$@""#,
                "--",
                "nobody",
                "/pg/bin/postgres"
            ]
        );
    }

    #[test]
    fn the_startup_message_is_protocol_3() {
        let message = startup_message("postgres", "db");
        let expected_body = b"\x00\x03\x00\x00user\0postgres\0database\0db\0\0";
        assert_eq!(
            &message[..4],
            &(4 + expected_body.len() as u32).to_be_bytes()
        );
        assert_eq!(&message[4..], expected_body);
    }

    #[test]
    fn a_closed_port_is_not_ready() {
        assert!(!accepts_login(crate::free_port()));
    }

    #[test]
    fn log_since_reads_from_the_offset() {
        let dir = scratch();
        let path = dir.join(LOG_FILE);
        assert_eq!(log_since(&path, 0), "");
        let old = "old: Address already in use\n";
        fs::write(&path, format!("{old}new: ok\n")).unwrap();
        assert_eq!(log_since(&path, old.len() as u64), "new: ok\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn postmaster_pid_is_the_first_line() {
        let dir = scratch();
        assert_eq!(postmaster_pid(&dir), None);
        fs::write(
            dir.join("postmaster.pid"),
            "4242\n/data\n1700000000\n5432\n",
        )
        .unwrap();
        assert_eq!(postmaster_pid(&dir), Some(4242));
        fs::remove_dir_all(&dir).unwrap();
    }
}
