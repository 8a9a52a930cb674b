//! `PostgresStateStore` against a real PostgreSQL started by the test (see
//! `actormesh-testkit`): these tests fail, never skip, when PostgreSQL is missing.

mod common;

use std::cell::{Cell, RefCell};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use actormesh::store::{check_fencing_contract, PostgresStateStore, StateStore};
use actormesh::Error;
use actormesh_testkit::Postgres;

/// The bound on any one test's waits on the store.
const BOUND: Duration = Duration::from_secs(60);

fn postgres() -> Postgres {
    Postgres::start().expect("the PostgreSQL store tests need a real PostgreSQL")
}

async fn store(pg: &Postgres) -> PostgresStateStore {
    bounded(PostgresStateStore::connect(&pg.conninfo()))
        .await
        .expect("PostgreSQL reachable")
}

async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("no answer within {BOUND:?}"))
}

fn store_error(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::Store(message)) => message,
        other => panic!("expected Error::Store, got {other:?}"),
    }
}

#[actix::test]
async fn the_postgres_store_keeps_the_fencing_contract() {
    let pg = postgres();
    let store = store(&pg).await;
    bounded(check_fencing_contract(&store, "carts")).await;

    // Another node's store (its connect creates the table again: a no-op) sees the same
    // states and claims.
    let other = self::store(&pg).await;
    assert_eq!(
        other
            .load("carts", b"contract-key", 10)
            .await
            .unwrap()
            .as_deref(),
        Some(b"".as_slice())
    );
    let refused = store.save("carts", b"contract-key", 9, b"x").await;
    assert!(
        matches!(refused, Err(Error::StaleActivation { token: 9, .. })),
        "{refused:?}"
    );

    // States beyond the etcd store's 1 MiB are fine here.
    let big = vec![0xab; 4 << 20];
    store.save("carts", b"big", 1, &big).await.unwrap();
    assert_eq!(other.load("carts", b"big", 2).await.unwrap(), Some(big));

    // Tokens are BIGINT: larger ones are refused with a clear error, not wrapped around.
    let message = store_error(store.save("carts", b"huge", u64::MAX, b"x").await);
    assert!(message.contains("18446744073709551615"), "{message}");
    let message = store_error(store.load("carts", b"huge", 1 << 63).await);
    assert!(message.contains("9223372036854775808"), "{message}");
    let max = i64::MAX as u64;
    store.save("carts", b"huge", max, b"max").await.unwrap();
    assert_eq!(
        store.load("carts", b"huge", max).await.unwrap().as_deref(),
        Some(b"max".as_slice())
    );
}

/// One save of the old activation: when it started and whether it was accepted.
#[derive(Debug)]
struct OldSave {
    index: usize,
    started: Instant,
    accepted: bool,
}

