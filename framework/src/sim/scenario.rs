//! Random scenarios: the initial specs, then a fault every few seconds (kills, graceful
//! leaves, restarts, cuts from etcd or between nodes that heal later, a leader cut from etcd
//! but not from its peers, spec changes, load changes for the autoscaler), then quiet: every
//! cut healed, every dead node restarted, no load, nothing else.

use std::time::Duration;

use crate::core::model::{Autoscale, GroupSpec, PlacementPolicy};
use crate::core::placement::{eligible, Candidate, Constraints, Placement};
use crate::core::Time;

use super::etcd::{Key, Value};
use super::node::ACTOR_TYPE;
use super::world::{slot_of_id, Ev, World};

/// The name of the simulation's custom placement policy, [`Backwards`].
pub(crate) const CUSTOM: &str = "backwards";

/// A custom placement policy: each new replica on the eligible node with the fewest replicas,
/// ties to the *highest* node id (the opposite of the built-in policies), within
/// `max_per_node`.
#[derive(Debug)]
pub(crate) struct Backwards;

impl Placement for Backwards {
    fn place(&self, candidates: &[Candidate], constraints: &Constraints, count: u32) -> Vec<usize> {
        let mut have: Vec<(usize, u32)> = eligible(candidates, constraints)
            .into_iter()
            .map(|i| (i, candidates[i].replicas))
            .collect();
        have.reverse();
        let cap = constraints.max_per_node.unwrap_or(u32::MAX);
        let mut picks = Vec::new();
        for _ in 0..count {
            let Some(best) = have
                .iter_mut()
                .filter(|(_, n)| *n < cap)
                .min_by_key(|(_, n)| *n)
            else {
                break;
            };
            best.1 += 1;
            picks.push(best.0);
        }
        picks
    }

    fn name(&self) -> &'static str {
        CUSTOM
    }
}

/// A scenario step.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Draw the next random fault.
    Next,
    /// Start a node in the (empty) slot.
    Start(usize),
    /// Kill the node of the slot (its lease lives on until it expires).
    Kill(usize),
    /// A graceful shutdown.
    Leave(usize),
    /// Cut the slot from etcd.
    CutEtcd(usize),
    /// Heal the cut of the slot from etcd.
    HealEtcd(usize),
    /// Cut two slots from each other.
    CutPeers(usize, usize),
    /// Heal the cut between two slots.
    HealPeers(usize, usize),
    /// The operator writes a spec.
    PutSpec(GroupSpec),
    /// The operator removes a spec.
    RemoveSpec(String),
    /// The asks in flight the slot's load reports say.
    Load(usize, u64),
    /// Freeze the node of the slot (SIGSTOP) for this long.
    Freeze(usize, Duration),
    /// Freeze the node of the slot for this long as soon as it sends its next etcd request
    /// for an order.
    FreezeMidOrder(usize, Duration),
    /// The frozen incarnation resumes (SIGCONT).
    Thaw(super::world::Inc),
    /// The end of the faults: everything healed and restarted, no load.
    Quiet,
}

/// The shape of a random scenario.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    /// Faults are drawn until then; then [`Fault::Quiet`].
    pub(crate) faults_until: Time,
}

/// A spec of `replicas` replicas of the simulation's actor type.
pub(crate) fn spec(group: &str, replicas: u32) -> GroupSpec {
    GroupSpec {
        group: group.to_owned(),
        actor_type: ACTOR_TYPE.to_owned(),
        args: Vec::new(),
        replicas,
        placement: PlacementPolicy::RoundRobin,
        selector: Default::default(),
        anti_affinity: None,
        max_per_node: None,
        singleton: false,
        autoscale: None,
    }
}

