//! The commands: each reads what it needs through [`Discovery`] and prints a table (or, with
//! `--json`, one JSON document).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::{Discovery, GroupMember, GroupSpec, GroupStatus, LoadReport, NodeInfo};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::args::{Cli, Command};
use crate::output::{self, age, labels, or_dash};
use crate::spec_file::{self, SpecFile};
use crate::table::Table;
use crate::{http, Failure};

/// How often `drain --wait` looks at the members.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// Runs `cli`'s command. A failure of etcd names the endpoints.
pub(crate) async fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), Failure> {
    match dispatch(cli, out).await {
        Err(Failure::Runtime(message)) if message.starts_with("discovery error") => Err(
            Failure::Runtime(format!("etcd at {}: {message}", cli.etcd.join(","))),
        ),
        other => other,
    }
}

/// Runs `cli`'s command.
async fn dispatch(cli: &Cli, out: &mut dyn Write) -> Result<(), Failure> {
    let deadline = Instant::now() + cli.timeout;
    // A spec file is read and checked before etcd is contacted: a bad one writes nothing.
    if let Command::Deploy { file } = &cli.command {
        let spec = spec_file::load(file)
            .map_err(|e| Failure::Usage(format!("spec file {}: {e}", file.display())))?;
        let d = connect(cli).await?;
        return deploy(cli, &d, spec, out).await;
    }
    let d = connect(cli).await?;
    match &cli.command {
        Command::Status => status(cli, &d, out).await,
        Command::Nodes => nodes(cli, &d, out).await,
        Command::Groups => groups(cli, &d, out).await,
        Command::Specs => specs(cli, &d, out).await,
        Command::Leader => leader(cli, &d, out).await,
        Command::Names { name } => names(cli, &d, name.as_deref(), out).await,
        Command::Scale { group, replicas } => scale(cli, &d, group, *replicas, out).await,
        Command::Drain { node, wait } => drain(cli, &d, node, *wait, deadline, out).await,
        Command::Deploy { .. } => unreachable!("handled above"),
    }
}

/// Connects to etcd with `--timeout` as the connect and the request timeout.
async fn connect(cli: &Cli) -> Result<EtcdDiscovery, Failure> {
    let mut config = EtcdConfig::new(cli.etcd.clone())
        .prefix(cli.prefix.clone())
        .connect_timeout(cli.timeout)
        .request_timeout(cli.timeout);
    if let Some(user) = &cli.user {
        let password = std::env::var("ACTORMESH_ETCD_PASSWORD").map_err(|_| {
            Failure::Usage("--user needs the password in ACTORMESH_ETCD_PASSWORD".to_owned())
        })?;
        config = config.credentials(user.clone(), password);
    }
    EtcdDiscovery::connect(config)
        .await
        .map_err(|e| Failure::Runtime(e.to_string()))
}

/// Writes `value` as one pretty JSON document.
fn print_json(out: &mut dyn Write, value: &impl Serialize) -> Result<(), Failure> {
    serde_json::to_writer_pretty(&mut *out, value)
        .map_err(|e| Failure::Runtime(format!("cannot write the output: {e}")))?;
    writeln!(out).map_err(write_failed)
}

fn print(out: &mut dyn Write, text: &str) -> Result<(), Failure> {
    out.write_all(text.as_bytes()).map_err(write_failed)
}

fn write_failed(e: std::io::Error) -> Failure {
    Failure::Runtime(format!("cannot write the output: {e}"))
}

/// The live members, sorted by id.
async fn members(cli: &Cli, d: &EtcdDiscovery) -> Result<Vec<NodeInfo>, Failure> {
    let mut members = d.read_members(&cli.cluster).await?;
    members.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(members)
}

/// The stored specs, sorted by group.
async fn read_specs(cli: &Cli, d: &EtcdDiscovery) -> Result<Vec<GroupSpec>, Failure> {
    let mut specs = d.read_specs(&cli.cluster).await?;
    specs.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(specs)
}

