//! Keyed entities on a real etcd (started by the test): shards bound to leases, state in
//! the etcd store, handoff at a graceful shutdown, and a host that stops serving before its
//! lease can expire when it is cut off from etcd.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::prelude::*;
use actormesh::store::EtcdStateStore;
use actormesh::{EntityConfig, StateStore};
use actormesh_testkit::Etcd;
use common::accounts::*;

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

#[actix::test]
async fn state_in_etcd_survives_a_handoff_and_every_key_has_one_activation() {
    let etcd = Etcd::start().expect("the etcd tests need a real etcd");
    let a = host(&etcd, "ent", "a").await;
    let b = host(&etcd, "ent", "b").await;
    settled(&[&a, &b], 16).await;
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
    // `b` returns once it holds nothing; `a` takes the shards as their keys go.
    settled(&[&a], 16).await;
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
    settled(&[&a], 16).await;
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
