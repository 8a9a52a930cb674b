//! Keyed entities on several nodes of one process (memory discovery): single activation,
//! routing from every node, state across moves, rebalancing when a node joins, handoff on a
//! graceful shutdown, passivation, bounded buffers and clear errors.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actormesh::prelude::*;
use actormesh::{EntityConfig, MemoryDiscovery, MemoryStore, StateStore};
use common::accounts::*;
use common::eventually_now;

fn config(store: &Arc<MemoryStore>) -> EntityConfig {
    EntityConfig::default()
        .shards(32)
        .store(store.clone() as Arc<dyn StateStore>)
}

async fn host(cluster: &str, discovery: &MemoryDiscovery, store: &Arc<MemoryStore>) -> Node {
    Node::builder()
        .cluster(cluster)
        .discovery(discovery.clone())
        .entity::<Account>(config(store))
        .start()
        .await
        .unwrap()
}

#[actix::test]
async fn every_node_reaches_one_activation_per_key() {
    let discovery = MemoryDiscovery::new();
    let store = Arc::new(MemoryStore::new());
    let a = host("one", &discovery, &store).await;
    let b = host("one", &discovery, &store).await;
    let c = host("one", &discovery, &store).await;
    settled(&[&a, &b, &c], 32).await;
    let mut placed = BTreeMap::new();
    for i in 0..60 {
        let key = format!("one-{i}");
        let mut seen = Vec::new();
        for node in [&a, &b, &c] {
            let account = node.entity::<Account>(&key);
            assert_eq!(
                account.ask(Deposit(1)).await.unwrap(),
                Ok(seen.len() as u64 + 1)
            );
            seen.push(account.ask(Where).await.unwrap());
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "{key} answered from {seen:?}"
        );
        *placed.entry(seen[0].clone()).or_insert(0) += 1;
    }
    assert_eq!(
        placed.len(),
        3,
        "keys spread over the three nodes: {placed:?}"
    );
    let live = JOURNAL.max_live("one-");
    assert_eq!(live.len(), 60);
    assert!(live.values().all(|n| *n == 1), "{live:?}");
    for n in [c, b, a] {
        n.shutdown().await;
    }
}

#[actix::test]
async fn a_fourth_node_takes_a_quarter_and_state_follows_the_moved_entities() {
    let discovery = MemoryDiscovery::new();
    let store = Arc::new(MemoryStore::new());
    let a = host("grow", &discovery, &store).await;
    let b = host("grow", &discovery, &store).await;
    let c = host("grow", &discovery, &store).await;
    settled(&[&a, &b, &c], 32).await;
    for i in 0..40 {
        let account = a.entity::<Account>(format!("grow-{i}"));
        assert_eq!(account.ask(Deposit(10)).await.unwrap(), Ok(10));
    }
    let d = host("grow", &discovery, &store).await;
    settled(&[&a, &b, &c, &d], 32).await;
    let statuses: Vec<_> = [&a, &b, &c, &d]
        .iter()
        .map(|n| n.entity_status("accounts").unwrap().hosted_here)
        .collect();
    assert_eq!(statuses, [8, 8, 8, 8], "32 shards over 4 nodes");
    let mut on_d = 0;
    for i in 0..40 {
        let account = b.entity::<Account>(format!("grow-{i}"));
        // The balance survived the move: loaded from the store by the new activation.
        assert_eq!(account.ask(Deposit(1)).await.unwrap(), Ok(11), "grow-{i}");
        if account.ask(Where).await.unwrap() == d.id().to_string() {
            on_d += 1;
        }
    }
    assert!(on_d > 0, "some accounts moved to the new node");
    let live = JOURNAL.max_live("grow-");
    assert!(live.values().all(|n| *n == 1), "{live:?}");
    for n in [d, c, b, a] {
        n.shutdown().await;
    }
}

