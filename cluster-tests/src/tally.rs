//! The keyed entity of the entity scenarios (`entity-node`, `tests/entities_cluster.rs`): a
//! [`Tally`] per key, a counter whose value lives in the state store, and which writes an
//! *activation log* itself.
//!
//! The activation log is one file per process (its path in the environment variable
//! [`LOG_ENV`]); every line is `<wall-clock µs> <node> <key> <event> [detail]`, written with
//! one `write` and flushed at once (so a `SIGKILL` loses nothing written before it), where
//! `event` is:
//!
//! - `start`: the activation was built (its state loaded);
//! - `handle`: a message is being handled (detail: `inc <request>`, `get`, `where`,
//!   `note <id>`), written first thing in the handler;
//! - `fenced-save`: the store refused a save of this activation (a newer one claimed the
//!   state; detail: the request);
//! - `stop`: the activation stopped.
//!
//! The tests read these logs, not the framework's word, to check single activation
//! ([`check_no_overlap`](crate::check_no_overlap)) and exactly-once handling of tells.
//!
//! The test process declares the same type to reach the entities (it never activates one:
//! it does not host the type).

use std::fs::File;
use std::io::{LineWriter, Write};
use std::sync::{Mutex, OnceLock};

use actix::{
    Actor, ActorFutureExt, AtomicResponse, Context, Handler, Message, MessageResult, WrapFuture,
};
use actormesh::prelude::*;
use actormesh::{Entity, EntityContext, EntityState};
use serde::{Deserialize, Serialize};

/// The entity type's name.
pub const KIND: &str = "ledgers";

/// The shard count of the type in the scenarios.
pub const SHARDS: u32 = 64;

/// The environment variable naming the process's activation log (no log when unset).
pub const LOG_ENV: &str = "ENTITY_LOG";

/// The environment variable choosing the state store of `entity-node` (default `etcd`).
pub const STORE_ENV: &str = "ENTITY_STORE";

/// The environment variable with the PostgreSQL connection string when `ENTITY_STORE` is
/// `postgres`.
pub const PG_ENV: &str = "ENTITY_PG";

/// Microseconds since the Unix epoch on the wall clock (every process of a scenario runs on
/// one machine, so their logs and the test's own marks share this clock).
pub fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The process's activation log, opened on first use.
fn log_file() -> &'static Option<Mutex<LineWriter<File>>> {
    static LOG: OnceLock<Option<Mutex<LineWriter<File>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let path = std::env::var_os(LOG_ENV)?;
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(file) => Some(Mutex::new(LineWriter::new(file))),
            Err(e) => {
                // The scenario cannot be checked without its log: fail loudly, at once.
                eprintln!("cannot open the activation log {}: {e}", path.display());
                std::process::exit(3);
            }
        }
    })
}

/// Appends one line to the activation log (if the process has one). The time is read under
/// the log's lock: the lines of one process are in time order.
pub fn log_event(node: &str, key: &str, event: &str, detail: &str) {
    let Some(log) = log_file() else { return };
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    let line = if detail.is_empty() {
        format!("{} {node} {key} {event}\n", wall_us())
    } else {
        format!("{} {node} {key} {event} {detail}\n", wall_us())
    };
    let written = log.write_all(line.as_bytes()).and_then(|()| log.flush());
    if let Err(e) = written {
        eprintln!("cannot write the activation log: {e}");
        std::process::exit(3);
    }
}

/// Why an [`Increment`] was not applied, as its handler saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refused {
    /// The store refused the save: a newer activation claimed the state (not applied).
    Stale(String),
    /// The save failed otherwise (it may or may not have reached the store).
    Store(String),
}

/// Adds one to the tally and saves it; answers the new value once the store has it.
/// `0` is the caller's request id (logged).
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "Result<u64, Refused>")]
pub struct Increment(pub u64);
impl RemoteMessage for Increment {
    const NAME: &'static str = "tally.Increment";
}

/// Answers the tally's value.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
pub struct Get;
impl RemoteMessage for Get {
    const NAME: &'static str = "tally.Get";
}

/// Answers the id of the node the activation runs on.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "String")]
pub struct Where;
impl RemoteMessage for Where {
    const NAME: &'static str = "tally.Where";
}

/// A tell: only logged, with its id `0` (the log is what counts it).
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct Note(pub u64);
impl RemoteMessage for Note {
    const NAME: &'static str = "tally.Note";
}

