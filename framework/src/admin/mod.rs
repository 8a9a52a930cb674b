//! The admin listener of a node (see [`NodeBuilder::admin`](crate::NodeBuilder::admin)): an
//! HTTP/1.1 server, off unless asked for, serving
//!
//! | path            | what                                                                      |
//! |-----------------|---------------------------------------------------------------------------|
//! | `GET /`         | the live dashboard (one self-contained page, works offline)               |
//! | `GET /metrics`  | Prometheus text (see [`metrics`](crate::metrics))                         |
//! | `GET /healthz`  | `200 ok` while the node's runtime answers (liveness)                      |
//! | `GET /readyz`   | `200` when joined, discovery reachable and not draining; `503` otherwise  |
//! | `GET /status`   | the cluster as this node sees it, in JSON (what the dashboard shows)      |
//! | `POST /drain`   | `202`: the node hands its work over and leaves (as on SIGTERM)            |
//!
//! The listener has no authentication: bind it to a private interface (loopback, the pod
//! network) and keep it off the public internet, like any Prometheus target.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use crate::core::model::{LoadReport, MembershipEvent, NodeInfo};
use crate::id::NodeId;
use crate::runtime::{lock, read, NodeShared};

mod collect;

/// How long the admin listener waits for discovery in one request.
const DISCOVERY_WAIT: Duration = Duration::from_secs(2);
/// Membership events kept for `/status`.
const EVENTS_KEPT: usize = 50;

/// The page served at `/`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// What the admin listener remembers beyond the node's own view: every node seen (also
/// those that departed) and the recent membership events.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    nodes: BTreeMap<NodeId, (NodeInfo, &'static str)>,
    events: VecDeque<EventJson>,
}

impl Seen {
    fn record(&mut self, event: &MembershipEvent) {
        let (id, kind) = match event {
            MembershipEvent::Up(info) => {
                self.nodes.insert(info.id.clone(), (info.clone(), "up"));
                (info.id.clone(), "up")
            }
            MembershipEvent::Down(id) => (id.clone(), "down"),
            MembershipEvent::Left(id) => (id.clone(), "left"),
        };
        if kind != "up" {
            if let Some(entry) = self.nodes.get_mut(&id) {
                entry.1 = kind;
            }
        }
        self.events.push_front(EventJson {
            at_ms: crate::id::unix_ms(std::time::SystemTime::now()),
            node: id.to_string(),
            kind,
        });
        self.events.truncate(EVENTS_KEPT);
    }
}

#[derive(Clone)]
struct AdminState {
    node: Weak<NodeShared>,
    seen: Arc<Mutex<Seen>>,
}

/// Starts serving `listener` until the node shuts down.
pub(crate) fn serve(node: &Arc<NodeShared>, listener: tokio::net::TcpListener) {
    if let Some(metrics) = &node.metrics {
        metrics.add_collector(collect::Snapshot(Arc::downgrade(node)));
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    {
        let mut s = lock(&seen);
        for info in node.members() {
            s.nodes.insert(info.id.clone(), (info, "up"));
        }
    }
    // Follow membership for the page's node states and events.
    let mut events = node.subscribe();
    let follow = Arc::downgrade(&seen);
    let mut stop = node.shutdown_signal();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => match follow.upgrade() {
                        Some(seen) => lock(&seen).record(&event),
                        None => return,
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
    let state = AdminState {
        node: Arc::downgrade(node),
        seen,
    };
    let app = router(state);
    let mut stop = node.shutdown_signal();
    let id = node.info.id.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!(node = %id, error = %e, "the admin listener stopped");
        }
    });
}

fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/drain", post(drain))
        .with_state(state)
}

