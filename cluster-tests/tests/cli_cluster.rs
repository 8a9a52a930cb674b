//! The `actormesh` operator CLI against a real cluster: a real etcd (`actormesh_testkit`),
//! `cluster-node` processes (three controller candidates with admin listeners, one plain
//! node without), and the CLI run as a process, as an operator runs it. It lists the nodes,
//! the leader and the names, deploys a spec file and scales the group while the cluster
//! follows (every wait a condition polled with a deadline), refuses what it must with the
//! documented exit codes, and drains a node through its admin listener.
//!
//! The CLI binary is `cli/src/main.rs` built as `actormesh-cli` by this package (see its
//! Cargo.toml); `ACTORMESH_CLI=/path/to/actormesh` runs another build instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use actormesh::{Discovery, GroupSpec};
use actormesh_cluster_tests::{etcd_discovery, poll_until, NodeProcess, NodeSpec, TTL};
use actormesh_testkit::Etcd;
use serde_json::Value;
use tokio::time::Instant;

const NODE_BIN: &str = env!("CARGO_BIN_EXE_cluster-node");

/// The CLI under test.
fn cli_bin() -> String {
    std::env::var("ACTORMESH_CLI")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_actormesh-cli").to_owned())
}

/// The most one CLI run may take before the test gives up on it (it is killed).
const CLI_LIMIT: Duration = Duration::from_secs(30);
/// How long the cluster may take to follow a deploy or a scale.
const SETTLE: Duration = Duration::from_secs(20);
/// How long processes and load reports may take to show up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop (or the end of a drained process) may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between two looks at a polled condition (each look runs the CLI once).
const POLL: Duration = Duration::from_millis(100);
/// What a failing CLI may take beyond its `--timeout` (process start, printing).
const EXIT_SLACK: Duration = Duration::from_secs(3);

/// One test at a time: the cluster scenario measures convergence on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How one CLI run ended.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// The CLI pointed at one etcd and cluster.
#[derive(Debug, Clone)]
struct Cli {
    etcd: String,
    cluster: String,
}