/// The counter entity.
#[derive(Debug)]
pub struct Tally {
    key: String,
    node: String,
    count: u64,
    state: EntityState,
}

impl Tally {
    fn log(&self, event: &str, detail: &str) {
        log_event(&self.node, &self.key, event, detail);
    }
}

impl Actor for Tally {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.log("stop", "");
    }
}

impl Handler<Increment> for Tally {
    // Atomic: the next message waits until the save is done (no two saves of one
    // activation race, and the count read here is the one saved last).
    type Result = AtomicResponse<Self, Result<u64, Refused>>;

    fn handle(&mut self, Increment(request): Increment, _: &mut Context<Self>) -> Self::Result {
        self.log("handle", &format!("inc {request}"));
        let next = self.count + 1;
        let state = self.state.clone();
        AtomicResponse::new(Box::pin(
            async move { state.save(&next).await }
                .into_actor(self)
                .map(move |saved, act, _| match saved {
                    Ok(()) => {
                        act.count = next;
                        Ok(next)
                    }
                    Err(e @ actormesh::Error::StaleActivation { .. }) => {
                        act.log("fenced-save", &request.to_string());
                        Err(Refused::Stale(e.to_string()))
                    }
                    Err(e) => Err(Refused::Store(e.to_string())),
                }),
        ))
    }
}

impl Handler<Get> for Tally {
    type Result = u64;
    fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 {
        self.log("handle", "get");
        self.count
    }
}

impl Handler<Where> for Tally {
    type Result = String;
    fn handle(&mut self, _: Where, _: &mut Context<Self>) -> String {
        self.log("handle", "where");
        self.node.clone()
    }
}

impl Handler<Note> for Tally {
    type Result = ();
    fn handle(&mut self, Note(id): Note, _: &mut Context<Self>) {
        self.log("handle", &format!("note {id}"));
    }
}

actormesh::remote_actor!(Tally = "tally.Tally" { Increment, Get, Where, Note });

impl Entity for Tally {
    const KIND: &'static str = KIND;

    fn activate(ctx: &mut EntityContext<'_, Self>) -> Self {
        let tally = Tally {
            key: ctx.key_str().unwrap_or("?").to_owned(),
            node: ctx.node().id().to_string(),
            // A state that does not decode restarts at 0: the tests see it as lost writes.
            count: ctx.state::<u64>().ok().flatten().unwrap_or(0),
            state: ctx.state_handle(),
        };
        tally.log(
            "start",
            &format!("token {} count {}", tally.state.token(), tally.count),
        );
        tally
    }
}

/// What a node holds of the [`Tally`] type (from `Node::entity_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hosting {
    /// The type's shard count in the cluster's assignment (0: none yet).
    pub shards: u32,
    /// Shards the assignment puts on the node.
    pub assigned: usize,
    /// Shards the node holds and serves.
    pub hosted: usize,
    /// Shards of the node being taken, drained or released.
    pub in_motion: usize,
    /// Running activations on the node.
    pub activations: usize,
}

/// Answers what the node holds of the [`Tally`] type.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "Option<Hosting>")]
pub struct HostingNow;
impl RemoteMessage for HostingNow {
    const NAME: &'static str = "tally.HostingNow";
}

/// The name `entity-node` registers its [`Probe`] under.
pub fn probe_name(node: &str) -> String {
    format!("entity-probe-{node}")
}

/// Reports what its node hosts (`entity-node` registers it as [`probe_name`] and prints a
/// reference to it with `READY`).
#[derive(Debug)]
pub struct Probe {
    node: Node,
}

impl Probe {
    /// A probe of `node` (spawn it on that node).
    pub fn new(node: Node) -> Self {
        Probe { node }
    }
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<HostingNow> for Probe {
    type Result = MessageResult<HostingNow>;
    fn handle(&mut self, _: HostingNow, _: &mut Context<Self>) -> MessageResult<HostingNow> {
        MessageResult(self.node.entity_status(KIND).map(|s| Hosting {
            shards: s.shards,
            assigned: s.assigned_here,
            hosted: s.hosted_here,
            in_motion: s.in_motion_here,
            activations: s.activations,
        }))
    }
}

actormesh::remote_actor!(Probe = "tally.Probe" { HostingNow });
