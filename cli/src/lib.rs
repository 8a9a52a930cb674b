//! `actormesh`, the operator CLI of an actormesh cluster: it reads the cluster from etcd with
//! the framework's own discovery ([`EtcdDiscovery`](actormesh::discovery::EtcdDiscovery)) and
//! writes desired state (group specs) there; the nodes' controller does the rest.
//!
//! ```text
//! actormesh [--etcd URLS] [--cluster NAME] [--prefix PREFIX] [--json] [--timeout SECS] COMMAND
//!
//!   status              nodes, leader, groups (desired/running), entity types
//!   nodes               the live members: id, addresses, version, labels, age, last load report
//!   groups              each group: desired (spec), running, members per node, why it is short
//!   specs               the stored group specs
//!   leader              the controller's leader and its fencing token, or `none`
//!   names [NAME]        registered cluster-wide names and the actor each points to
//!   deploy FILE         writes the group spec in FILE (.toml or .json)
//!   scale GROUP N       sets the replicas of a deployed group
//!   drain NODE [--wait] asks the node (on its admin listener) to hand its work over and leave
//! ```
//!
//! # Options
//!
//! | option | environment | default |
//! |---|---|---|
//! | `--etcd URL[,URL…]` | `ACTORMESH_ETCD` | `http://127.0.0.1:2379` |
//! | `--cluster NAME` | `ACTORMESH_CLUSTER` | `actormesh` (the framework's default cluster) |
//! | `--prefix PREFIX` | `ACTORMESH_ETCD_PREFIX` | `/actormesh` (the framework's key prefix) |
//! | `--user USER` (password from `ACTORMESH_ETCD_PASSWORD`) | `ACTORMESH_ETCD_USER` | none |
//! | `--timeout SECS` | | 5 |
//! | `--json` | | off |
//!
//! `--timeout` bounds the whole command, `drain --wait` included: an etcd that cannot be
//! reached fails the command with a message naming the endpoints, and exit code 1, within
//! that time. `--json` prints exactly one JSON document on stdout (on success); messages and
//! warnings always go to stderr.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | runtime failure: etcd unreachable or too slow, a write refused, a drain refused... |
//! | 2 | usage error: a bad command line (clap's), or a spec file that cannot be read or is invalid (nothing was written) |
//! | 3 | not found: an unknown group, node or name |
//!
//! # Spec files (`deploy`)
//!
//! A [`GroupSpec`](actormesh::GroupSpec) in TOML (`.toml`) or JSON (`.json`), by the file's
//! extension. Unknown fields are refused, and every error names the field (and, in TOML, the
//! line):
//!
//! ```toml
//! group = "replicas"              # required; no '/'
//! actor_type = "cluster.Replica"  # required: the Spawnable's stable name
//! replicas = 3                    # default: 1 (a singleton: 1; with autoscale: its min)
//! placement = "spread"            # round_robin (default), least_loaded, spread, { custom = "name" }
//! selector = { role = "replica" } # only nodes with all these labels
//! anti_affinity = "zone"          # spread across the values of this label
//! max_per_node = 2
//! singleton = false
//! args_string = "tag"             # the constructor arguments, see below
//!
//! [autoscale]                     # optional
//! min = 1
//! max = 6
//! target_per_replica = 10.0
//! hysteresis = 0.25               # default 0.25
//! cooldown_ms = 5000              # default 5000
//! ```
//!
//! The constructor arguments are stored encoded (as the node decodes a
//! [`Spawnable::Args`](actormesh::Spawnable::Args); see
//! [`GroupSpec::encode_args`](actormesh::GroupSpec::encode_args)). A file gives at most one of:
//!
//! - nothing: the encoding of `()`, what a constructor without arguments (`type Args = ()`)
//!   expects;
//! - `args_string = "..."`: the encoding of a `String` (`type Args = String`);
//! - `args_hex = "..."`: the encoded bytes as they are, in hex (any other `Args`: encode them
//!   with `GroupSpec::encode_args` in a program). `actormesh specs --json` prints each spec in
//!   this file format, so a stored spec can be saved, edited and deployed again;
//! - `args = [..]`: the encoded bytes as a list of numbers, as the spec is stored in etcd.
//!
//! No other form is offered: the encoding is not self-describing, so a JSON value could not
//! be encoded for an `Args` type the CLI does not know without silently producing bytes the
//! node cannot decode.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

pub mod args;
mod commands;
pub mod http;
pub mod output;
pub mod spec_file;
pub mod table;

pub use args::{Cli, Command};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: runtime failure (etcd unreachable, a write refused, a drain refused...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: usage error (a bad command line, an invalid spec file).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: not found (an unknown group, node or name).
pub const EXIT_NOT_FOUND: u8 = 3;

/// Why a command failed; each kind has its exit code ([`Failure::exit_code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A runtime failure (exit code 1).
    Runtime(String),
    /// A usage error (exit code 2).
    Usage(String),
    /// An unknown group, node or name (exit code 3).
    NotFound(String),
}

impl Failure {
    /// The process exit code of this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Runtime(_) => EXIT_FAILURE,
            Failure::Usage(_) => EXIT_USAGE,
            Failure::NotFound(_) => EXIT_NOT_FOUND,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Failure::Runtime(m) | Failure::Usage(m) | Failure::NotFound(m) => m,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Failure {}

impl From<actormesh::Error> for Failure {
    fn from(e: actormesh::Error) -> Self {
        match e {
            actormesh::Error::UnknownGroup(group) => {
                Failure::NotFound(format!("no group `{group}` is deployed"))
            }
            actormesh::Error::UnknownNode(node) => {
                Failure::NotFound(format!("no live node `{node}`"))
            }
            other => Failure::Runtime(other.to_string()),
        }
    }
}

/// Runs the command line `cli`, writing its output to `out` and warnings to stderr. The whole
/// command is bounded by `--timeout`.
pub async fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), Failure> {
    let timeout = cli.timeout;
    match tokio::time::timeout(timeout, commands::run(cli, out)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Runtime(format!(
            "no answer within {} (--timeout) from etcd at {}; is it running and reachable?",
            output::duration(timeout),
            cli.etcd.join(",")
        ))),
    }
}

/// The program: parses the command line (clap exits 2 on a bad one, 0 for `--help`), runs
/// the command on a single-threaded runtime, prints a failure as `error: ...` on stderr and
/// returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = runtime.block_on(run(&cli, &mut out));
    let _ = out.flush();
    // The etcd client's tasks are cancelled, not waited for.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}
