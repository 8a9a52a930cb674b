//! The autoscaler: the replica count an autoscaled group should move to, from its load.
//!
//! The load of a group is the sum of the asks in flight on the live nodes that run its
//! replicas (from their [`LoadReport`]s). The autoscaler aims at the spec's target per replica,
//! within its bounds, acts only beyond the hysteresis band around the target, and not again
//! within the cooldown after a change (measured on the controller's `now`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::core::model::{Autoscale, GroupSpec, LoadReport, NodeInfo};
use crate::id::NodeId;

use super::reconcile::GroupState;
use super::Time;

/// The autoscaled groups whose replica count should change at `now`, and to what.
pub(super) fn changes(
    specs: &BTreeMap<String, GroupSpec>,
    groups: &BTreeMap<String, GroupState>,
    live: &BTreeMap<NodeId, NodeInfo>,
    loads: &BTreeMap<NodeId, LoadReport>,
    scaled_at: &BTreeMap<String, Time>,
    now: Time,
) -> Vec<(String, u32)> {
    let mut changes = Vec::new();
    for (group, spec) in specs {
        let (Some(policy), Some(state)) = (spec.autoscale, groups.get(group)) else {
            continue;
        };
        let hosts: BTreeSet<&NodeId> = state
            .members
            .keys()
            .map(|(n, _)| n)
            .filter(|n| live.contains_key(*n))
            .collect();
        let load: f64 = hosts
            .iter()
            .filter_map(|n| loads.get(*n))
            .map(|l| l.inflight_asks as f64)
            .sum();
        let cooling = scaled_at
            .get(group)
            .is_some_and(|at| now.saturating_sub(*at) < Duration::from_millis(policy.cooldown_ms));
        if let Some(to) = decide_scale(&policy, spec.replicas, load, cooling) {
            changes.push((group.clone(), to));
        }
    }
    changes
}

/// The replica count an autoscaled group should move to, if any: aims at the target load
/// per replica, within bounds, only beyond the hysteresis band and not while cooling down.
pub(crate) fn decide_scale(
    policy: &Autoscale,
    current: u32,
    load: f64,
    cooling: bool,
) -> Option<u32> {
    let (min, max) = (policy.min, policy.max.max(policy.min));
    if current < min || current > max {
        return Some(current.clamp(min, max));
    }
    let target_ok = policy.target_per_replica.is_finite() && policy.target_per_replica > 0.0;
    if cooling || !target_ok || !load.is_finite() {
        return None;
    }
    let per_replica = load / f64::from(current.max(1));
    let wanted = ((load / policy.target_per_replica).ceil() as u32).clamp(min, max);
    let band = policy.hysteresis.max(0.0);
    if wanted > current && per_replica > policy.target_per_replica * (1.0 + band) {
        return Some(wanted);
    }
    if wanted < current && per_replica < policy.target_per_replica * (1.0 - band) {
        return Some(wanted);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Autoscale {
        Autoscale {
            min: 2,
            max: 10,
            target_per_replica: 4.0,
            hysteresis: 0.25,
            cooldown_ms: 1_000,
        }
    }

    #[test]
    fn scales_up_and_down_to_the_target_within_bounds() {
        let p = policy();
        assert_eq!(decide_scale(&p, 2, 40.0, false), Some(10));
        assert_eq!(decide_scale(&p, 4, 400.0, false), Some(10), "capped at max");
        assert_eq!(decide_scale(&p, 8, 4.0, false), Some(2), "floored at min");
        assert_eq!(
            decide_scale(&p, 1, 0.0, false),
            Some(2),
            "below min is corrected"
        );
    }

    #[test]
    fn hysteresis_and_cooldown_prevent_flapping() {
        let p = policy();
        // 4 replicas at 4.5 per replica: within 25 % of the target, no change.
        assert_eq!(decide_scale(&p, 4, 18.0, false), None);
        assert_eq!(decide_scale(&p, 4, 14.0, false), None);
        // Beyond the band it acts, but not while cooling down.
        assert_eq!(decide_scale(&p, 4, 24.0, false), Some(6));
        assert_eq!(decide_scale(&p, 4, 24.0, true), None);
        // A nonsense target does nothing.
        let zero = Autoscale {
            target_per_replica: 0.0,
            ..p
        };
        assert_eq!(decide_scale(&zero, 4, 24.0, false), None);
    }

    #[test]
    fn out_of_bounds_is_corrected_even_while_cooling() {
        let p = policy();
        assert_eq!(decide_scale(&p, 12, 0.0, true), Some(10));
        assert_eq!(decide_scale(&p, 0, 0.0, true), Some(2));
    }
}