// ---------------------------------------------------------------------------------------------
// nodes

/// A node and its last load report (`--json` of `nodes`).
#[derive(Debug, Serialize)]
struct NodeRow<'a> {
    #[serde(flatten)]
    info: &'a NodeInfo,
    load: Option<&'a LoadReport>,
}

/// The `nodes` table.
pub(crate) fn nodes_table(
    members: &[NodeInfo],
    loads: &BTreeMap<actormesh::NodeId, LoadReport>,
    now_ms: u64,
) -> Table {
    let mut table = Table::new([
        "ID", "ADDRESS", "ADMIN", "VERSION", "LABELS", "AGE", "ACTORS", "ASKS/S", "REPORTED",
    ]);
    for node in members {
        let load = loads.get(&node.id);
        table.row([
            node.id.to_string(),
            node.addr.to_string(),
            or_dash(node.admin),
            node.version.clone(),
            labels(&node.labels),
            age(now_ms, node.started_at_ms),
            or_dash(load.map(|l| l.actors)),
            or_dash(load.map(|l| format!("{:.1}", l.asks_per_second))),
            load.map_or_else(
                || "-".to_owned(),
                |l| format!("{} ago", age(now_ms, l.at_ms)),
            ),
        ]);
    }
    table
}

async fn nodes(cli: &Cli, d: &EtcdDiscovery, out: &mut dyn Write) -> Result<(), Failure> {
    let members = members(cli, d).await?;
    let loads = d.loads(&cli.cluster).await?;
    if cli.json {
        let rows: Vec<NodeRow<'_>> = members
            .iter()
            .map(|info| NodeRow {
                info,
                load: loads.get(&info.id),
            })
            .collect();
        return print_json(out, &rows);
    }
    if members.is_empty() {
        return print(out, &format!("no live node in cluster `{}`\n", cli.cluster));
    }
    print(
        out,
        &nodes_table(&members, &loads, output::now_ms()).render(),
    )
}

// ---------------------------------------------------------------------------------------------
// groups

/// A group as `groups` shows it: from its spec (if deployed) and its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct GroupRow {
    /// The group.
    pub(crate) group: String,
    /// The spec's actor type, or the members' for a group without a spec.
    pub(crate) actor_type: String,
    /// Whether a spec is stored for it.
    pub(crate) deployed: bool,
    /// The replicas the spec asks for (none without a spec).
    pub(crate) desired: Option<u32>,
    /// The members on live nodes.
    pub(crate) running: u32,
    /// The members per node.
    pub(crate) per_node: BTreeMap<String, u32>,
    /// `complete`, `starting`, `retiring`, `blocked`, or `unmanaged` (no spec: members the
    /// application joined itself).
    pub(crate) state: &'static str,
    /// Why the group falls short, when something stands in its way.
    pub(crate) blocked: Option<String>,
}

