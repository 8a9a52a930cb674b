//! The dashboard in a real browser: three `cluster-node` processes on a real etcd, each with
//! an admin listener, run a deployed group; headless Chromium renders one node's dashboard
//! and the test reads the rendered page: three nodes up, the group's replicas. Then one
//! process is SIGKILLed: its node must show as down on the page within TTL + 2 s of the
//! kill. A screenshot is saved for the book (`target/dashboard.png`; with
//! `ACTORMESH_UPDATE_SCREENSHOT=1` also `book/src/images/dashboard.png`).

use std::path::PathBuf;
use std::time::Duration;

use actormesh::{GroupSpec, Node, NodeId, PlacementPolicy};
use actormesh_cluster_tests::{
    browser, etcd_discovery, poll_until, NodeProcess, NodeSpec, Replica, REPLICA_LABEL, TTL,
};
use actormesh_testkit::Etcd;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_cluster-node");
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
/// The virtual time the page gets before the DOM is read: its first poll renders at once,
/// the next ones every second.
const PAGE_BUDGET: Duration = Duration::from_millis(1_500);

/// The rendered page of `url`, read in headless Chromium (blocking, so off the runtime).
async fn rendered(url: &str) -> String {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || browser::dump_dom(&url, PAGE_BUDGET))
        .await
        .expect("the browser task")
        .unwrap_or_else(|e| panic!("chromium renders the dashboard: {e}"))
}

/// The text of the element with `id` in `dom`.
fn text_of(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[at..];
    let open = rest.find('>')?;
    let close = rest[open..].find('<')?;
    Some(rest[open + 1..open + close].trim().to_owned())
}

/// The `data-state` of the row of node `id` in `dom`.
fn node_state(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("data-node=\"{id}\""))?;
    let row_end = at + dom[at..].find('>')?;
    let row_start = dom[..at].rfind('<')?;
    let tag = &dom[row_start..row_end];
    let state = tag.split("data-state=\"").nth(1)?;
    Some(state.split('"').next()?.to_owned())
}

/// The `data-running` and `data-desired` of the row of `group`.
fn group_counts(dom: &str, group: &str) -> Option<(String, String)> {
    let at = dom.find(&format!("data-group=\"{group}\""))?;
    let row_end = at + dom[at..].find('>')?;
    let row_start = dom[..at].rfind('<')?;
    let tag = &dom[row_start..row_end];
    let attr = |name: &str| {
        tag.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|v| v.split('"').next())
            .map(str::to_owned)
    };
    Some((attr("data-running")?, attr("data-desired")?))
}

/// Waits (bounded) until the group `replicas` runs 3 replicas.
async fn three_replicas(me: &Node, what: &str) {
    poll_until(what, Duration::from_secs(20), POLL, || async {
        match me.group_status("replicas").await {
            Ok(s) if s.running == 3 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[actix::test]
async fn the_dashboard_shows_the_cluster_and_a_killed_node_down() {
    browser::chromium().unwrap_or_else(|e| panic!("{e}"));
    let etcd = Etcd::start().expect("the dashboard test needs a real etcd");
    let endpoint = etcd.endpoint();
    let cluster = "dash";
    let ids = ["p1", "p2", "p3"];
    let mut procs: Vec<NodeProcess> = Vec::new();
    for id in ids {
        let spec = NodeSpec::new(BIN, cluster, id)
            .etcd(&endpoint)
            .ttl(TTL)
            .controller()
            .admin();
        procs.push(spec.start().await.unwrap_or_else(|e| panic!("{id}: {e}")));
    }
    let discovery = etcd_discovery(&endpoint, TTL).await.expect("etcd");
    let me = Node::builder()
        .cluster(cluster)
        .node_id("driver")
        .discovery(discovery)
        .insecure_links()
        .start()
        .await
        .expect("the test node joins");
    for id in ids {
        me.wait_for_node(&NodeId::new(id), JOIN_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("the test node sees {id}: {e}"));
    }
    let spec = GroupSpec::new::<Replica>("replicas", &"dash".to_owned(), 3)
        .expect("the spec encodes")
        .placement(PlacementPolicy::Spread)
        .select(REPLICA_LABEL.0, REPLICA_LABEL.1);
    me.deploy(&spec).await.expect("deploy");
    three_replicas(&me, "3 replicas running").await;

    let admin = me
        .members()
        .into_iter()
        .find(|n| n.id.as_str() == "p1")
        .and_then(|n| n.admin)
        .expect("p1 publishes its admin address");
    let url = format!("http://{admin}/");

    // The page as a browser renders it: the three processes up (and the test node), the
    // group's 3 of 3 replicas, a leader.
    let dom = rendered(&url).await;
    for id in ids {
        assert_eq!(
            node_state(&dom, id).as_deref(),
            Some("up"),
            "{id} is shown up:\n{dom}"
        );
    }
    assert_eq!(
        text_of(&dom, "node-count-up").as_deref(),
        Some("4"),
        "{dom}"
    );
    assert_eq!(
        group_counts(&dom, "replicas"),
        Some(("3".to_owned(), "3".to_owned())),
        "{dom}"
    );
    let leader = text_of(&dom, "leader").unwrap_or_default();
    assert!(
        ids.iter().any(|id| leader.contains(id)),
        "a leader is shown: {leader:?}"
    );

    // SIGKILL p3: the page shows it down within TTL + 2 s of the kill.
    let mut victim = procs.remove(2);
    let killed = Instant::now();
    victim.kill().await.expect("p3 is killed");
    let limit = TTL + Duration::from_secs(2);
    let mut looks = 0u32;
    let shown_at = loop {
        looks += 1;
        let dom = rendered(&url).await;
        if node_state(&dom, "p3").as_deref() == Some("down") {
            // The page's data was fetched when the dump started, at the latest.
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < limit + Duration::from_secs(10) && looks < 40,
            "p3 not shown down {:?} after the kill:\n{dom}",
            killed.elapsed()
        );
    };
    println!(
        "[dashboard] p3 shown down {shown_at:?} after its SIGKILL (TTL {TTL:?}; {looks} renders)"
    );
    assert!(
        shown_at <= limit + PAGE_BUDGET + Duration::from_secs(1),
        "p3 shown down {shown_at:?} after the kill: later than TTL + 2 s ({limit:?}) plus one render"
    );

    // The screenshot the book shows, once the controller has replaced the lost replica.
    three_replicas(&me, "3 replicas again").await;
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard.png");
    let shot = {
        let url = url.clone();
        let target = target.clone();
        tokio::task::spawn_blocking(move || {
            browser::screenshot(&url, &target, (1280, 900), Duration::from_millis(2_500))
        })
    };
    shot.await
        .unwrap()
        .unwrap_or_else(|e| panic!("screenshot: {e}"));
    let size = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "a real screenshot, {size} bytes");
    if std::env::var("ACTORMESH_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let book = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../book/src/images");
        std::fs::create_dir_all(&book).unwrap();
        std::fs::copy(&target, book.join("dashboard.png")).unwrap();
    }

    for mut p in procs {
        let status = p.stop(Duration::from_secs(15)).await.expect("stops");
        assert!(status.success(), "{} exits 0: {status}", p.id);
    }
    me.shutdown().await;
}
