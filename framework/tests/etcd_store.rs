//! `EtcdStateStore` against a real etcd started by the test (see `actormesh-testkit`): these
//! tests fail, never skip, when etcd is missing.

use std::time::Duration;

use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::store::{check_fencing_contract, EtcdStateStore, StateStore, ETCD_MAX_STATE_BYTES};
use actormesh::Error;
use actormesh_testkit::Etcd;

/// The bound on any one test's waits on the store.
const BOUND: Duration = Duration::from_secs(60);

fn etcd() -> Etcd {
    Etcd::start().expect("the etcd store tests need a real etcd")
}

async fn discovery(etcd: &Etcd) -> EtcdDiscovery {
    let config = EtcdConfig::new([etcd.endpoint()]);
    bounded(EtcdDiscovery::connect(config))
        .await
        .expect("etcd reachable")
}

async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("no answer within {BOUND:?}"))
}

#[actix::test]
async fn the_etcd_store_keeps_the_fencing_contract() {
    let etcd = etcd();
    let discovery = discovery(&etcd).await;
    bounded(check_fencing_contract(
        &EtcdStateStore::new(&discovery, "c1"),
        "carts",
    ))
    .await;
    // Clusters are apart.
    let other_cluster = EtcdStateStore::new(&discovery, "c2");
    assert_eq!(
        other_cluster
            .load("carts", b"contract-key", 1)
            .await
            .unwrap(),
        None
    );
}

#[actix::test]
async fn states_over_a_mebibyte_are_refused() {
    let etcd = etcd();
    let discovery = discovery(&etcd).await;
    let store = EtcdStateStore::new(&discovery, "c1");
    assert_eq!(ETCD_MAX_STATE_BYTES, 1 << 20);
    store.load("carts", b"big", 1).await.unwrap();
    store.save("carts", b"big", 1, b"small").await.unwrap();

    let too_big = vec![7; ETCD_MAX_STATE_BYTES + 1];
    match bounded(store.save("carts", b"big", 1, &too_big)).await {
        Err(Error::Store(message)) => {
            assert!(
                message.contains(&format!("{}", ETCD_MAX_STATE_BYTES + 1)),
                "{message}"
            );
            assert!(
                message.contains(&format!("{ETCD_MAX_STATE_BYTES}")),
                "{message}"
            );
            assert!(message.contains("PostgreSQL"), "{message}");
        }
        other => panic!("expected Error::Store, got {other:?}"),
    }
    // The refused save changed nothing.
    assert_eq!(
        store.load("carts", b"big", 1).await.unwrap().as_deref(),
        Some(b"small".as_slice())
    );
    // The limit itself is accepted.
    let limit = vec![9; ETCD_MAX_STATE_BYTES];
    bounded(store.save("carts", b"big", 1, &limit))
        .await
        .unwrap();
    assert_eq!(
        store.load("carts", b"big", 2).await.unwrap().as_deref(),
        Some(limit.as_slice())
    );
}
