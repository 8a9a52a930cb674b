//! A deterministic simulation of an actormesh cluster, driving the real controller core.
//!
//! Modelled on quinn-proto's in-memory `Pair`: no sockets, no runtime, no clock. A seed
//! chooses everything (the scenario, every network delay and loss), the virtual clock jumps
//! from event to event, and the queue is ordered by (time, sequence number) with `BTreeMap`s
//! everywhere order matters, so a seed replays exactly. `ACTORMESH_SIM_SEED=<n>` runs only
//! that seed; a failure prints its seed and the tail of its trace.
//!
//! ## What is real and what is modelled
//!
//! Real: the leader's decisions ([`core::controller::Controller`](crate::core::controller)),
//! the singleton guard's timing ([`core::singleton`](crate::core::singleton)), the placement
//! policies. Modelled after the code they stand for:
//!
//! - **etcd** ([`etcd`]): revisions, leases with a TTL (3 s, the real default), expiry
//!   deleting the lease's keys, prefix watches delivered in order and held while the watcher
//!   is cut off (the real watch resyncs), the leader key bound to the leader's lease with its
//!   creation revision as the fencing token, specs not bound to any lease.
//! - **nodes** ([`node`], [`watch`]): registration (refused while the previous incarnation's
//!   key lives), keep-alive every TTL / 3 with the deadline counted from the last confirmed
//!   renewal's sending, registration again after a lost lease (putting back the members of
//!   the replicas still running, as the etcd session does), campaigning and waiting for the
//!   leader key to go, the membership view. Orders are carried out as `spawn_replica` and
//!   `retire` do: the fence check is one etcd read (refused when etcd cannot be reached), the
//!   group membership a second request; a replica that leaves its group tries once.
//! - **the leader's shell** ([`leader`]): what `controller::lead` does around the core.
//! - **the network** ([`world`]): messages take 1-20 ms, 2 % of them 50-800 ms (reordering
//!   them), 1 % of the messages between nodes are lost; etcd's requests and answers are lost
//!   only to cuts. A cut isolates a node from etcd, from some peers, or both, and heals.
//! - **faults** ([`scenario`]): kills, graceful leaves, restarts (same node id, actor ids
//!   from 1 again), cuts, a leader cut from etcd but not from its peers, spec changes, load,
//!   freezes ([`freeze`]: SIGSTOP for 0.5 to 12 s, the leader or any node, or a node in the
//!   middle of an order; what reaches it waits and runs in a random order when it resumes).
//! - **the fence** ([`fence`]): orders are admitted and started as `core::fence` decides,
//!   by the lease epoch of the link they came by and what the node knows of its lease.
//!
//! Not modelled: clock drift (every node reads the same virtual clock), etcd failing or
//! being slow as a whole, watch compaction, multi-key transactions as one revision, messages
//! between nodes other than orders and their answers, the actors' own work.
//!
//! ## Where the nodes differ from today's code
//!
//! Run as today's node code, the simulation finds three bugs outside the controller core
//! (see [`Fixes`](world::Fixes), and the survey test `survey_todays_node_code`): a spawn
//! order that checks the fence and joins the group in two steps can start a second singleton
//! instance; a replica's member key deleted once, while cut from etcd, stays behind for good;
//! a campaign whose winning answer is lost waits for ever on its own key. The properties are
//! checked with the three fixes on; the targeted tests show the last two bugs with today's
//! behaviour, and the survey lists the seeds that show each of them.
//!
//! The properties are in [`check`]; the tests in `tests` and `targeted`.

use std::time::Duration;

mod check;
mod entities;
mod etcd;
mod fence;
mod fixes;
mod freeze;
#[cfg(test)]
mod freezes;
mod leader;
mod net;
mod node;
mod orders;
mod rng;
mod scenario;
mod server;
#[cfg(test)]
mod targeted;
#[cfg(test)]
mod tests;
mod trace;
mod watch;
mod world;

use check::Stats;
use world::{Config, Fixes, World};

/// How long the cluster stays quiet before convergence is checked.
pub(crate) const QUIET: Duration = Duration::from_secs(60);

/// The result of one seeded run.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) seed: u64,
    /// The hash of the run's trace.
    pub(crate) hash: u64,
    pub(crate) events: u64,
    /// Virtual time covered.
    pub(crate) simulated: Duration,
    pub(crate) stats: Stats,
    /// The first violated property, with the trace's tail.
    pub(crate) failure: Option<String>,
}

/// Runs the random scenario of `seed`: 3 to 5 nodes, faults for 4 to 12 minutes, then
/// [`QUIET`], then the convergence check.
pub(crate) fn run_seed(seed: u64) -> Run {
    run_seed_with(seed, Fixes::all())
}

/// [`run_seed`] with the node behaving as `fixes` says.
pub(crate) fn run_seed_with(seed: u64, fixes: Fixes) -> Run {
    let cfg = Config {
        nodes: 3 + (seed % 3) as usize,
        fixes,
        ..Config::default()
    };
    let mut world = World::new(cfg, seed);
    let faults_for = world.rng.millis(4 * 60_000, 12 * 60_000);
    world.random_scenario(faults_for);
    let end = faults_for + QUIET;
    if world.run_until(end) {
        world.check_converged();
    }
    Run {
        seed,
        hash: world.trace.hash(),
        events: world.trace.events,
        simulated: world.now,
        stats: world.stats.clone(),
        failure: world.violation.as_ref().map(|v| {
            format!(
                "seed {seed} failed at {:.3}s: {v}\nlast notes:\n{}replay: ACTORMESH_SIM_SEED={seed} cargo test -p actormesh --lib sim::",
                world.now.as_secs_f64(),
                world.trace.tail()
            )
        }),
    }
}