/// The groups of `specs` and `groups` (members by group), measured with
/// [`GroupStatus::assess`] against the `live` nodes; sorted by group.
pub(crate) fn group_rows(
    specs: &[GroupSpec],
    groups: &BTreeMap<String, Vec<GroupMember>>,
    live: &[NodeInfo],
    led: bool,
) -> Vec<GroupRow> {
    let per_node = |members: &[GroupMember]| {
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for m in members {
            *counts.entry(m.node.to_string()).or_default() += 1;
        }
        counts
    };
    let mut rows: BTreeMap<String, GroupRow> = BTreeMap::new();
    for spec in specs {
        let members = groups.get(&spec.group).map_or(&[][..], Vec::as_slice);
        let status = GroupStatus::assess(spec, members, live, led);
        let state = if status.blocked.is_some() {
            "blocked"
        } else if status.running < status.desired {
            "starting"
        } else if status.running > status.desired {
            "retiring"
        } else {
            "complete"
        };
        rows.insert(
            spec.group.clone(),
            GroupRow {
                group: spec.group.clone(),
                actor_type: spec.actor_type.clone(),
                deployed: true,
                desired: Some(status.desired),
                running: status.running,
                per_node: per_node(members),
                state,
                blocked: status.blocked.map(|b| b.to_string()),
            },
        );
    }
    for (group, members) in groups {
        if rows.contains_key(group) {
            continue;
        }
        let running = members
            .iter()
            .filter(|m| live.iter().any(|n| n.id == m.node))
            .count() as u32;
        let mut types: Vec<&str> = members.iter().map(|m| m.actor_type.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        rows.insert(
            group.clone(),
            GroupRow {
                group: group.clone(),
                actor_type: types.join(","),
                deployed: false,
                desired: None,
                running,
                per_node: per_node(members),
                state: "unmanaged",
                blocked: None,
            },
        );
    }
    rows.into_values().collect()
}

/// The `groups` table.
pub(crate) fn groups_table(rows: &[GroupRow]) -> Table {
    let mut table = Table::new([
        "GROUP", "TYPE", "DESIRED", "RUNNING", "PER NODE", "STATE", "WHY",
    ]);
    for row in rows {
        table.row([
            row.group.clone(),
            row.actor_type.clone(),
            or_dash(row.desired),
            row.running.to_string(),
            output::counts(&row.per_node),
            row.state.to_owned(),
            row.blocked.clone().unwrap_or_default(),
        ]);
    }
    table
}

/// Reads the specs, the groups' members, the members and the leader, and measures the groups.
async fn read_groups(cli: &Cli, d: &EtcdDiscovery) -> Result<Vec<GroupRow>, Failure> {
    let specs = read_specs(cli, d).await?;
    let groups = d.read_groups(&cli.cluster).await?;
    let live = d.read_members(&cli.cluster).await?;
    let led = d.leader(&cli.cluster).await?.is_some();
    Ok(group_rows(&specs, &groups, &live, led))
}

async fn groups(cli: &Cli, d: &EtcdDiscovery, out: &mut dyn Write) -> Result<(), Failure> {
    let rows = read_groups(cli, d).await?;
    if cli.json {
        return print_json(out, &rows);
    }
    if rows.is_empty() {
        return print(out, &format!("no group in cluster `{}`\n", cli.cluster));
    }
    print(out, &groups_table(&rows).render())
}

// ---------------------------------------------------------------------------------------------
// specs

/// The `specs` table.
pub(crate) fn specs_table(specs: &[GroupSpec]) -> Table {
    let mut table = Table::new([
        "GROUP",
        "TYPE",
        "REPLICAS",
        "PLACEMENT",
        "SELECTOR",
        "ANTI-AFFINITY",
        "MAX/NODE",
        "SINGLETON",
        "AUTOSCALE",
        "ARGS",
    ]);
    for spec in specs {
        table.row([
            spec.group.clone(),
            spec.actor_type.clone(),
            spec.replicas.to_string(),
            output::placement(&spec.placement),
            labels(&spec.selector),
            or_dash(spec.anti_affinity.as_deref()),
            or_dash(spec.max_per_node),
            if spec.singleton { "yes" } else { "no" }.to_owned(),
            output::autoscale(spec.autoscale.as_ref()),
            format!("{} B", spec.args.len()),
        ]);
    }
    table
}

async fn specs(cli: &Cli, d: &EtcdDiscovery, out: &mut dyn Write) -> Result<(), Failure> {
    let specs = read_specs(cli, d).await?;
    if cli.json {
        let files: Vec<SpecFile> = specs.iter().map(SpecFile::from_spec).collect();
        return print_json(out, &files);
    }
    if specs.is_empty() {
        return print(out, &format!("no spec in cluster `{}`\n", cli.cluster));
    }
    print(out, &specs_table(&specs).render())
}

// ---------------------------------------------------------------------------------------------
// leader

async fn leader(cli: &Cli, d: &EtcdDiscovery, out: &mut dyn Write) -> Result<(), Failure> {
    let leader = d.leader(&cli.cluster).await?;
    if cli.json {
        return print_json(out, &leader_json(leader.as_ref()));
    }
    print(out, &format!("{}\n", leader_text(leader.as_ref())))
}

fn leader_json(leader: Option<&(actormesh::NodeId, u64)>) -> serde_json::Value {
    match leader {
        Some((node, token)) => json!({ "leader": node, "token": token }),
        None => json!({ "leader": null, "token": null }),
    }
}

fn leader_text(leader: Option<&(actormesh::NodeId, u64)>) -> String {
    match leader {
        Some((node, token)) => format!("{node} (token {token})"),
        None => "none".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// names

/// A registered name (`--json` of `names`).
#[derive(Debug, Serialize)]
struct NameRow<'a> {
    name: &'a str,
    #[serde(flatten)]
    entry: &'a actormesh::discovery::NameEntry,
}

/// The `names` table.
pub(crate) fn names_table(names: &[(String, actormesh::discovery::NameEntry)]) -> Table {
    let mut table = Table::new(["NAME", "NODE", "ADDRESS", "ACTOR", "TYPE"]);
    for (name, entry) in names {
        table.row([
            name.clone(),
            entry.node.to_string(),
            entry.addr.to_string(),
            entry.actor.to_string(),
            entry.actor_type.clone(),
        ]);
    }
    table
}

async fn names(
    cli: &Cli,
    d: &EtcdDiscovery,
    only: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let names = match only {
        Some(name) => match d.lookup_name(&cli.cluster, name).await? {
            Some(entry) => vec![(name.to_owned(), entry)],
            None => {
                return Err(Failure::NotFound(format!(
                    "no name `{name}` is registered in cluster `{}`",
                    cli.cluster
                )))
            }
        },
        None => d.read_names(&cli.cluster).await?,
    };
    if cli.json {
        let rows: Vec<NameRow<'_>> = names
            .iter()
            .map(|(name, entry)| NameRow { name, entry })
            .collect();
        return match only {
            Some(_) => print_json(out, &rows[0]),
            None => print_json(out, &rows),
        };
    }
    if names.is_empty() {
        return print(
            out,
            &format!("no name registered in cluster `{}`\n", cli.cluster),
        );
    }
    print(out, &names_table(&names).render())
}

// ---------------------------------------------------------------------------------------------
// status

async fn status(cli: &Cli, d: &EtcdDiscovery, out: &mut dyn Write) -> Result<(), Failure> {
    let members = members(cli, d).await?;
    let leader = d.leader(&cli.cluster).await?;
    let specs = read_specs(cli, d).await?;
    let groups = d.read_groups(&cli.cluster).await?;
    let rows = group_rows(&specs, &groups, &members, leader.is_some());
    // Entity types are shown when the backend can list their hosts.
    let entities = match d.read_entity_hosts(&cli.cluster).await {
        Ok(hosts) => Some(hosts),
        Err(e) => {
            eprintln!("warning: cannot read the entity types: {e}");
            None
        }
    };
    let entity_rows: Option<Vec<serde_json::Value>> = entities.as_ref().map(|hosts| {
        hosts
            .iter()
            .map(|(kind, nodes)| {
                json!({
                    "type": kind,
                    "hosts": nodes.keys().collect::<Vec<_>>(),
                    "shards": nodes.values().copied().max().unwrap_or(0),
                })
            })
            .collect()
    });
    let ids: Vec<String> = members.iter().map(|n| n.id.to_string()).collect();
    if cli.json {
        return print_json(
            out,
            &json!({
                "cluster": cli.cluster,
                "nodes": { "up": members.len(), "ids": ids },
                "leader": leader_json(leader.as_ref()),
                "groups": rows,
                "entity_types": entity_rows,
            }),
        );
    }
    let mut by_state: BTreeMap<&str, u32> = BTreeMap::new();
    for row in &rows {
        *by_state.entry(row.state).or_default() += 1;
    }
    let states = if by_state.is_empty() {
        "none".to_owned()
    } else {
        by_state
            .iter()
            .map(|(state, n)| format!("{n} {state}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = String::new();
    let mut summary = Table::new(["cluster", &cli.cluster]);
    summary.row([
        "etcd".to_owned(),
        format!("{} (prefix {})", cli.etcd.join(","), cli.prefix),
    ]);
    summary.row([
        "nodes".to_owned(),
        if ids.is_empty() {
            "0 up".to_owned()
        } else {
            format!("{} up: {}", ids.len(), ids.join(", "))
        },
    ]);
    summary.row(["leader".to_owned(), leader_text(leader.as_ref())]);
    summary.row(["groups".to_owned(), states]);
    text.push_str(&summary.render());
    if !rows.is_empty() {
        text.push('\n');
        text.push_str(&groups_table(&rows).render());
    }
    if let Some(hosts) = entities.filter(|h| !h.is_empty()) {
        text.push('\n');
        let mut table = Table::new(["ENTITY TYPE", "SHARDS", "HOSTS"]);
        for (kind, nodes) in &hosts {
            table.row([
                kind.clone(),
                nodes.values().copied().max().unwrap_or(0).to_string(),
                nodes
                    .keys()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ]);
        }
        text.push_str(&table.render());
    }
    print(out, &text)
}

// ---------------------------------------------------------------------------------------------
// deploy, scale

async fn deploy(
    cli: &Cli,
    d: &EtcdDiscovery,
    spec: GroupSpec,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let previous = read_specs(cli, d)
        .await?
        .into_iter()
        .find(|s| s.group == spec.group);
    let live = d.read_members(&cli.cluster).await?;
    if !live
        .iter()
        .any(|n| n.spawnable.iter().any(|t| t == &spec.actor_type))
    {
        eprintln!(
            "warning: no live node of cluster `{}` can spawn `{}` (yet); the group stays empty until one registers it",
            cli.cluster, spec.actor_type
        );
    }
    d.put_spec(&cli.cluster, &spec).await?;
    if cli.json {
        return print_json(
            out,
            &json!({
                "deployed": SpecFile::from_spec(&spec),
                "replaced": previous.is_some(),
            }),
        );
    }
    let what = match &previous {
        Some(p) => format!("replaced the spec of {} replicas", p.replicas),
        None => "new".to_owned(),
    };
    print(
        out,
        &format!(
            "deployed group `{}` in cluster `{}`: {} replica(s) of {} ({what})\n",
            spec.group, cli.cluster, spec.replicas, spec.actor_type
        ),
    )
}

async fn scale(
    cli: &Cli,
    d: &EtcdDiscovery,
    group: &str,
    replicas: u32,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let specs = read_specs(cli, d).await?;
    let Some(mut spec) = specs.iter().find(|s| s.group == group).cloned() else {
        let known: Vec<&str> = specs.iter().map(|s| s.group.as_str()).collect();
        return Err(Failure::NotFound(format!(
            "no group `{group}` is deployed in cluster `{}` (deployed: {})",
            cli.cluster,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    if spec.singleton && replicas > 1 {
        return Err(Failure::Usage(format!(
            "group `{group}` is a singleton: it runs at most one replica"
        )));
    }
    if let Some(a) = spec.autoscale {
        eprintln!(
            "warning: group `{group}` autoscales between {} and {} replicas: the controller sets the count from the load",
            a.min, a.max
        );
    }
    let from = spec.replicas;
    spec.replicas = replicas;
    d.put_spec(&cli.cluster, &spec).await?;
    if cli.json {
        return print_json(
            out,
            &json!({ "group": group, "from": from, "to": replicas }),
        );
    }
    print(
        out,
        &format!("scaled group `{group}`: {from} -> {replicas} replica(s)\n"),
    )
}

// ---------------------------------------------------------------------------------------------
// drain

/// Where to reach `node`'s admin listener: its published admin address, with the node's own
/// IP when the admin address is unspecified (`0.0.0.0`, `[::]`).
pub(crate) fn admin_target(node: &NodeInfo) -> Option<SocketAddr> {
    let admin = node.admin?;
    Some(if admin.ip().is_unspecified() {
        SocketAddr::new(node.addr.ip(), admin.port())
    } else {
        admin
    })
}

async fn drain(
    cli: &Cli,
    d: &EtcdDiscovery,
    id: &str,
    wait: bool,
    deadline: Instant,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let members = members(cli, d).await?;
    let Some(node) = members.iter().find(|n| n.id.as_str() == id) else {
        return Err(Failure::NotFound(format!(
            "no live node `{id}` in cluster `{}`",
            cli.cluster
        )));
    };
    let Some(admin) = admin_target(node) else {
        return Err(Failure::Runtime(format!(
            "node `{id}` publishes no admin address: it runs no admin listener (NodeBuilder::admin), so it cannot be drained from here"
        )));
    };
    let response = http::request(admin, "POST", "/drain")
        .await
        .map_err(|e| Failure::Runtime(format!("drain of node `{id}` at {admin}: {e}")))?;
    if !(200..300).contains(&response.status) {
        return Err(Failure::Runtime(format!(
            "node `{id}` refused the drain: HTTP {} from {admin}: {}",
            response.status,
            response.text().trim()
        )));
    }
    let body: serde_json::Value =
        serde_json::from_slice(&response.body).unwrap_or_else(|_| json!(response.text()));
    let started = Instant::now();
    let mut left = false;
    if wait {
        // Bounded in count and by the command's deadline.
        let rounds =
            (deadline.saturating_duration_since(started).as_millis() / WAIT_POLL.as_millis()) + 1;
        for _ in 0..rounds {
            let still = d.read_members(&cli.cluster).await?;
            if !still.iter().any(|n| n.id.as_str() == id) {
                left = true;
                break;
            }
            if Instant::now() + WAIT_POLL >= deadline {
                break;
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
        if !left {
            return Err(Failure::Runtime(format!(
                "node `{id}` accepted the drain but is still a member after {} (raise --timeout to wait longer)",
                output::duration(started.elapsed())
            )));
        }
    }
    if cli.json {
        return print_json(
            out,
            &json!({
                "node": id,
                "admin": admin,
                "status": response.status,
                "response": body,
                "waited": wait,
                "left": wait.then_some(left),
            }),
        );
    }
    let mut text = format!(
        "node `{id}` is draining (HTTP {} from {admin})\n",
        response.status
    );
    if left {
        text.push_str(&format!(
            "node `{id}` left the cluster after {}\n",
            output::duration(started.elapsed())
        ));
    }
    print(out, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actormesh::{ActorId, NodeId};

    fn node(id: &str, spawnable: &[&str]) -> NodeInfo {
        NodeInfo {
            id: NodeId::new(id),
            cluster: "c".into(),
            addr: "127.0.0.1:4000".parse().unwrap(),
            protocol: 1,
            version: "0.1.0".into(),
            labels: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
            started_at_ms: 1_000,
            spawnable: spawnable.iter().map(|s| s.to_string()).collect(),
            admin: None,
        }
    }

    fn member(node: &str, actor: u64) -> GroupMember {
        GroupMember {
            node: NodeId::new(node),
            addr: "127.0.0.1:4000".parse().unwrap(),
            actor: serde_json::from_value::<ActorId>(json!(actor)).unwrap(),
            actor_type: "t".into(),
            weight: 1,
        }
    }

    fn spec(group: &str, replicas: u32) -> GroupSpec {
        SpecFile {
            replicas: Some(replicas),
            ..serde_json::from_value(json!({"group": group, "actor_type": "t"})).unwrap()
        }
        .into_spec()
        .unwrap()
    }

    #[test]
    fn groups_from_specs_and_from_members() {
        let live = [node("a", &["t"]), node("b", &["t"])];
        let groups = BTreeMap::from([
            ("complete".to_owned(), vec![member("a", 1), member("b", 2)]),
            ("short".to_owned(), vec![member("a", 3)]),
            ("mine".to_owned(), vec![member("b", 4), member("b", 5)]),
        ]);
        let specs = [spec("complete", 2), spec("short", 3), spec("empty", 1)];
        let rows = group_rows(&specs, &groups, &live, true);
        let summary: Vec<(&str, Option<u32>, u32, &str)> = rows
            .iter()
            .map(|r| (r.group.as_str(), r.desired, r.running, r.state))
            .collect();
        assert_eq!(
            summary,
            [
                ("complete", Some(2), 2, "complete"),
                ("empty", Some(1), 0, "starting"),
                ("mine", None, 2, "unmanaged"),
                ("short", Some(3), 1, "starting"),
            ]
        );
        assert_eq!(rows[2].per_node, BTreeMap::from([("b".to_owned(), 2)]));
        assert!(!rows[2].deployed);
        // Without a leader, a short group is blocked, and says why.
        let rows = group_rows(&specs, &groups, &live, false);
        assert_eq!(rows[3].state, "blocked");
        assert!(rows[3].blocked.as_deref().unwrap().contains("controller"));
        let table = groups_table(&rows).render();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("GROUP     TYPE  DESIRED  RUNNING  PER NODE"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("complete  t     2        2        a=1,b=1   complete"),
            "{table}"
        );
        assert!(
            lines[3].starts_with("mine      t     -        2        b=2       unmanaged"),
            "{table}"
        );
    }

    #[test]
    fn the_nodes_table() {
        let mut a = node("a", &[]);
        a.admin = Some("127.0.0.1:9000".parse().unwrap());
        let b = node("bb", &[]);
        let loads = BTreeMap::from([(
            NodeId::new("a"),
            LoadReport {
                actors: 12,
                inflight_asks: 0,
                send_queue_bytes: 0,
                asks_per_second: 3.25,
                at_ms: 61_000,
            },
        )]);
        let text = nodes_table(&[a, b], &loads, 62_000).render();
        assert_eq!(
            text,
            "ID  ADDRESS         ADMIN           VERSION  LABELS  AGE    ACTORS  ASKS/S  REPORTED\n\
             a   127.0.0.1:4000  127.0.0.1:9000  0.1.0    zone=a  1m01s  12      3.2     1s ago\n\
             bb  127.0.0.1:4000  -               0.1.0    zone=a  1m01s  -       -       -\n"
        );
    }

    #[test]
    fn the_specs_and_names_tables_and_the_leader() {
        let text = specs_table(&[spec("g", 2)]).render();
        assert!(
            text.starts_with("GROUP  TYPE  REPLICAS  PLACEMENT"),
            "{text}"
        );
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .starts_with("g      t     2         round_robin  -"),
            "{text}"
        );
        let entry = actormesh::discovery::NameEntry {
            node: NodeId::new("a"),
            addr: "127.0.0.1:4000".parse().unwrap(),
            actor: serde_json::from_value(json!(7)).unwrap(),
            actor_type: "cluster.Counter".into(),
        };
        let text = names_table(&[("counter-a".to_owned(), entry)]).render();
        assert!(
            text.ends_with("counter-a  a     127.0.0.1:4000  #7     cluster.Counter\n"),
            "{text}"
        );
        assert_eq!(leader_text(None), "none");
        assert_eq!(leader_text(Some(&(NodeId::new("a"), 17))), "a (token 17)");
        assert_eq!(
            leader_json(Some(&(NodeId::new("a"), 17))),
            json!({"leader": "a", "token": 17})
        );
    }

    #[test]
    fn the_admin_target() {
        let mut n = node("a", &[]);
        assert_eq!(admin_target(&n), None);
        n.admin = Some("0.0.0.0:9000".parse().unwrap());
        assert_eq!(admin_target(&n), Some("127.0.0.1:9000".parse().unwrap()));
        n.admin = Some("127.0.0.2:9000".parse().unwrap());
        assert_eq!(admin_target(&n), Some("127.0.0.2:9000".parse().unwrap()));
    }
}