fn gone() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "the node has stopped\n").into_response()
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn healthz(State(state): State<AdminState>) -> Response {
    match state.node.upgrade() {
        Some(_) => (StatusCode::OK, "ok\n").into_response(),
        None => gone(),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let Some(node) = state.node.upgrade() else {
        return gone();
    };
    let Some(metrics) = node.metrics.clone() else {
        return gone();
    };
    // Groups' desired and running replicas come from discovery; a scrape that cannot read
    // them in time still gets everything else (and the last values).
    if let Ok(Ok(groups)) = tokio::time::timeout(DISCOVERY_WAIT, group_rows(&node)).await {
        let rows: Vec<_> = groups
            .iter()
            .map(|g| (g.name.clone(), g.desired, g.running))
            .collect();
        metrics.set_groups(&rows);
    }
    drop(node);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

/// One readiness check.
#[derive(Debug, Serialize)]
struct Check {
    ok: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    joined: Check,
    discovery: Check,
    draining: Check,
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let Some(node) = state.node.upgrade() else {
        return gone();
    };
    let ready = readiness(&node).await;
    let code = if ready.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(ready)).into_response()
}

async fn readiness(node: &Arc<NodeShared>) -> Readiness {
    let me = &node.info.id;
    let member = read(&node.view).get(me).is_some();
    let joined = Check {
        ok: member && !node.is_stopping(),
        detail: if node.is_stopping() {
            "the node is shutting down".to_owned()
        } else if member {
            format!("{me} is a member of cluster {}", node.info.cluster)
        } else {
            format!("{me} is not in its own view of the cluster (declared down?)")
        },
    };
    let probe = tokio::time::timeout(
        DISCOVERY_WAIT,
        node.discovery.read_members(&node.info.cluster),
    )
    .await;
    let discovery = match probe {
        Ok(Ok(members)) => Check {
            ok: true,
            detail: format!("{} members read", members.len()),
        },
        Ok(Err(e)) => Check {
            ok: false,
            detail: e.to_string(),
        },
        Err(_) => Check {
            ok: false,
            detail: format!("no answer within {DISCOVERY_WAIT:?}"),
        },
    };
    let is_draining = node.draining.load(Ordering::Acquire);
    let draining = Check {
        ok: !is_draining,
        detail: if is_draining {
            "draining: handing work over before leaving".to_owned()
        } else {
            "serving".to_owned()
        },
    };
    Readiness {
        ready: joined.ok && discovery.ok && draining.ok,
        joined,
        discovery,
        draining,
    }
}

async fn drain(State(state): State<AdminState>) -> Response {
    let Some(node) = state.node.upgrade() else {
        return gone();
    };
    let first = !node.draining.swap(true, Ordering::AcqRel);
    tracing::info!(node = %node.info.id, "drain requested on the admin listener");
    if node.drain_waiters.load(Ordering::Acquire) > 0 {
        // `Node::run_until_stopped` drains in order (what feeds the node first).
        node.drain_requested.notify_waiters();
    } else {
        tokio::spawn(async move { node.shutdown().await });
    }
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "draining": true, "already": !first })),
    )
        .into_response()
}

/// `/status`: what the dashboard shows.
#[derive(Debug, Serialize)]
struct StatusJson {
    cluster: String,
    node: String,
    version: String,
    now_ms: u64,
    ready: bool,
    draining: bool,
    leader: Option<String>,
    nodes: Vec<NodeJson>,
    groups: Vec<GroupJson>,
    entities: Vec<EntityJson>,
    events: Vec<EventJson>,
    messages: MessagesJson,
}

#[derive(Debug, Serialize)]
struct NodeJson {
    id: String,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    state: &'static str,
    version: String,
    labels: BTreeMap<String, String>,
    started_at_ms: u64,
    load: Option<LoadReport>,
}

#[derive(Debug, Serialize)]
struct GroupJson {
    name: String,
    actor_type: String,
    desired: Option<u32>,
    running: u32,
    per_node: BTreeMap<String, u32>,
    blocked: Option<String>,
}

#[derive(Debug, Serialize)]
struct EntityJson {
    kind: &'static str,
    shards: u32,
    hosted_here: usize,
    activations: usize,
}

#[derive(Debug, Clone, Serialize)]
struct EventJson {
    at_ms: u64,
    node: String,
    kind: &'static str,
}

#[derive(Debug, Serialize)]
struct MessagesJson {
    sent: u64,
    received: u64,
    asks: u64,
    errors: u64,
    dropped: u64,
}

