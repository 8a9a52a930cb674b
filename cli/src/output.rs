//! Small formatters shared by the commands' human output.

use std::collections::BTreeMap;
use std::time::Duration;

use actormesh::{Autoscale, PlacementPolicy};

/// A duration the way people read one: `850ms`, `12s`, `3m05s`, `2h07m`, `4d03h`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}d{hours:02}h")
    } else if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m{seconds:02}s")
    } else if d.subsec_millis() > 0 && secs < 10 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{secs}s")
    }
}

/// How long ago `then_ms` (milliseconds since the Unix epoch) was, seen at `now_ms`: `3m05s`
/// (`0ms` for a time in the future, as from a clock ahead of ours; `-` for no time).
pub fn age(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "-".to_owned();
    }
    duration(Duration::from_millis(now_ms.saturating_sub(then_ms)))
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Labels (or a selector) as `k=v,k2=v2`; `-` for none.
pub fn labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A placement policy as a spec file names it: `round_robin`, `spread`, `custom:NAME`...
pub fn placement(policy: &PlacementPolicy) -> String {
    match policy {
        PlacementPolicy::RoundRobin => "round_robin".to_owned(),
        PlacementPolicy::LeastLoaded => "least_loaded".to_owned(),
        PlacementPolicy::Spread => "spread".to_owned(),
        PlacementPolicy::Custom(name) => format!("custom:{name}"),
    }
}

/// Autoscaling as `MIN..MAX@TARGET` (the asks in flight to aim for per replica); `-` for
/// none.
pub fn autoscale(autoscale: Option<&Autoscale>) -> String {
    match autoscale {
        None => "-".to_owned(),
        Some(a) => format!("{}..{}@{}", a.min, a.max, a.target_per_replica),
    }
}

/// Counts per key as `k=n,k2=m`; `-` for none.
pub fn counts(counts: &BTreeMap<String, u32>) -> String {
    if counts.is_empty() {
        return "-".to_owned();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// An optional value, or `-`.
pub fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration(Duration::from_secs(5)), "5s");
        assert_eq!(duration(Duration::from_secs(12)), "12s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(2 * 3600 + 7 * 60)), "2h07m");
        assert_eq!(
            duration(Duration::from_secs(4 * 86_400 + 3 * 3600)),
            "4d03h"
        );
    }

    #[test]
    fn ages_count_back_from_now() {
        assert_eq!(age(10_000, 7_000), "3s");
        assert_eq!(age(10_000, 12_000), "0ms", "a clock ahead of ours");
        assert_eq!(age(10_000, 0), "-");
    }

    #[test]
    fn labels_placements_and_autoscale() {
        let mut map = BTreeMap::new();
        assert_eq!(labels(&map), "-");
        map.insert("zone".to_owned(), "a".to_owned());
        map.insert("role".to_owned(), "replica".to_owned());
        assert_eq!(labels(&map), "role=replica,zone=a");
        assert_eq!(placement(&PlacementPolicy::Spread), "spread");
        assert_eq!(
            placement(&PlacementPolicy::Custom("mine".into())),
            "custom:mine"
        );
        assert_eq!(autoscale(None), "-");
        let a = Autoscale {
            min: 1,
            max: 6,
            target_per_replica: 10.0,
            hysteresis: 0.25,
            cooldown_ms: 5000,
        };
        assert_eq!(autoscale(Some(&a)), "1..6@10");
        assert_eq!(or_dash(None::<u32>), "-");
        assert_eq!(or_dash(Some(2)), "2");
    }
}
