//! Keyed entities on a real etcd (started by the test): shards bound to leases, state in
//! the etcd store, handoff at a graceful shutdown, and a host that stops serving before its
//! lease can expire when it is cut off from etcd.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::prelude::*;
use actormesh::store::EtcdStateStore;
use actormesh::{Entity, EntityConfig, EntityContext, EntityState, StateStore};
use actormesh_testkit::Etcd;
use common::eventually_now;
use serde::{Deserialize, Serialize};

/// What the accounts did, written by the accounts themselves: (key, node, event).
#[derive(Default)]
struct Journal(Mutex<Vec<(String, String, &'static str)>>);

impl Journal {
    fn note(&self, key: &str, node: &str, what: &'static str) {
        self.0
            .lock()
            .unwrap()
            .push((key.to_owned(), node.to_owned(), what));
    }

    /// For each key with `prefix`: the number of activations that were live at once, at
    /// most (an activation is live from its "start" to its "stop").
    fn max_live(&self, prefix: &str) -> BTreeMap<String, usize> {
        let mut live: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (key, _, what) in self.0.lock().unwrap().iter() {
            if !key.starts_with(prefix) {
                continue;
            }
            let entry = live.entry(key.clone()).or_default();
            match *what {
                "start" => {
                    entry.0 += 1;
                    entry.1 = entry.1.max(entry.0);
                }
                "stop" => entry.0 = entry.0.saturating_sub(1),
                _ => {}
            }
        }
        live.into_iter().map(|(k, (_, max))| (k, max)).collect()
    }

    fn count(&self, prefix: &str, what: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _, w)| k.starts_with(prefix) && *w == what)
            .count()
    }
}

static JOURNAL: std::sync::LazyLock<Journal> = std::sync::LazyLock::new(Journal::default);

/// A bank account: its balance is saved before a deposit is acknowledged.
struct Account {
    key: String,
    node: String,
    balance: u64,
    state: EntityState,
}

impl Actor for Account {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        JOURNAL.note(&self.key, &self.node, "start");
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        JOURNAL.note(&self.key, &self.node, "stop");
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "test.Deposit", result = "Result<u64, String>")]
struct Deposit(u64);

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "test.Balance", result = "u64")]
struct Balance;

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "test.Where", result = "String")]
struct Where;

/// A tell: adds without saving.
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "test.Credit", result = "()")]
struct Credit(u64);

impl Handler<Deposit> for Account {
    type Result = ResponseActFuture<Self, Result<u64, String>>;

    fn handle(&mut self, Deposit(n): Deposit, _: &mut Context<Self>) -> Self::Result {
        let next = self.balance + n;
        let state = self.state.clone();
        Box::pin(
            async move { state.save(&next).await.map(|()| next) }
                .into_actor(self)
                .map(|saved, act, _| {
                    let next = saved.map_err(|e| e.to_string())?;
                    act.balance = next;
                    Ok(next)
                }),
        )
    }
}

impl Handler<Balance> for Account {
    type Result = u64;
    fn handle(&mut self, _: Balance, _: &mut Context<Self>) -> u64 {
        self.balance
    }
}

impl Handler<Where> for Account {
    type Result = String;
    fn handle(&mut self, _: Where, _: &mut Context<Self>) -> String {
        self.node.clone()
    }
}

impl Handler<Credit> for Account {
    type Result = ();
    fn handle(&mut self, Credit(n): Credit, _: &mut Context<Self>) {
        self.balance += n;
        JOURNAL.note(&self.key, &self.node, "credit");
    }
}

actormesh::remote_actor!(Account = "test.Account" { Deposit, Balance, Where, Credit });

impl Entity for Account {
    const KIND: &'static str = "accounts";

    fn activate(ctx: &mut EntityContext<'_, Self>) -> Self {
        Account {
            key: ctx.key_str().unwrap_or("?").to_owned(),
            node: ctx.node().id().to_string(),
            balance: ctx.state::<u64>().ok().flatten().unwrap_or(0),
            state: ctx.state_handle(),
        }
    }
}