#[actix::test]
async fn racing_activations_only_the_newer_token_writes_after_its_claim() {
    let pg = postgres();
    // Two nodes, each with its own connection: the old activation (token 3) saving in a
    // loop, the new one (token 4) taking over in the middle of it.
    let old = store(&pg).await;
    let new = store(&pg).await;
    let key = b"cart-7".as_slice();
    assert_eq!(old.load("carts", key, 3).await.unwrap(), None);

    let old_saves: RefCell<Vec<OldSave>> = RefCell::new(Vec::new());
    let accepted_old = Cell::new(0usize);
    let claimed_at: Cell<Option<Instant>> = Cell::new(None);

    let old_activation = async {
        let mut refused = 0;
        for index in 0.. {
            assert!(index < 100_000, "the new activation never took over");
            let started = Instant::now();
            let state = format!("old-{index}");
            let result = old.save("carts", key, 3, state.as_bytes()).await;
            let accepted = match result {
                Ok(()) => true,
                Err(Error::StaleActivation { token: 3, .. }) => false,
                Err(e) => panic!("old save {index}: {e}"),
            };
            old_saves.borrow_mut().push(OldSave {
                index,
                started,
                accepted,
            });
            if accepted {
                accepted_old.set(accepted_old.get() + 1);
            } else {
                refused += 1;
                // Keep trying for a while after the first refusal: none may get through.
                if refused == 50 {
                    break;
                }
            }
        }
        // Its loads are refused as well.
        assert!(matches!(
            old.load("carts", key, 3).await,
            Err(Error::StaleActivation { .. })
        ));
    };

    let new_activation = async {
        while accepted_old.get() < 20 {
            // Polls a counter of the other future on this task (a condition, not a guess of
            // time): both are joined, so it saves while this one waits.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let loaded = new.load("carts", key, 4).await.unwrap();
        claimed_at.set(Some(Instant::now()));
        for i in 0..50 {
            let state = format!("new-{i}");
            new.save("carts", key, 4, state.as_bytes()).await.unwrap();
            tokio::task::yield_now().await;
        }
        loaded
    };

    let ((), loaded) = bounded(async { tokio::join!(old_activation, new_activation) }).await;
    let claimed_at = claimed_at.get().unwrap();
    let saves = old_saves.into_inner();
    let accepted: Vec<&OldSave> = saves.iter().filter(|s| s.accepted).collect();
    let first_refused = saves.iter().position(|s| !s.accepted).unwrap();
    println!(
        "old activation: {} saves accepted, then {} refused; the new activation loaded {:?}",
        accepted.len(),
        saves.len() - first_refused,
        loaded.as_deref().map(String::from_utf8_lossy)
    );

    // Once refused, the old activation stays refused.
    assert!(
        saves[first_refused..].iter().all(|s| !s.accepted),
        "an old save got through after a refusal"
    );
    // No old save that started after the new claim was acknowledged got through.
    for save in &saves {
        assert!(
            !(save.accepted && save.started >= claimed_at),
            "old save {} started after the claim and was accepted",
            save.index
        );
    }
    // The claim saw the last old save that was accepted: every accepted one committed before
    // it, none after.
    let last_accepted = accepted.last().unwrap().index;
    assert_eq!(
        loaded.as_deref(),
        Some(format!("old-{last_accepted}").as_bytes())
    );
    // The state is the new activation's last save.
    assert_eq!(
        new.load("carts", key, 4).await.unwrap().as_deref(),
        Some(b"new-49".as_slice())
    );
}

#[actix::test]
async fn the_store_reconnects_after_a_restart() {
    let mut pg = postgres();
    let store = store(&pg).await;
    assert_eq!(store.load("carts", b"k", 1).await.unwrap(), None);
    store.save("carts", b"k", 1, b"before").await.unwrap();

    pg.restart().unwrap();
    // The server closed the connection; the next call connects again, and the state is kept.
    assert_eq!(
        bounded(store.load("carts", b"k", 2))
            .await
            .unwrap()
            .as_deref(),
        Some(b"before".as_slice())
    );
    store.save("carts", b"k", 2, b"after").await.unwrap();

    // While the server is down, calls fail, in time, with an error naming the address...
    pg.stop();
    let message = store_error(bounded(store.save("carts", b"k", 2, b"lost")).await);
    let address = format!("127.0.0.1:{}", pg.port());
    assert!(message.contains(&address), "{message}");
    let message = store_error(bounded(store.load("carts", b"k", 2)).await);
    assert!(message.contains(&address), "{message}");
    println!("while PostgreSQL is down: {message}");

    // ...and work again once it is back, without a new store.
    pg.start_again().unwrap();
    assert_eq!(
        bounded(store.load("carts", b"k", 3))
            .await
            .unwrap()
            .as_deref(),
        Some(b"after".as_slice())
    );
}

#[actix::test]
async fn a_wrong_conninfo_is_a_clear_store_error() {
    // Nothing listens on the port.
    let port = actormesh_testkit::free_port();
    let conninfo = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let message = store_error(bounded(PostgresStateStore::connect(&conninfo)).await);
    assert!(
        message.contains(&format!("cannot connect to PostgreSQL at 127.0.0.1:{port}")),
        "{message}"
    );
    println!("nothing listening: {message}");

    // Something listens but never answers: the connect gives up in time.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let conninfo =
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=1");
    let started = Instant::now();
    let message = store_error(bounded(PostgresStateStore::connect(&conninfo)).await);
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10), "{message}");
    println!("no answer: {message}");

    // Malformed: said so, without echoing the string (it may hold a password).
    let message = store_error(
        PostgresStateStore::connect("host=127.0.0.1 port=notaport password=secret").await,
    );
    assert!(
        message.contains("invalid PostgreSQL connection string"),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");

    // A real server, a database that does not exist: PostgreSQL's reason is kept.
    let pg = postgres();
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname=no_such_db password=secret",
        pg.port()
    );
    let message = store_error(bounded(PostgresStateStore::connect(&conninfo)).await);
    assert!(
        message.contains(&format!("127.0.0.1:{}", pg.port())),
        "{message}"
    );
    assert!(message.contains("no_such_db"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(!message.contains("secret"), "{message}");
    println!("no such database: {message}");
}

/// Accounts on two nodes keep their balances in PostgreSQL: after one node hands its shards
/// over, every balance is there, loaded by the new activations.
#[actix::test]
async fn entities_keep_their_state_in_postgresql_across_a_handoff() {
    use actormesh::{EntityConfig, MemoryDiscovery, Node};
    use common::accounts::{Account, Balance, Deposit, JOURNAL};
    use std::sync::Arc;

    let pg = postgres();
    let store = Arc::new(store(&pg).await) as Arc<dyn StateStore>;
    let discovery = MemoryDiscovery::new();
    let node = |store: Arc<dyn StateStore>| {
        Node::builder()
            .cluster("pg-entities")
            .discovery(discovery.clone())
            .entity::<Account>(EntityConfig::default().shards(8).store(store))
            .start()
    };
    let a = node(store.clone()).await.unwrap();
    let b = node(store.clone()).await.unwrap();
    common::eventually_now("both nodes host shards", BOUND, || {
        let held: Vec<_> = [&a, &b]
            .iter()
            .map(|n| n.entity_status("accounts").map_or(0, |s| s.hosted_here))
            .collect();
        if held == [4, 4] {
            Ok(())
        } else {
            Err(held)
        }
    })
    .await;
    for i in 0..16 {
        let key = format!("pg-acct-{i}");
        assert_eq!(
            a.entity::<Account>(&key).ask(Deposit(3)).await.unwrap(),
            Ok(3)
        );
        assert_eq!(
            b.entity::<Account>(&key).ask(Deposit(4)).await.unwrap(),
            Ok(7)
        );
    }
    b.shutdown().await;
    for i in 0..16 {
        let key = format!("pg-acct-{i}");
        assert_eq!(
            a.entity::<Account>(&key).ask(Balance).await.unwrap(),
            7,
            "{key}"
        );
    }
    let live = JOURNAL.max_live("pg-acct-");
    assert!(live.values().all(|n| *n == 1), "{live:?}");
    a.shutdown().await;
}
