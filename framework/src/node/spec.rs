//! Building a [`GroupSpec`]: the desired state of a group that the controller keeps.

use std::collections::BTreeMap;

use crate::context::Spawnable;
use crate::core::model::{Autoscale, GroupSpec, PlacementPolicy};
use crate::core::wire::envelope::encode_payload;
use crate::error::{Error, Result};

impl GroupSpec {
    /// A spec of `replicas` replicas of actor type `A`, built from `args`, in `group`.
    pub fn new<A: Spawnable>(
        group: impl Into<String>,
        args: &A::Args,
        replicas: u32,
    ) -> Result<Self> {
        Ok(GroupSpec {
            group: group.into(),
            actor_type: A::NAME.to_owned(),
            args: Self::encode_args(args)?,
            replicas,
            placement: PlacementPolicy::default(),
            selector: BTreeMap::new(),
            anti_affinity: None,
            max_per_node: None,
            singleton: false,
            autoscale: None,
        })
    }

    /// `args` encoded as [`GroupSpec::args`] holds constructor arguments, which the node
    /// that runs a replica decodes as the actor type's [`Spawnable::Args`]: for a tool that
    /// writes specs without the actor type at hand (the encoding of `()`, the arguments of a
    /// constructor that takes none, is empty).
    pub fn encode_args<T: serde::Serialize + ?Sized>(args: &T) -> Result<Vec<u8>> {
        let mut buf = bytes::BytesMut::new();
        encode_payload(args, &mut buf).map_err(Error::Codec)?;
        Ok(buf.to_vec())
    }

    /// Let the controller choose the replica count from the group's load, between `min` and
    /// `max`, aiming at `target_per_replica` asks in flight per replica, acting only beyond
    /// 25 % of the target either way and at most every 5 s (see [`Autoscale`]).
    pub fn autoscale(mut self, min: u32, max: u32, target_per_replica: f64) -> Self {
        self.autoscale = Some(Autoscale {
            min,
            max: max.max(min),
            target_per_replica,
            hysteresis: 0.25,
            cooldown_ms: 5_000,
        });
        self
    }

    /// Replaces the autoscaling settings (hysteresis and cooldown included).
    pub fn autoscale_with(mut self, autoscale: Autoscale) -> Self {
        self.autoscale = Some(autoscale);
        self
    }

    /// A singleton of actor type `A`: at most one live instance cluster-wide at any moment,
    /// restarted elsewhere when its node dies. Its host stops it as soon as it can no longer
    /// be sure its etcd lease is alive (cut off from etcd), before the lease can expire and
    /// the controller start a replacement; with the in-process discovery there is no lease
    /// and nothing to guard against.
    pub fn singleton<A: Spawnable>(group: impl Into<String>, args: &A::Args) -> Result<Self> {
        let mut spec = Self::new::<A>(group, args, 1)?;
        spec.singleton = true;
        Ok(spec)
    }

    /// The placement policy (default [`PlacementPolicy::RoundRobin`]).
    pub fn placement(mut self, policy: PlacementPolicy) -> Self {
        self.placement = policy;
        self
    }

    /// Only nodes with the label `key = value` run replicas.
    pub fn select(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.selector.insert(key.into(), value.into());
        self
    }

    /// Spread the replicas across the values of the node label `key`.
    pub fn anti_affinity(mut self, key: impl Into<String>) -> Self {
        self.anti_affinity = Some(key.into());
        self
    }

    /// At most `max` replicas on one node.
    pub fn max_per_node(mut self, max: u32) -> Self {
        self.max_per_node = Some(max);
        self
    }
}
