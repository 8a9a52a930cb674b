//! The command line (clap derive): the global options and the subcommands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// What `--help` says about exit codes and the environment.
const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  runtime failure (etcd unreachable or too slow, a write refused, a drain refused...)
  2  usage error (a bad command line, a spec file that cannot be read or is invalid)
  3  not found (an unknown group, node or name)

Environment:
  ACTORMESH_ETCD, ACTORMESH_CLUSTER, ACTORMESH_ETCD_PREFIX, ACTORMESH_ETCD_USER stand in for
  the options; ACTORMESH_ETCD_PASSWORD is the password of --user (never an option).";

/// The operator CLI of an actormesh cluster: reads the cluster from etcd, deploys and scales
/// groups, drains nodes.
#[derive(Debug, Clone, Parser)]
#[command(name = "actormesh", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        global = true,
        env = "ACTORMESH_ETCD",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        value_name = "URLS"
    )]
    pub etcd: Vec<String>,

    /// The cluster's name (the framework's default is `actormesh`).
    #[arg(
        long,
        global = true,
        env = "ACTORMESH_CLUSTER",
        default_value = "actormesh",
        value_name = "NAME"
    )]
    pub cluster: String,

    /// The etcd key prefix the nodes use.
    #[arg(
        long,
        global = true,
        env = "ACTORMESH_ETCD_PREFIX",
        default_value = "/actormesh",
        value_name = "PREFIX"
    )]
    pub prefix: String,

    /// etcd user (the password is read from ACTORMESH_ETCD_PASSWORD).
    #[arg(long, global = true, env = "ACTORMESH_ETCD_USER", value_name = "USER")]
    pub user: Option<String>,

    /// Machine-readable output: one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// The most the whole command may take, in seconds (fractions allowed); an unreachable
    /// etcd fails within it.
    #[arg(
        long,
        global = true,
        default_value = "5",
        value_name = "SECS",
        value_parser = parse_secs
    )]
    pub timeout: Duration,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Cluster summary: nodes, the leader, groups with desired/running, entity types.
    Status,
    /// The live members: id, address, admin address, version, labels, age, last load report.
    Nodes,
    /// Each group, from the specs and from the group memberships: desired replicas, running
    /// members, members per node, and why a group falls short.
    Groups,
    /// The stored group specs (with --json: in the spec file format, deployable as is).
    Specs,
    /// The controller's leader and its fencing token, or `none`.
    Leader,
    /// Registered cluster-wide names and the actor each points to.
    Names {
        /// Only this name (exit code 3 when it is not registered).
        name: Option<String>,
    },
    /// Writes the group spec in FILE (TOML or JSON, by extension); see the crate docs for the
    /// fields.
    Deploy {
        /// The spec file: `*.toml` or `*.json`.
        file: PathBuf,
    },
    /// Sets the replicas of a deployed group (exit code 3 for an unknown group).
    Scale {
        /// The group.
        group: String,
        /// The new number of replicas.
        replicas: u32,
    },
    /// Asks a node, on its admin listener (`POST /drain`), to hand its work over and leave.
    Drain {
        /// The node's id (exit code 3 when no live node has it).
        node: String,
        /// Wait (within --timeout) until the node has left the members.
        #[arg(long)]
        wait: bool,
    },
}

/// Parses `--timeout`: a positive number of seconds, at most a day.
fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "`{text}`: give a number of seconds above 0 and at most 86400"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_global_options_after_the_command() {
        let cli = Cli::try_parse_from(["actormesh", "nodes"]).unwrap();
        // The environment of the test run could set these; only check them when it does not.
        if std::env::var_os("ACTORMESH_ETCD").is_none() {
            assert_eq!(cli.etcd, ["http://127.0.0.1:2379"]);
        }
        if std::env::var_os("ACTORMESH_CLUSTER").is_none() {
            assert_eq!(cli.cluster, "actormesh");
        }
        assert_eq!(cli.timeout, Duration::from_secs(5));
        assert!(!cli.json);
        let cli = Cli::try_parse_from([
            "actormesh",
            "scale",
            "g",
            "3",
            "--json",
            "--etcd",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--timeout",
            "0.5",
        ])
        .unwrap();
        assert_eq!(cli.etcd, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert!(cli.json);
        assert_eq!(cli.timeout, Duration::from_millis(500));
        assert!(matches!(cli.command, Command::Scale { ref group, replicas: 3 } if group == "g"));
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for line in [
            &["actormesh"][..],
            &["actormesh", "scale", "g"],
            &["actormesh", "scale", "g", "-1"],
            &["actormesh", "nodes", "--timeout", "0"],
            &["actormesh", "nodes", "--timeout", "soon"],
            &["actormesh", "frobnicate"],
        ] {
            let err = Cli::try_parse_from(line).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{line:?}: {err}");
        }
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("3  not found"), "{help}");
        assert!(help.contains("ACTORMESH_ETCD"), "{help}");
    }
}
