//! A deployed group's status, read afresh from discovery (see `core::status`).

use super::NodeShared;
use crate::core::status::{self, GroupStatus};
use crate::error::Result;

impl NodeShared {
    /// The status of `group` against its spec; `None` when no spec is deployed for it.
    pub(crate) async fn group_status(&self, group: &str) -> Result<Option<GroupStatus>> {
        let cluster = &self.info.cluster;
        let specs = self.discovery.read_specs(cluster).await?;
        let Some(spec) = specs.into_iter().find(|s| s.group == group) else {
            return Ok(None);
        };
        let members = self.discovery.read_group(cluster, group).await?;
        let live = self.discovery.read_members(cluster).await?;
        let led = self.discovery.leader(cluster).await?.is_some();
        Ok(Some(status::assess(&spec, &members, &live, led)))
    }
}