impl Cli {
    /// Runs the CLI with `args` after `--etcd` and `--cluster`.
    async fn run(&self, args: &[&str]) -> Run {
        let mut command = tokio::process::Command::new(cli_bin());
        command
            .args(["--etcd", &self.etcd, "--cluster", &self.cluster])
            .args(args)
            .env_remove("ACTORMESH_ETCD_USER")
            .env_remove("ACTORMESH_ETCD_PREFIX")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let started = Instant::now();
        let output = tokio::time::timeout(CLI_LIMIT, command.output())
            .await
            .unwrap_or_else(|_| panic!("actormesh {args:?} still running after {CLI_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", cli_bin()));
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    /// Runs the CLI with `args --json`, which must succeed, and parses its output.
    async fn json(&self, args: &[&str]) -> Value {
        let run = self.json_run(args).await;
        assert_eq!(run.code, Some(0), "actormesh {args:?} --json: {run:?}");
        parse_json(&run, args)
    }

    /// Runs the CLI with `args --json`; the parsed output when it succeeds, else the run.
    async fn try_json(&self, args: &[&str]) -> Result<Value, String> {
        let run = self.json_run(args).await;
        if run.code != Some(0) {
            return Err(format!("exit {:?}: {}", run.code, run.stderr.trim()));
        }
        Ok(parse_json(&run, args))
    }

    async fn json_run(&self, args: &[&str]) -> Run {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        self.run(&with_json).await
    }

    /// Runs the CLI with `args`, which must exit with `code`; returns the run.
    async fn expect_code(&self, args: &[&str], code: i32) -> Run {
        let run = self.run(args).await;
        assert_eq!(run.code, Some(code), "actormesh {args:?}: {run:?}");
        run
    }

    /// Waits until `groups --json` shows `group` complete with `replicas` running, and
    /// returns its row.
    async fn wait_for_group(&self, group: &str, replicas: u64) -> Value {
        poll_until(
            &format!("group {group} runs {replicas}"),
            SETTLE,
            POLL,
            || async {
                let rows = self.try_json(&["groups"]).await?;
                let row = rows
                    .as_array()
                    .and_then(|rows| rows.iter().find(|r| r["group"] == group))
                    .cloned()
                    .ok_or_else(|| format!("no row for {group}: {rows}"))?;
                if row["desired"] == replicas
                    && row["running"] == replicas
                    && row["state"] == "complete"
                {
                    Ok(row)
                } else {
                    Err(format!("{row}"))
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

fn parse_json(run: &Run, args: &[&str]) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "actormesh {args:?} --json prints one JSON document ({e}): {:?}",
            run.stdout
        )
    })
}

/// The ids in a `nodes --json` document.
fn node_ids(nodes: &Value) -> Vec<String> {
    nodes
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A directory of its own for the test's spec files.
fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actormesh-cli-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("the spec file is written");
    path.to_string_lossy().into_owned()
}

/// Starts node `id` of `cluster`: a controller candidate (labelled `role=replica`) with an
/// admin listener, or a plain node without one.
async fn start_node(endpoint: &str, cluster: &str, id: &str, candidate: bool) -> NodeProcess {
    let mut spec = NodeSpec::new(NODE_BIN, cluster, id).etcd(endpoint).ttl(TTL);
    if candidate {
        spec = spec.controller().admin();
    }
    spec.start()
        .await
        .unwrap_or_else(|e| panic!("{id} starts: {e}"))
}

/// The scenario: read the cluster, deploy, scale, refuse, drain.
#[tokio::test]
async fn the_cli_reads_and_steers_a_live_cluster() {
    let _serial = SERIAL.lock().await;
    let etcd = Etcd::start().expect("the CLI cluster test needs a real etcd");
    let endpoint = etcd.endpoint();
    let cluster = "cli";
    let mut procs = Vec::new();
    for id in ["p1", "p2", "p3"] {
        procs.push(start_node(&endpoint, cluster, id, true).await);
    }
    procs.push(start_node(&endpoint, cluster, "p4", false).await);
    let cli = Cli {
        etcd: endpoint.clone(),
        cluster: cluster.to_owned(),
    };
    let dir = scratch_dir();

    // nodes: the four processes, each with its admin address (or none) and a load report.
    let nodes = poll_until(
        "every node with a load report",
        JOIN_TIMEOUT,
        POLL,
        || async {
            let nodes = cli.try_json(&["nodes"]).await?;
            let complete = node_ids(&nodes) == ["p1", "p2", "p3", "p4"]
                && nodes
                    .as_array()
                    .is_some_and(|a| a.iter().all(|n| n["load"]["actors"].as_u64() >= Some(2)));
            if complete {
                Ok(nodes)
            } else {
                Err(format!("{nodes}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for node in nodes.as_array().unwrap() {
        let id = node["id"].as_str().unwrap();
        assert!(
            node["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{node}"
        );
        assert!(!node["version"].as_str().unwrap().is_empty(), "{node}");
        assert!(node["started_at_ms"].as_u64().unwrap() > 0, "{node}");
        assert!(node["load"]["at_ms"].as_u64().unwrap() > 0, "{node}");
        if id == "p4" {
            assert!(node["admin"].is_null(), "p4 runs no admin listener: {node}");
            assert!(node["labels"].as_object().unwrap().is_empty(), "{node}");
        } else {
            assert!(
                node["admin"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{node}"
            );
            assert_eq!(node["labels"]["role"], "replica", "{node}");
        }
    }
    let table = cli.expect_code(&["nodes"], 0).await.stdout;
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ID  ") && header.contains("ADMIN"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 5, "a header and four rows: {table}");

    // leader: one of the candidates, with its fencing token.
    let leader = poll_until("a leader", JOIN_TIMEOUT, POLL, || async {
        let leader = cli.try_json(&["leader"]).await?;
        if leader["leader"].is_string() {
            Ok(leader)
        } else {
            Err(format!("{leader}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let leader_id = leader["leader"].as_str().unwrap().to_owned();
    assert!(["p1", "p2", "p3"].contains(&leader_id.as_str()), "{leader}");
    assert!(leader["token"].as_u64().unwrap() > 0, "{leader}");
    let text = cli.expect_code(&["leader"], 0).await.stdout;
    assert!(text.starts_with(&format!("{leader_id} (token ")), "{text}");

    // names: each node's counter and observer, pointing at their node.
    let names = cli.json(&["names"]).await;
    let listed: Vec<(&str, &str)> = names
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["node"].as_str().unwrap()))
        .collect();
    for id in ["p1", "p2", "p3", "p4"] {
        for kind in ["counter", "observer"] {
            let name = format!("{kind}-{id}");
            assert!(listed.contains(&(name.as_str(), id)), "{name}: {names}");
        }
    }
    let one = cli.json(&["names", "counter-p2"]).await;
    assert_eq!(one["node"], "p2", "{one}");
    assert_eq!(one["actor_type"], "cluster.Counter", "{one}");
    let run = cli.expect_code(&["names", "nobody"], 3).await;
    assert!(run.stderr.contains("nobody"), "{run:?}");

    // Nothing deployed yet.
    assert_eq!(cli.json(&["specs"]).await, Value::Array(vec![]));

    // deploy a TOML spec file; the cluster runs it.
    let toml = write(
        &dir,
        "replicas.toml",
        r#"
group = "replicas"
actor_type = "cluster.Replica"
replicas = 2
placement = "spread"
selector = { role = "replica" }
args_string = "from-cli"
"#,
    );
    let run = cli.expect_code(&["deploy", &toml], 0).await;
    assert!(run.stdout.contains("`replicas`"), "{run:?}");
    cli.wait_for_group("replicas", 2).await;
    // What the CLI wrote is what a program would have written.
    let reader = etcd_discovery(&endpoint, TTL)
        .await
        .expect("the test's discovery");
    let stored = reader.read_specs(cluster).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].replicas, 2);
    assert_eq!(stored[0].args, GroupSpec::encode_args("from-cli").unwrap());
    assert_eq!(stored[0].selector["role"], "replica");

    // scale up and down: the cluster follows.
    cli.expect_code(&["scale", "replicas", "3"], 0).await;
    let row = cli.wait_for_group("replicas", 3).await;
    assert_eq!(
        row["per_node"],
        serde_json::json!({"p1": 1, "p2": 1, "p3": 1}),
        "spread over the selected nodes, none on p4: {row}"
    );
    let scaled = cli.json(&["scale", "replicas", "1"]).await;
    assert_eq!(
        scaled,
        serde_json::json!({"group": "replicas", "from": 3, "to": 1})
    );
    cli.wait_for_group("replicas", 1).await;
    assert_eq!(reader.read_specs(cluster).await.unwrap()[0].replicas, 1);

    // Unknown group: exit code 3, nothing written.
    let run = cli.expect_code(&["scale", "ghost", "2"], 3).await;
    assert!(run.stderr.contains("ghost"), "{run:?}");
    // A bad spec file: exit code 2, the field named, nothing written.
    let bad = write(
        &dir,
        "bad.toml",
        "group = \"bad\"\nactor_type = \"cluster.Replica\"\nreplicas = \"many\"\n",
    );
    let run = cli.expect_code(&["deploy", &bad], 2).await;
    assert!(run.stderr.contains("`replicas`"), "{run:?}");
    assert_eq!(reader.read_specs(cluster).await.unwrap().len(), 1);

    // specs --json prints deployable files: a copy of the spec, edited, deployed from JSON.
    let specs = cli.json(&["specs"]).await;
    let mut copy = specs[0].clone();
    assert_eq!(copy["args_hex"], "0866726f6d2d636c69", "{copy}");
    copy["group"] = "copy".into();
    copy["replicas"] = 2.into();
    let json = write(&dir, "copy.json", &copy.to_string());
    let deployed = cli.json(&["deploy", &json]).await;
    assert_eq!(deployed["replaced"], false, "{deployed}");
    let copies = cli.wait_for_group("copy", 2).await;
    let text = cli.expect_code(&["specs"], 0).await.stdout;
    assert!(text.contains("copy") && text.contains("spread"), "{text}");

    // status: the whole picture.
    let status = cli.json(&["status"]).await;
    assert_eq!(status["cluster"], cluster);
    assert_eq!(status["nodes"]["up"], 4, "{status}");
    assert_eq!(status["leader"]["leader"], leader_id.as_str(), "{status}");
    let groups: Vec<(&str, &str)> = status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["group"].as_str().unwrap(), g["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        groups,
        [("copy", "complete"), ("replicas", "complete")],
        "{status}"
    );
    let text = cli.expect_code(&["status"], 0).await.stdout;
    assert!(text.contains("4 up") && text.contains("replicas"), "{text}");

    // drain: refused for an unknown node and for one without an admin listener.
    let run = cli.expect_code(&["drain", "ghost"], 3).await;
    assert!(run.stderr.contains("ghost"), "{run:?}");
    let run = cli.expect_code(&["drain", "p4"], 1).await;
    assert!(run.stderr.contains("admin"), "{run:?}");
    // A node that holds a replica of `copy` drains: it leaves the members, and the group is
    // whole again on the others. (Whether its process then ends by itself is cluster-node's
    // business, not the CLI's: it is stopped with the others below.)
    let drained = ["p1", "p2", "p3"]
        .into_iter()
        .find(|id| *id != leader_id && copies["per_node"].get(*id).is_some())
        .unwrap_or_else(|| panic!("a node besides the leader runs a copy: {copies}"));
    let run = cli
        .json_run(&["drain", drained, "--wait", "--timeout", "30"])
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let answer = parse_json(&run, &["drain"]);
    assert_eq!(answer["status"], 202, "{answer}");
    assert_eq!(answer["response"]["draining"], true, "{answer}");
    assert_eq!(answer["left"], true, "{answer}");
    assert!(
        !node_ids(&cli.json(&["nodes"]).await).contains(&drained.to_owned()),
        "{drained} is gone from the members"
    );
    let row = cli.wait_for_group("copy", 2).await;
    assert!(row["per_node"].get(drained).is_none(), "{row}");

    for mut p in procs {
        let status = p
            .stop(STOP_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{} stops: {e}", p.id));
        assert!(status.success(), "{} exited with {status}", p.id);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An etcd that cannot be reached fails the command with exit code 1 and a message naming
/// it, within `--timeout`: a closed port (refused at once) and a port that accepts but never
/// answers (only the timeout ends the wait).
#[tokio::test]
async fn an_unreachable_etcd_fails_within_the_timeout() {
    let _serial = SERIAL.lock().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let cli = Cli {
        etcd: format!("http://{closed}"),
        cluster: "nowhere".to_owned(),
    };
    let run = cli.run(&["nodes", "--timeout", "2"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains(&closed.to_string()), "{run:?}");
    assert!(run.elapsed < Duration::from_secs(2) + EXIT_SLACK, "{run:?}");

    // Accepts connections (the kernel's backlog) and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cli = Cli {
        etcd: format!("http://{}", silent.local_addr().unwrap()),
        cluster: "nowhere".to_owned(),
    };
    for args in [
        &["status", "--timeout", "1"][..],
        &["scale", "g", "2", "--timeout", "1", "--json"],
    ] {
        let run = cli.run(args).await;
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(run.stderr.contains("etcd"), "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "nothing on stdout: {run:?}");
        assert!(
            run.elapsed < Duration::from_secs(1) + EXIT_SLACK,
            "{args:?} took {:?}",
            run.elapsed
        );
    }
    drop(silent);
}
