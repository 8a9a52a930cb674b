//! How the simulated nodes differ from today's node code (see the module docs of
//! [`sim`](super)).

/// Changes to the node's side of things that the simulation found necessary; the default
/// is today's code. See the module docs of [`sim`](super).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fixes {
    /// A spawn order registers the replica's group membership first, in one etcd
    /// transaction with the fence check (`leader` key's creation revision == fence), and
    /// starts the replica only once registered, and only if the lease the key was written
    /// under is still the node's (its singleton guard checking at once).
    /// Today's `spawn_replica` checks the fence (one read), starts the replica, then joins
    /// its group (a second request): a deposed leader's order can complete after the new
    /// leader started another instance, a singleton runs unguarded while it joins, and a
    /// join answered after the node lost its lease and registered again leaves a replica
    /// running whose key went with the old lease (guarded by the new lease's deadline).
    pub(crate) fenced_join: bool,
    /// A replica that leaves its group (stopped, retired, or whose registration may have
    /// been written without an answer) retries the deletion of its member key until etcd
    /// answers or the lease is gone. Today's node tries once: a singleton stopped by its
    /// guard while cut from etcd leaves its key behind when the cut heals before the lease
    /// expires, and the controller then counts a member that is not running, for good.
    pub(crate) leave_until_done: bool,
    /// A campaign that finds the leader key bound to the node's own lease takes it as won
    /// (token: the key's creation revision). Today's `campaign` then waits for the key to go:
    /// when the answer of a campaign that won is lost (a cut, a timeout), the node retries,
    /// finds the key taken, by itself, and waits for ever while keeping its lease alive: the
    /// cluster has no controller until that node dies.
    pub(crate) reclaim_leadership: bool,
}

impl Fixes {
    /// Both fixes.
    pub(crate) fn all() -> Self {
        Fixes {
            fenced_join: true,
            leave_until_done: true,
            reclaim_leadership: true,
        }
    }
}