/// The groups with a spec, and how they stand; then the groups that have members but no
/// spec (`desired: None`), when the discovery backend can list them.
async fn group_rows(node: &NodeShared) -> crate::Result<Vec<GroupJson>> {
    let cluster = &node.info.cluster;
    let specs = node.discovery.read_specs(cluster).await?;
    let live = node.discovery.read_members(cluster).await?;
    let led = node.discovery.leader(cluster).await?.is_some();
    let on_live = |members: &[crate::core::model::GroupMember]| {
        let mut per_node = BTreeMap::new();
        for m in members
            .iter()
            .filter(|m| live.iter().any(|n| n.id == m.node))
        {
            *per_node.entry(m.node.to_string()).or_insert(0) += 1;
        }
        per_node
    };
    let mut rows = Vec::with_capacity(specs.len());
    for spec in &specs {
        let members = node.discovery.read_group(cluster, &spec.group).await?;
        let status = crate::core::status::assess(spec, &members, &live, led);
        rows.push(GroupJson {
            name: spec.group.clone(),
            actor_type: spec.actor_type.clone(),
            desired: Some(status.desired),
            running: status.running,
            per_node: on_live(&members),
            blocked: status.blocked.map(|b| b.to_string()),
        });
    }
    // A backend that cannot list groups shows the deployed ones only.
    if let Ok(groups) = node.discovery.read_groups(cluster).await {
        for (name, members) in groups {
            if specs.iter().any(|s| s.group == name) {
                continue;
            }
            let per_node = on_live(&members);
            rows.push(GroupJson {
                actor_type: members
                    .first()
                    .map(|m| m.actor_type.clone())
                    .unwrap_or_default(),
                desired: None,
                running: per_node.values().sum(),
                per_node,
                blocked: None,
                name,
            });
        }
    }
    Ok(rows)
}

async fn status(State(state): State<AdminState>) -> Response {
    let Some(node) = state.node.upgrade() else {
        return gone();
    };
    let cluster = node.info.cluster.clone();
    let discovery = node.discovery.clone();
    let (groups, leader, loads, ready) = tokio::join!(
        tokio::time::timeout(DISCOVERY_WAIT, group_rows(&node)),
        tokio::time::timeout(DISCOVERY_WAIT, discovery.leader(&cluster)),
        tokio::time::timeout(DISCOVERY_WAIT, discovery.loads(&cluster)),
        readiness(&node),
    );
    let groups = groups.ok().and_then(Result::ok).unwrap_or_default();
    let leader = leader
        .ok()
        .and_then(Result::ok)
        .flatten()
        .map(|(id, _)| id.to_string());
    let loads = loads.ok().and_then(Result::ok).unwrap_or_default();
    let (known, events) = {
        let seen = lock(&state.seen);
        (
            seen.nodes.clone(),
            seen.events.iter().cloned().collect::<Vec<_>>(),
        )
    };
    let mut nodes: BTreeMap<NodeId, NodeJson> = BTreeMap::new();
    for (id, (info, state)) in known {
        nodes.insert(id, node_json(info, state, &loads));
    }
    // The node's current view wins for live members (a node seen before it came back).
    for info in node.members() {
        let id = info.id.clone();
        nodes.insert(id, node_json(info, "up", &loads));
    }
    let entities = read(&node.entities)
        .values()
        .map(|h| {
            let s = h.status(&node.info.id);
            EntityJson {
                kind: h.kind,
                shards: s.shards,
                hosted_here: s.hosted_here,
                activations: s.activations,
            }
        })
        .collect();
    let totals = node
        .metrics
        .as_ref()
        .map(|m| m.totals())
        .unwrap_or_default();
    let body = StatusJson {
        cluster,
        node: node.info.id.to_string(),
        version: node.info.version.clone(),
        now_ms: crate::id::unix_ms(std::time::SystemTime::now()),
        ready: ready.ready,
        draining: node.draining.load(Ordering::Acquire),
        leader,
        nodes: nodes.into_values().collect(),
        groups,
        entities,
        events,
        messages: MessagesJson {
            sent: totals.sent,
            received: totals.received,
            asks: totals.asks,
            errors: totals.errors,
            dropped: node.stats.snapshot().dropped_total(),
        },
    };
    Json(body).into_response()
}

fn node_json(
    info: NodeInfo,
    state: &'static str,
    loads: &BTreeMap<NodeId, LoadReport>,
) -> NodeJson {
    NodeJson {
        load: if state == "up" {
            loads.get(&info.id).cloned()
        } else {
            None
        },
        id: info.id.to_string(),
        addr: info.addr,
        admin: info.admin,
        state,
        version: info.version,
        labels: info.labels,
        started_at_ms: info.started_at_ms,
    }
}