impl World {
    /// Sets up a random scenario: the specs, the nodes starting within 3 s, faults for
    /// `faults_for`, then quiet.
    pub(crate) fn random_scenario(&mut self, faults_for: Duration) {
        let mut specs = vec![spec("g0", self.rng.range(1, 5) as u32)];
        if self.rng.chance(0.6) {
            let mut g1 = spec("g1", self.rng.range(0, 6) as u32);
            g1.placement = match self.rng.below(4) {
                0 => PlacementPolicy::RoundRobin,
                1 => PlacementPolicy::Spread,
                2 => PlacementPolicy::LeastLoaded,
                _ => PlacementPolicy::Custom(CUSTOM.to_owned()),
            };
            specs.push(g1);
        }
        if self.rng.chance(0.85) {
            let mut s = spec("s", 1);
            s.singleton = true;
            specs.push(s);
        }
        if self.rng.chance(0.35) {
            let mut a = spec("a", 1);
            a.autoscale = Some(Autoscale {
                min: 1,
                max: 4,
                target_per_replica: 4.0,
                hysteresis: 0.25,
                cooldown_ms: 5_000,
            });
            specs.push(a);
        }
        self.cfg.loads = specs
            .iter()
            .any(|s| s.autoscale.is_some() || s.placement == PlacementPolicy::LeastLoaded);
        for s in specs {
            self.put_spec(s);
        }
        for slot in 0..self.cfg.nodes {
            let at = self.rng.millis(0, 3_000);
            self.schedule(at, Ev::Fault(Fault::Start(slot)));
        }
        let first = self.rng.millis(5_000, 20_000);
        self.schedule(first, Ev::Fault(Fault::Next));
        self.schedule(faults_for, Ev::Fault(Fault::Quiet));
        self.scenario = Some(Scenario {
            faults_until: faults_for,
        });
    }

    /// The operator writes a spec (straight into etcd).
    pub(crate) fn put_spec(&mut self, spec: GroupSpec) {
        let (group, replicas) = (spec.group.clone(), spec.replicas);
        self.trace
            .note(self.now, || format!("operator puts {group} x{replicas}"));
        self.etcd
            .put(Key::Spec(spec.group.clone()), Value::Spec(spec), None);
    }

    /// Carries out a scenario step.
    pub(crate) fn on_fault(&mut self, fault: Fault) {
        if !matches!(fault, Fault::Next) {
            self.stats.faults += 1;
            self.trace.note(self.now, || format!("fault: {fault:?}"));
        }
        match fault {
            Fault::Next => self.next_fault(),
            Fault::Start(slot) => self.start_node(slot),
            Fault::Kill(slot) => self.kill(slot),
            Fault::Leave(slot)
                if self.nodes[slot]
                    .as_ref()
                    .is_some_and(|n| self.is_frozen(n.inc)) =>
            {
                // A stopped process cannot leave gracefully: it is killed.
                self.kill(slot)
            }
            Fault::Leave(slot) => {
                if let Some((inc, lease, info)) = self.nodes[slot]
                    .as_ref()
                    .and_then(|n| Some((n.inc, n.lease?, n.info.clone())))
                {
                    let op = super::server::Op::Leave(lease, info);
                    self.request(inc, op, super::node::Purpose::Fire);
                }
                self.kill(slot);
            }
            Fault::CutEtcd(slot) => {
                self.net.etcd_cut.insert(slot);
            }
            Fault::HealEtcd(slot) => {
                self.net.etcd_cut.remove(&slot);
            }
            Fault::CutPeers(a, b) => {
                self.net.peer_cut.insert((a.min(b), a.max(b)));
            }
            Fault::HealPeers(a, b) => {
                self.net.peer_cut.remove(&(a.min(b), a.max(b)));
            }
            Fault::PutSpec(spec) => self.put_spec(spec),
            Fault::RemoveSpec(group) => {
                self.etcd.delete(&Key::Spec(group));
            }
            Fault::Load(slot, load) => self.load[slot] = load,
            Fault::Freeze(slot, d) => self.freeze(slot, d),
            Fault::FreezeMidOrder(slot, d) => self.arm_freeze(slot, d),
            Fault::Thaw(inc) => self.thaw(inc),
            Fault::Quiet => {
                self.freeze_armed.clear();
                self.net.etcd_cut.clear();
                self.net.peer_cut.clear();
                self.load.iter_mut().for_each(|l| *l = 0);
                for slot in 0..self.cfg.nodes {
                    self.start_node(slot);
                }
            }
        }
    }