#[actix::test]
async fn tells_accepted_during_a_graceful_shutdown_reach_the_new_owner() {
    let discovery = MemoryDiscovery::new();
    let store = Arc::new(MemoryStore::new());
    let a = host("hand", &discovery, &store).await;
    let b = host("hand", &discovery, &store).await;
    settled(&[&a, &b], 32).await;
    let keys: Vec<String> = (0..20).map(|i| format!("hand.{i}.")).collect();
    for key in &keys {
        a.entity::<Account>(key).ask(Balance).await.unwrap();
    }
    // Tells from both nodes while `b` hands its shards over and leaves.
    let sender = {
        let a = a.clone();
        let keys = keys.clone();
        actix::spawn(async move {
            for round in 0..50 {
                for key in &keys {
                    a.entity::<Account>(key).tell(Credit(1)).unwrap();
                }
                if round % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    b.shutdown().await;
    sender.await.unwrap();
    // Tells forwarded by `b` may still be on their way into `a`'s mailboxes.
    let counts = |keys: &[String]| -> Vec<usize> {
        keys.iter().map(|k| JOURNAL.count(k, "credit")).collect()
    };
    eventually_now(
        "every accepted tell handled",
        Duration::from_secs(10),
        || {
            let seen = counts(&keys);
            if seen.iter().all(|n| *n >= 50) {
                Ok(())
            } else {
                Err(seen)
            }
        },
    )
    .await;
    for key in &keys {
        // Credits are not saved: a moved account restarts from its saved balance (0).
        let balance = a.entity::<Account>(key).ask(Balance).await.unwrap();
        assert!(balance <= 50, "{key}: {balance}");
    }
    assert_eq!(
        counts(&keys),
        vec![50; keys.len()],
        "each tell handled once"
    );
    assert_eq!(b.stats().dropped_total(), 0);
    settled(&[&a], 32).await;
    a.shutdown().await;
}

#[actix::test]
async fn only_nodes_whose_labels_match_the_selector_host_the_type() {
    let discovery = MemoryDiscovery::new();
    let store = Arc::new(MemoryStore::new());
    let node = |role: &'static str| {
        Node::builder()
            .cluster("select")
            .discovery(discovery.clone())
            .label("role", role)
            .entity::<Account>(config(&store).selector("role", "ledger"))
            .start()
    };
    let a = node("ledger").await.unwrap();
    let b = node("ledger").await.unwrap();
    let web = node("web").await.unwrap();
    settled(&[&a, &b], 32).await;
    // Same configuration everywhere; the label decides: `web` takes no shard, and sends.
    assert_eq!(web.entity_status("accounts").unwrap().assigned_here, 0);
    assert_eq!(web.entity_status("accounts").unwrap().hosted_here, 0);
    for i in 0..20 {
        let account = web.entity::<Account>(format!("select-{i}"));
        assert_eq!(account.ask(Deposit(2)).await.unwrap(), Ok(2));
        let on = account.ask(Where).await.unwrap();
        assert_ne!(on, web.id().to_string(), "select-{i}");
    }
    for n in [web, b, a] {
        n.shutdown().await;
    }
}

#[actix::test]
async fn idle_activations_are_passivated_and_come_back_with_their_state() {
    let discovery = MemoryDiscovery::new();
    let store = Arc::new(MemoryStore::new());
    let a = Node::builder()
        .cluster("idle")
        .discovery(discovery.clone())
        .entity::<Account>(config(&store).idle_timeout(Duration::from_millis(200)))
        .start()
        .await
        .unwrap();
    let account = a.entity::<Account>("idle-1");
    assert_eq!(account.ask(Deposit(5)).await.unwrap(), Ok(5));
    eventually_now(
        "the idle account passivated",
        Duration::from_secs(10),
        || match JOURNAL.count("idle-1", "stop") {
            1 => Ok(()),
            n => Err(n),
        },
    )
    .await;
    assert_eq!(a.entity_status("accounts").unwrap().activations, 0);
    assert_eq!(account.ask(Deposit(1)).await.unwrap(), Ok(6));
    assert_eq!(JOURNAL.count("idle-1", "start"), 2);
    a.shutdown().await;
}

#[actix::test]
async fn without_a_host_an_ask_fails_in_time_saying_why_and_a_full_buffer_refuses() {
    let discovery = MemoryDiscovery::new();
    let client = Node::builder()
        .cluster("nohost")
        .discovery(discovery.clone())
        .ask_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let account = client.entity::<Account>("nohost-1");
    let err = account.ask(Balance).await.unwrap_err();
    match &err {
        Error::EntityUnavailable { kind, key, why } => {
            assert_eq!((*kind, key.as_str()), ("accounts", "nohost-1"));
            assert!(why.contains("no node hosts"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_transient());
    // Tells wait for a host, up to the default buffer (10,000), then are refused.
    for _ in 0..10_000 {
        account.tell(Credit(1)).unwrap();
    }
    let refused = account.tell(Credit(1)).unwrap_err();
    assert!(
        matches!(
            refused.error,
            Error::EntityBufferFull {
                kind: "accounts",
                limit: 10_000
            }
        ),
        "{refused}"
    );
    // A host arrives: the held tells are delivered, in order, once.
    let store = Arc::new(MemoryStore::new());
    let h = host("nohost", &discovery, &store).await;
    eventually_now(
        "held tells delivered",
        Duration::from_secs(20),
        || match JOURNAL.count("nohost-1", "credit") {
            10_000 => Ok(()),
            n => Err(n),
        },
    )
    .await;
    assert_eq!(
        h.entity::<Account>("nohost-1").ask(Balance).await.unwrap(),
        10_000
    );
    h.shutdown().await;
    client.shutdown().await;
}