async fn host(etcd: &Etcd, cluster: &str, id: &str) -> Node {
    let discovery = EtcdDiscovery::connect(
        EtcdConfig::new([etcd.endpoint()]).lease_ttl(Duration::from_secs(2)),
    )
    .await
    .expect("etcd reachable");
    let store = Arc::new(EtcdStateStore::new(&discovery, cluster)) as Arc<dyn StateStore>;
    Node::builder()
        .cluster(cluster)
        .node_id(id)
        .discovery(discovery)
        .insecure_links()
        .ask_timeout(Duration::from_secs(3))
        .entity::<Account>(EntityConfig::default().shards(16).store(store))
        .start()
        .await
        .expect("node starts")
}

async fn settled(nodes: &[&Node]) {
    eventually_now(
        "every shard hosted by its assignee",
        Duration::from_secs(20),
        || {
            let statuses: Vec<_> = nodes
                .iter()
                .map(|n| n.entity_status("accounts").unwrap())
                .collect();
            let hosted: usize = statuses.iter().map(|s| s.hosted_here).sum();
            let (low, high) = (16 / nodes.len(), 16_usize.div_ceil(nodes.len()));
            let done = statuses.iter().all(|s| {
                s.in_motion_here == 0
                    && s.hosted_here == s.assigned_here
                    && (low..=high).contains(&s.assigned_here)
            }) && hosted == 16;
            if done {
                Ok(())
            } else {
                Err(statuses)
            }
        },
    )
    .await;
}

#[actix::test]
async fn state_in_etcd_survives_a_handoff_and_every_key_has_one_activation() {
    let etcd = Etcd::start().expect("the etcd tests need a real etcd");
    let a = host(&etcd, "ent", "a").await;
    let b = host(&etcd, "ent", "b").await;
    settled(&[&a, &b]).await;
    for i in 0..24 {
        let key = format!("etcd-acct-{i}");
        assert_eq!(
            a.entity::<Account>(&key).ask(Deposit(5)).await.unwrap(),
            Ok(5)
        );
        assert_eq!(
            b.entity::<Account>(&key).ask(Deposit(1)).await.unwrap(),
            Ok(6)
        );
    }
    b.shutdown().await;
    assert_eq!(a.entity_status("accounts").unwrap().hosted_here, 16);
    for i in 0..24 {
        let key = format!("etcd-acct-{i}");
        // The balances were saved in etcd by whichever node held them.
        assert_eq!(
            a.entity::<Account>(&key).ask(Balance).await.unwrap(),
            6,
            "{key}"
        );
    }
    let live = JOURNAL.max_live("etcd-acct-");
    assert!(live.values().all(|n| *n == 1), "{live:?}");
    a.shutdown().await;
}

#[actix::test]
async fn a_host_cut_off_from_etcd_stops_serving_before_its_lease_can_expire() {
    let mut etcd = Etcd::start().expect("the etcd tests need a real etcd");
    let a = host(&etcd, "cut", "a").await;
    settled(&[&a]).await;
    let account = a.entity::<Account>("cut-1");
    assert_eq!(account.ask(Deposit(1)).await.unwrap(), Ok(1));
    etcd.stop();
    let cut = Instant::now();
    // Within the TTL (2 s) minus the margin the node stops letting activations handle
    // messages: an ask then waits for a route and fails, unhandled, at its deadline.
    let refused = loop {
        match account
            .ask_timeout(Balance, Duration::from_millis(200))
            .await
        {
            Ok(_) => assert!(
                cut.elapsed() < Duration::from_secs(2),
                "served after the TTL"
            ),
            Err(e) => break e,
        }
    };
    let refused_after = cut.elapsed();
    assert!(
        matches!(refused, Error::EntityUnavailable { .. }),
        "{refused:?}"
    );
    assert!(refused_after < Duration::from_secs(2), "{refused_after:?}");
    println!("served until {refused_after:?} after etcd stopped (TTL 2 s, margin 300 ms)");
    etcd.start_again().unwrap();
    // Back: the lease is renewed (or replaced and the shards taken again): serving resumes
    // with the saved state.
    let balance = common::eventually(
        "serving again after etcd came back",
        Duration::from_secs(20),
        || {
            let account = account.clone();
            async move {
                account
                    .ask_timeout(Balance, Duration::from_millis(500))
                    .await
            }
        },
    )
    .await;
    assert_eq!(balance, 1);
    let live = JOURNAL.max_live("cut-");
    assert!(live.values().all(|n| *n == 1), "{live:?}");
    a.shutdown().await;
}