    /// Draws the next fault from the state of the cluster, and schedules the one after.
    fn next_fault(&mut self) {
        let Some(until) = self.scenario.as_ref().map(|s| s.faults_until) else {
            return;
        };
        let next = self.now + self.rng.millis(2_000, 30_000);
        if next < until {
            self.schedule(next, Ev::Fault(Fault::Next));
        }
        let alive: Vec<usize> = (0..self.cfg.nodes)
            .filter(|s| self.nodes[*s].is_some())
            .collect();
        let dead: Vec<usize> = (0..self.cfg.nodes)
            .filter(|s| self.nodes[*s].is_none())
            .collect();
        let leader = self.etcd.leader().and_then(|(id, _)| slot_of_id(&id));
        let n = self.cfg.nodes;
        let any = self.rng.below(n);
        let heal_in = self.rng.millis(500, 15_000);
        let now = self.now;
        let fault = match self.rng.below(110) {
            0..12 if alive.len() > 1 => Fault::Kill(alive[self.rng.below(alive.len())]),
            12..16 if alive.len() > 1 => Fault::Leave(alive[self.rng.below(alive.len())]),
            16..30 if !dead.is_empty() => Fault::Start(dead[self.rng.below(dead.len())]),
            30..42 => {
                self.schedule(now + heal_in, Ev::Fault(Fault::HealEtcd(any)));
                Fault::CutEtcd(any)
            }
            42..50 => {
                self.schedule(now + heal_in, Ev::Fault(Fault::HealEtcd(any)));
                for other in (0..n).filter(|o| *o != any) {
                    self.schedule(now + heal_in, Ev::Fault(Fault::HealPeers(any, other)));
                    self.net.peer_cut.insert((any.min(other), any.max(other)));
                }
                Fault::CutEtcd(any)
            }
            50..58 => {
                let other = (any + 1 + self.rng.below(n - 1)) % n;
                self.schedule(now + heal_in, Ev::Fault(Fault::HealPeers(any, other)));
                Fault::CutPeers(any, other)
            }
            58..66 if leader.is_some() => {
                let leader = leader.unwrap_or(any);
                self.schedule(now + heal_in, Ev::Fault(Fault::HealEtcd(leader)));
                Fault::CutEtcd(leader)
            }
            66..78 => {
                let specs = self.etcd.specs();
                if specs.is_empty() {
                    return;
                }
                let mut s = specs[self.rng.below(specs.len())].clone();
                s.replicas = if s.singleton {
                    u32::from(self.rng.chance(0.8))
                } else {
                    self.rng.range(0, 6) as u32
                };
                Fault::PutSpec(s)
            }
            78..83 => Fault::PutSpec(spec(
                &format!("g{}", self.rng.range(0, 3)),
                self.rng.range(1, 4) as u32,
            )),
            83..87 => {
                let specs = self.etcd.specs();
                if specs.is_empty() {
                    return;
                }
                Fault::RemoveSpec(specs[self.rng.below(specs.len())].group.clone())
            }
            87..94 => Fault::Load(any, self.rng.range(0, 30)),
            94..100 if alive.len() > 1 && leader.is_some() => Fault::Kill(leader.unwrap_or(any)),
            // Freezes from 0.5 s to 4 TTLs: shorter and longer than the lease.
            100..104 => Fault::Freeze(any, self.rng.millis(500, 12_000)),
            104..106 if leader.is_some() => {
                Fault::Freeze(leader.unwrap_or(any), self.rng.millis(500, 12_000))
            }
            106..110 => Fault::FreezeMidOrder(any, self.rng.millis(3_000, 12_000)),
            _ => return,
        };
        self.on_fault(fault);
    }
}
