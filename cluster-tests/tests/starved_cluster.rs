//! Issue 10, "A frozen or starved node must not act after the cluster gave up on it", against
//! a real `cluster-node` process and a real etcd (lease TTL 2 s), driven from the test process
//! (itself a node of the same cluster):
//!
//! - a handler that keeps the node's thread busy for three TTLs does not get the node declared
//!   down (its lease is kept alive from a thread of its own);
//! - a flood of malformed envelopes on 50 link streams neither gets the node declared down nor
//!   floods its log (repeated warnings are limited per call site, with a `suppressed` count);
//! - a node frozen (SIGSTOP) for three TTLs under ask load applies exactly the asks whose
//!   callers were told it succeeded, plus at most the ones in flight at the moment it froze:
//!   nothing sent to it after that and reported failed to its caller is executed when it wakes.
//!
//! Each test starts its own etcd on free loopback ports and its own process; the tests run one
//! at a time (they measure timings).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actormesh::{Error, MembershipEvent, Node, NodeId};
use actormesh_cluster_tests::{
    etcd_lease_of, etcd_test_node, log_field, poll_until, wait_for_event, Add, Applied, Apply,
    CapturedLog, Counter, Ledger, NodeProcess, NodeSpec, Spin, Spinner, WhoAreYou, TTL,
};
use actormesh_testkit::Etcd;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_cluster-node");

/// How long the node is starved or frozen: three lease TTLs.
const STARVE: Duration = Duration::from_secs(3 * TTL.as_secs());
/// How long after the starvation a late `Down` is still looked for.
const QUIET_AFTER: Duration = Duration::from_secs(2);
/// How long the process or the test node may take to appear in a view.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The timeout of an ordinary ask that must be answered.
const ASK: Duration = Duration::from_secs(2);
/// Pause between two attempts of a polled condition.
const POLL: Duration = Duration::from_millis(50);

/// One scenario at a time: timings are measured.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn start_etcd() -> Etcd {
    Etcd::start().expect("the starved-cluster tests need a real etcd")
}

/// Starts the process `spec` (of `cluster`, on etcd at `endpoint`), then the test node
/// `driver`, and waits until the test node sees the process; returns its address too.
async fn start_pair(
    endpoint: &str,
    cluster: &str,
    spec: NodeSpec,
) -> (Node, NodeProcess, SocketAddr) {
    let id = spec.id().to_owned();
    let process = spec
        .start()
        .await
        .unwrap_or_else(|e| panic!("{id} starts: {e}"));
    let me = etcd_test_node(endpoint, cluster, "driver")
        .await
        .expect("the test node joins");
    let info = me
        .wait_for_node(&NodeId::new(&id), JOIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("the test node sees {id}: {e}"));
    (me, process, info.addr)
}

/// Stops the process gracefully (it must exit 0), then the test node.
async fn stop_pair(me: Node, mut process: NodeProcess) {
    let status = process
        .stop(STOP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{} stops: {e}", process.id));
    assert!(status.success(), "{} exited with {status}", process.id);
    me.shutdown().await;
}

/// The lease of the node key of `node` in `cluster`.
async fn lease(endpoint: &str, cluster: &str, node: &str) -> i64 {
    let key = format!("/actormesh/{cluster}/nodes/{node}");
    etcd_lease_of(endpoint, &key)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("{key} is not in etcd"))
}

/// Receives membership events until `until` (at most 10 000); returns the `Down` and `Left`
/// events about `node` among them, and how many events about `node` there were in all.
async fn departures_until(
    events: &mut broadcast::Receiver<MembershipEvent>,
    node: &str,
    until: Instant,
) -> Result<(Vec<MembershipEvent>, usize), String> {
    let mut departures = Vec::new();
    let mut about = 0;
    for _ in 0..10_000 {
        match tokio::time::timeout_at(until, events.recv()).await {
            Err(_) => return Ok((departures, about)),
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                return Err("the test node shut down".to_owned())
            }
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                return Err(format!("{n} membership events were lost"))
            }
            Ok(Ok(event)) if event.node().as_str() == node => {
                about += 1;
                if !matches!(event, MembershipEvent::Up(_)) {
                    departures.push(event);
                }
            }
            Ok(Ok(_)) => {}
        }
    }
    Err("more than 10 000 membership events".to_owned())
}

/// The name of an error's variant (`Timeout`, `NodeDown`…).
fn kind(e: &Error) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[actix::test]
async fn a_handler_busy_for_three_ttls_does_not_get_its_node_declared_down() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let etcd = start_etcd();
    let endpoint = etcd.endpoint();
    let spec = NodeSpec::new(BIN, "busy", "p1")
        .etcd(&endpoint)
        .fault_actors();
    let (me, p1, _) = start_pair(&endpoint, "busy", spec).await;
    let lease_before = lease(&endpoint, "busy", "p1").await;
    let spinner = me
        .lookup::<Spinner>("spinner-p1")
        .await
        .expect("spinner-p1 is registered");
    let counter = me
        .lookup::<Counter>("counter-p1")
        .await
        .expect("counter-p1 is registered");
    assert_eq!(
        counter.ask_timeout(WhoAreYou, ASK).await.unwrap(),
        p1.pid,
        "p1 answers before the spin"
    );

    let mut events = me.subscribe();
    let asked = Instant::now();
    // The caller may give up (a timeout is allowed): only the node's fate is judged.
    let spun = spinner
        .ask_timeout(
            Spin {
                ms: STARVE.as_millis() as u64,
            },
            STARVE + Duration::from_secs(5),
        )
        .await;
    let answered = asked.elapsed();
    // The spin ended before its answer arrived, and cannot have ended before STARVE passed.
    let spin_end = Instant::now().max(asked + STARVE);
    eprintln!("[busy] Spin({STARVE:?}) answered {spun:?} after {answered:?}");
    let (departures, about) = departures_until(&mut events, "p1", spin_end + QUIET_AFTER)
        .await
        .unwrap();
    let lease_after = lease(&endpoint, "busy", "p1").await;
    eprintln!(
        "[busy] lease of p1 before {lease_before:x}, after {lease_after:x}; events about p1 \
         from the spin's start to {QUIET_AFTER:?} after its end: {about} ({departures:?})"
    );
    assert!(
        departures.is_empty(),
        "p1 was declared gone while its handler was busy: {departures:?}"
    );
    assert_eq!(
        lease_after, lease_before,
        "p1 kept its lease through {STARVE:?} of a busy thread (a new lease means it was \
         declared down and registered again)"
    );
    assert!(
        me.members().iter().any(|m| m.id.as_str() == "p1"),
        "the test node still has p1 in its view"
    );
    let answered_after = Instant::now();
    assert_eq!(
        counter.ask_timeout(Add(1), ASK).await.unwrap(),
        1,
        "p1 answers an ordinary ask after the spin"
    );
    assert_eq!(counter.ask_timeout(WhoAreYou, ASK).await.unwrap(), p1.pid);
    eprintln!(
        "[busy] p1 answered after the spin in {:?}; test took {:?}",
        answered_after.elapsed(),
        started.elapsed()
    );
    stop_pair(me, p1).await;
}

/// The link streams of the flood.
const STREAMS: usize = 50;
/// Frames each stream sends.
const FRAMES_PER_STREAM: usize = 2;
/// Envelopes in one frame (the last one truncated).
const ENVELOPES_PER_FRAME: usize = 640;
/// Size of one malformed envelope, its length prefix included.
const ENVELOPE_BYTES: usize = 64;
/// The gRPC path of the link stream (`framework/src/transport/mod.rs`).
const LINK_PATH: &str = "/actormesh.Mesh/Link";
/// The log line of a dropped malformed envelope (`runtime/inbound.rs`).
const MALFORMED_LINE: &str = "dropped a malformed envelope";
/// Lines one call site logs per second (`ratelog::PER_WINDOW`).
const LINES_PER_SECOND: u64 = 10;

/// One frame of malformed envelopes: each `[u32 LE length][header]` with a header bincode
/// cannot decode (unknown variants, a `Tell` whose first field is not a valid integer), and a
/// last envelope whose length claims more bytes than the frame holds (truncated).
fn malformed_frame(seed: usize, envelopes: usize) -> Bytes {
    let body = ENVELOPE_BYTES - 4;
    let mut frame = BytesMut::with_capacity(envelopes * ENVELOPE_BYTES);
    for i in 0..envelopes {
        let filler = (seed + i) as u8;
        if i + 1 == envelopes {
            frame.put_u32_le(1_000_000);
            frame.put_bytes(filler, body);
            break;
        }
        frame.put_u32_le(body as u32);
        let header: &[u8] = match i % 3 {
            // Variant 200: there is no such variant.
            0 => &[200],
            // Variant 65535 (a varint u16).
            1 => &[251, 0xff, 0xff],
            // `Tell` whose target starts with the reserved varint byte 255.
            _ => &[0, 255],
        };
        frame.put_slice(header);
        frame.put_bytes(filler, body - header.len());
    }
    frame.freeze()
}

/// The link's codec: frames are opaque bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// An HTTP/2 connection to the node listening at `addr` (loopback).
async fn connect(addr: SocketAddr) -> tonic::transport::Channel {
    assert!(addr.ip().is_loopback(), "{addr} is not a loopback address");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(5));
    tokio::time::timeout(Duration::from_secs(5), endpoint.connect())
        .await
        .unwrap_or_else(|_| panic!("no connection to {addr} within 5 s"))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
}

/// Opens one link stream to node `to` of `cluster` with a valid handshake, sends `frames` on
/// it, ends it, and reads the replies until the node ends the stream (within 30 s). Returns
/// the number of reply frames.
async fn send_link_frames(
    channel: tonic::transport::Channel,
    protocol: u32,
    cluster: &str,
    to: &str,
    frames: Vec<Bytes>,
) -> Result<usize, String> {
    let exchange = async {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| format!("not ready: {e}"))?;
        let mut request = tonic::Request::new(tokio_stream::iter(frames));
        let md = request.metadata_mut();
        md.insert(
            "actormesh-protocol",
            tonic::metadata::MetadataValue::from(protocol),
        );
        md.insert_bin(
            "actormesh-cluster-bin",
            tonic::metadata::MetadataValue::from_bytes(cluster.as_bytes()),
        );
        md.insert_bin(
            "actormesh-from-bin",
            tonic::metadata::MetadataValue::from_bytes(b"flooder"),
        );
        md.insert_bin(
            "actormesh-to-bin",
            tonic::metadata::MetadataValue::from_bytes(to.as_bytes()),
        );
        let response = grpc
            .streaming(
                request,
                http::uri::PathAndQuery::from_static(LINK_PATH),
                RawCodec,
            )
            .await
            .map_err(|s| format!("handshake: {:?}: {}", s.code(), s.message()))?;
        let mut replies = response.into_inner();
        for read in 0..10_000 {
            match replies.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(read),
                Err(s) => return Err(format!("reply stream: {:?}: {}", s.code(), s.message())),
            }
        }
        Err("more than 10 000 reply frames".to_owned())
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "the stream did not end within 30 s".to_owned())?
}

/// The lines of `log` that contain `text`, and the sum of their `suppressed` counts
/// (occurrences counted but not logged).
fn count_lines(log: &CapturedLog, text: &str) -> (u64, u64) {
    let mut lines = 0;
    let mut suppressed = 0;
    for line in log.lines() {
        if line.contains(text) {
            lines += 1;
            suppressed += log_field(&line, "suppressed")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (lines, suppressed)
}

#[actix::test]
async fn a_flood_of_malformed_envelopes_neither_downs_the_node_nor_floods_its_log() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let etcd = start_etcd();
    let endpoint = etcd.endpoint();
    let spec = NodeSpec::new(BIN, "flood", "p1")
        .etcd(&endpoint)
        .env("RUST_LOG", "warn")
        .capture_log();
    let (me, p1, addr) = start_pair(&endpoint, "flood", spec).await;
    let log = p1.log.clone().expect("the log is captured");
    let lease_before = lease(&endpoint, "flood", "p1").await;
    let counter = me
        .lookup::<Counter>("counter-p1")
        .await
        .expect("counter-p1 is registered");
    assert_eq!(counter.ask_timeout(Add(1), ASK).await.unwrap(), 1);
    let lines_before = log.total();

    let mut events = me.subscribe();
    let channel = connect(addr).await;
    let flood_started = Instant::now();
    // The handshake names the protocol version this build speaks (as every node records it).
    let protocol = me.info().protocol;
    let mut streams = Vec::new();
    let mut sent_bytes = 0;
    let mut sent_envelopes = 0;
    for s in 0..STREAMS {
        let frames: Vec<Bytes> = (0..FRAMES_PER_STREAM)
            .map(|f| malformed_frame(s * FRAMES_PER_STREAM + f, ENVELOPES_PER_FRAME))
            .collect();
        sent_bytes += frames.iter().map(Bytes::len).sum::<usize>();
        sent_envelopes += (FRAMES_PER_STREAM * ENVELOPES_PER_FRAME) as u64;
        // A connection per stream: a node lets one connection open only a few streams at
        // once (8), as a peer needs one link.
        let stream_channel = connect(addr).await;
        streams.push(actix::spawn(send_link_frames(
            stream_channel,
            protocol,
            "flood",
            "p1",
            frames,
        )));
    }
    let mut outcomes = Vec::new();
    for stream in streams {
        outcomes.push(stream.await.expect("the stream's task ends"));
    }
    let flood_took = flood_started.elapsed();
    let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    eprintln!(
        "[flood] {STREAMS} streams, {sent_envelopes} malformed envelopes, {sent_bytes} bytes, \
         sent and ended by p1 in {flood_took:?}"
    );
    assert!(
        failed.is_empty(),
        "{} of {STREAMS} streams failed (the handshake must be accepted so the garbage reaches \
         the envelope decoder): {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );

    // Every envelope is counted, logged or in a later line's `suppressed`; the count of the
    // last window is only written with the next line, so one more malformed envelope is sent
    // once a new window (1 s) has begun, until the log accounts for all of them.
    let probes = Cell::new(0u64);
    let last_probe = Cell::new(Instant::now());
    let accounted = poll_until(
        "p1's log accounts for every malformed envelope",
        Duration::from_secs(10),
        POLL,
        || {
            let channel = channel.clone();
            let (log, probes, last_probe) = (&log, &probes, &last_probe);
            async move {
                let (lines, suppressed) = count_lines(log, MALFORMED_LINE);
                let sent = sent_envelopes + probes.get();
                if lines + suppressed == sent {
                    return Ok((lines, suppressed));
                }
                if last_probe.get().elapsed() > Duration::from_millis(1100) {
                    last_probe.set(Instant::now());
                    probes.set(probes.get() + 1);
                    send_link_frames(
                        channel,
                        protocol,
                        "flood",
                        "p1",
                        vec![malformed_frame(0, 1)],
                    )
                    .await?;
                }
                Err(format!(
                    "{lines} lines + {suppressed} suppressed of {sent} malformed envelopes"
                ))
            }
        },
    )
    .await;
    let checked = flood_started.elapsed();
    let (departures, about) = departures_until(
        &mut events,
        "p1",
        flood_started + flood_took + TTL + QUIET_AFTER,
    )
    .await
    .unwrap();
    let lease_after = lease(&endpoint, "flood", "p1").await;
    let (lines, suppressed) = count_lines(&log, MALFORMED_LINE);
    let all_lines = log.total() - lines_before;
    let other: Vec<String> = log
        .lines()
        .into_iter()
        .skip(lines_before as usize)
        .filter(|l| !l.contains(MALFORMED_LINE))
        .take(5)
        .collect();
    eprintln!(
        "[flood] p1's log: {lines} lines about malformed envelopes (suppressed={suppressed} \
         in all) for {} envelopes ({} probes), {all_lines} lines in all since the flood \
         began, over {checked:?}; other lines: {other:?}",
        sent_envelopes + probes.get(),
        probes.get()
    );
    eprintln!(
        "[flood] lease of p1 before {lease_before:x}, after {lease_after:x}; events about p1: \
         {about} ({departures:?})"
    );
    if let Some(first) = log.lines().iter().find(|l| l.contains(MALFORMED_LINE)) {
        eprintln!("[flood] first such line: {first}");
    }
    assert!(
        departures.is_empty(),
        "p1 was declared gone during the flood: {departures:?}"
    );
    assert_eq!(
        lease_after, lease_before,
        "p1 kept its lease through the flood"
    );
    assert_eq!(
        counter.ask_timeout(Add(1), ASK).await.unwrap(),
        2,
        "p1 answers after the flood"
    );
    // 10 lines a second per call site, for each second begun since the flood started.
    let bound = LINES_PER_SECOND * (checked.as_secs() + 2);
    assert!(
        lines <= bound,
        "{lines} lines about malformed envelopes in {checked:?} (at most {bound})"
    );
    assert!(
        lines * 100 < sent_envelopes,
        "{lines} lines for {sent_envelopes} malformed envelopes"
    );
    assert!(
        all_lines < 1_000,
        "{all_lines} log lines during the flood: {:?}",
        log.last(10)
    );
    let accounted = accounted.unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "[flood] accounted: {accounted:?} (lines, suppressed); test took {:?}",
        started.elapsed()
    );
    stop_pair(me, p1).await;
}

/// Concurrent callers of the frozen-ledger scenario, each asking one at a time.
const CALLERS: usize = 4;
/// Each caller's pace: 50 asks a second.
const PACE: Duration = Duration::from_millis(20);
/// The timeout of each ask of the load when the callers give up before the node wakes: the
/// node refuses their asks as read after their deadline.
const SHORT_ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// The timeout of each ask of the load when it outlasts the freeze: the callers are told
/// `NodeDown` first, the node reads their asks before their deadline, and only its fence (it
/// learns that its lease is gone) keeps it from applying them.
const LONG_ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Turns (an ask, or a look-up after `NodeDown`) one caller takes at most (a bound on its
/// loop: 40 s at its pace).
const MAX_TURNS_PER_CALLER: usize = 2_000;
/// Successes before the freeze (about 1 s of load).
const WARM_SUCCESSES: u64 = 200;
/// Callers' turns (asks, or look-ups of the ledger after `NodeDown`) after SIGCONT before the
/// load stops (about 2 s of load).
const TURNS_AFTER_RESUME: u64 = (CALLERS as u64) * 100;

/// The log line of an ask refused unstarted because it was read after its caller's deadline
/// (`runtime/inbound.rs`).
const LATE_ASK_LINE: &str = "an ask arrived after its caller's deadline";

/// One ask of the load.
#[derive(Debug)]
struct Call {
    id: u64,
    sent: Instant,
    /// `None` on success, else the error's kind.
    error: Option<String>,
}

/// What the callers share.
#[derive(Debug)]
struct Load {
    calls: Mutex<Vec<Call>>,
    first_errors: Mutex<BTreeMap<String, String>>,
    next_id: AtomicU64,
    stop: AtomicBool,
    successes: watch::Sender<u64>,
    turns: watch::Sender<u64>,
    /// Failed look-ups of the ledger (after a `NodeDown`), by error kind.
    lookups_failed: Mutex<BTreeMap<String, usize>>,
    lookups_ok: AtomicU64,
    /// The timeout of each ask (and look-up).
    ask_timeout: Duration,
}

impl Load {
    fn record(&self, call: Call, error: Option<&Error>) {
        if let Some(e) = error {
            let mut first = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
            first.entry(kind(e)).or_insert_with(|| e.to_string());
        } else {
            self.successes.send_modify(|n| *n += 1);
        }
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
    }
}

/// One caller: an ask of a fresh id every [`PACE`], one at a time, until told to stop. After a
/// `NodeDown` its reference is dead (references to a node declared down stay down; the error
/// says to look the actor up again): it looks `ledger-p1` up again on its next turns until
/// that succeeds, as a client of a real service would.
async fn caller(me: Node, ledger: actormesh::ActorRef<Ledger>, load: Arc<Load>) {
    let mut tick = tokio::time::interval(PACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ledger = Some(ledger);
    for _ in 0..MAX_TURNS_PER_CALLER {
        tick.tick().await;
        if load.stop.load(Ordering::Acquire) {
            return;
        }
        load.turns.send_modify(|n| *n += 1);
        let Some(target) = &ledger else {
            let found = tokio::time::timeout(load.ask_timeout, me.lookup::<Ledger>("ledger-p1"))
                .await
                .map_err(|_| "Timeout".to_owned())
                .and_then(|r| r.map_err(|e| kind(&e)));
            match found {
                Ok(found) => {
                    load.lookups_ok.fetch_add(1, Ordering::Relaxed);
                    ledger = Some(found);
                }
                Err(kind) => {
                    *load
                        .lookups_failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(kind)
                        .or_default() += 1;
                }
            }
            continue;
        };
        let id = load.next_id.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let result = target.ask_timeout(Apply { id }, load.ask_timeout).await;
        let error = result.as_ref().err();
        if matches!(error, Some(Error::NodeDown { .. })) {
            ledger = None;
        }
        let call = Call {
            id,
            sent,
            error: error.map(kind),
        };
        load.record(call, error);
    }
}

/// Waits up to `timeout` until the count in `counter` reaches `target`.
async fn wait_count(
    counter: &watch::Sender<u64>,
    target: u64,
    timeout: Duration,
    what: &str,
) -> Result<(), String> {
    let mut rx = counter.subscribe();
    let reached = tokio::time::timeout(timeout, async {
        rx.wait_for(|n| *n >= target).await.map(|_| ())
    })
    .await;
    match reached {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "{what}: {} of {target} within {timeout:?}",
            *counter.borrow()
        )),
    }
}

#[actix::test]
async fn a_frozen_counter_applies_exactly_the_asks_whose_callers_succeeded() {
    frozen_ledger(SHORT_ASK_TIMEOUT).await;
}

/// The fence: callers told `NodeDown` while their asks wait, unexpired, in the frozen node's
/// socket. Without the fence the node applies them when it wakes.
#[actix::test]
async fn a_frozen_counter_declared_down_applies_nothing_its_callers_were_told_failed() {
    frozen_ledger(LONG_ASK_TIMEOUT).await;
}

/// SIGSTOP the node holding a ledger for 3x the TTL under ask load (asks of `ask_timeout`),
/// SIGCONT, and compare what it applied with what its callers were told.
async fn frozen_ledger(ask_timeout: Duration) {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let etcd = start_etcd();
    let endpoint = etcd.endpoint();
    let spec = NodeSpec::new(BIN, "zombie", "p1")
        .etcd(&endpoint)
        .fault_actors()
        .env("RUST_LOG", "warn")
        .capture_log();
    let (me, p1, _) = start_pair(&endpoint, "zombie", spec).await;
    let log = p1.log.clone().expect("the log is captured");
    let ledger = me
        .lookup::<Ledger>("ledger-p1")
        .await
        .expect("ledger-p1 is registered");
    assert_eq!(
        ledger.ask_timeout(Applied, ASK).await.unwrap(),
        Vec::<u64>::new()
    );
    let lease_before = lease(&endpoint, "zombie", "p1").await;

    let load = Arc::new(Load {
        calls: Mutex::new(Vec::new()),
        first_errors: Mutex::new(BTreeMap::new()),
        next_id: AtomicU64::new(1),
        stop: AtomicBool::new(false),
        successes: watch::Sender::new(0),
        turns: watch::Sender::new(0),
        lookups_failed: Mutex::new(BTreeMap::new()),
        lookups_ok: AtomicU64::new(0),
        ask_timeout,
    });
    let mut events = me.subscribe();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| actix::spawn(caller(me.clone(), ledger.clone(), load.clone())))
        .collect();
    let load_started = Instant::now();
    wait_count(
        &load.successes,
        WARM_SUCCESSES,
        Duration::from_secs(10),
        "successes before the freeze",
    )
    .await
    .unwrap();

    // The SIGSTOP moment: between `stop_before` and `stop_after` (the `kill` command's run).
    let stop_before = Instant::now();
    p1.signal("STOP").unwrap();
    let stop_after = Instant::now();
    let (event, seen) = wait_for_event(&mut events, TTL * 5, |e| e.node().as_str() == "p1")
        .await
        .unwrap();
    let down_after = stop_before.elapsed();
    assert_eq!(
        event,
        MembershipEvent::Down(NodeId::new("p1")),
        "seen before: {seen:?}"
    );
    // The freeze lasts three TTLs from SIGSTOP: the length of the fault, not a wait for a
    // condition.
    tokio::time::sleep_until(stop_before + STARVE).await;
    p1.signal("CONT").unwrap();
    let resumed = Instant::now();
    let (event, seen) = wait_for_event(&mut events, Duration::from_secs(15), |e| {
        e.node().as_str() == "p1"
    })
    .await
    .unwrap();
    let up_after = resumed.elapsed();
    assert!(
        matches!(event, MembershipEvent::Up(_)),
        "{event:?} (before: {seen:?})"
    );
    // About 2 s more of load (the callers' pace does not depend on the asks' outcome).
    let turns_at_resume = *load.turns.borrow();
    wait_count(
        &load.turns,
        turns_at_resume + TURNS_AFTER_RESUME,
        Duration::from_secs(10),
        "callers' turns after SIGCONT",
    )
    .await
    .unwrap();
    load.stop.store(true, Ordering::Release);
    for caller in callers {
        tokio::time::timeout(ask_timeout * 3, caller)
            .await
            .expect("a caller stops within one ask after being told")
            .expect("a caller's task ends");
    }
    let load_took = load_started.elapsed();

    // The node is back and answers: read what it applied.
    let applied = poll_until(
        "ledger-p1 answers again",
        Duration::from_secs(20),
        POLL,
        || {
            let me = &me;
            async move {
                let ledger = me.lookup::<Ledger>("ledger-p1").await?;
                ledger.ask_timeout(Applied, ASK).await
            }
        },
    )
    .await
    .unwrap();
    let lease_after = lease(&endpoint, "zombie", "p1").await;

    let calls = std::mem::take(&mut *load.calls.lock().unwrap_or_else(|p| p.into_inner()));
    let applied_set: BTreeSet<u64> = applied.iter().copied().collect();
    let sent_ids: BTreeSet<u64> = calls.iter().map(|c| c.id).collect();
    let mut applied_twice = Vec::new();
    {
        let mut once = BTreeSet::new();
        for id in &applied {
            if !once.insert(*id) {
                applied_twice.push(*id);
            }
        }
    }
    let unknown: Vec<u64> = applied_set.difference(&sent_ids).copied().collect();
    let succeeded: Vec<&Call> = calls.iter().filter(|c| c.error.is_none()).collect();
    let lost: Vec<u64> = succeeded
        .iter()
        .filter(|c| !applied_set.contains(&c.id))
        .map(|c| c.id)
        .collect();
    let failed: Vec<&Call> = calls.iter().filter(|c| c.error.is_some()).collect();
    let applied_failed: Vec<&&Call> = failed
        .iter()
        .filter(|c| applied_set.contains(&c.id))
        .collect();
    let in_flight: Vec<(u64, Duration)> = applied_failed
        .iter()
        .filter(|c| c.sent < stop_after)
        .map(|c| (c.id, stop_after - c.sent))
        .collect();
    let zombies: Vec<(u64, Duration, String)> = applied_failed
        .iter()
        .filter(|c| c.sent >= stop_after)
        .map(|c| {
            (
                c.id,
                c.sent - stop_after,
                c.error.clone().unwrap_or_default(),
            )
        })
        .collect();
    // Failures by phase and kind.
    let phase = |c: &Call| {
        if c.sent < stop_before {
            "before"
        } else if c.sent < stop_after {
            "at-stop"
        } else if c.sent < resumed {
            "frozen"
        } else {
            "after"
        }
    };
    let mut by_kind: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for c in &failed {
        *by_kind
            .entry((phase(c), c.error.clone().unwrap_or_default()))
            .or_default() += 1;
    }
    let first_errors = load
        .first_errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    eprintln!(
        "[zombie] ask timeout {ask_timeout:?}; load {load_took:?}: {} asks by {CALLERS} callers; p1 declared Down \
         {down_after:?} after SIGSTOP, Up {up_after:?} after SIGCONT; lease {lease_before:x} \
         -> {lease_after:x}",
        calls.len()
    );
    eprintln!(
        "[zombie] successes {}, applied {} ({} distinct), failures {}, applied but failed {} \
         (in flight at SIGSTOP: {in_flight:?}; sent after SIGSTOP: {})",
        succeeded.len(),
        applied.len(),
        applied_set.len(),
        failed.len(),
        applied_failed.len(),
        zombies.len()
    );
    let succeeded_after = succeeded.iter().filter(|c| c.sent >= resumed).count();
    eprintln!(
        "[zombie] successes after SIGCONT {succeeded_after}; look-ups of ledger-p1 after \
         NodeDown: {} ok, failed by kind {:?}",
        load.lookups_ok.load(Ordering::Relaxed),
        load.lookups_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    );
    eprintln!("[zombie] failures by (phase, kind): {by_kind:?}");
    // What p1 says it refused: asks read after their caller's deadline are not started.
    let (late_lines, late_suppressed) = count_lines(&log, LATE_ASK_LINE);
    let sent_after_stop = calls.iter().filter(|c| c.sent >= stop_after).count();
    let failed_after_stop = failed.iter().filter(|c| c.sent >= stop_after).count();
    eprintln!(
        "[zombie] asks sent after SIGSTOP {sent_after_stop} ({failed_after_stop} failed); p1's \
         log: {late_lines} lines (suppressed={late_suppressed}; 10 a second at most, the last \
         window's count is only written with a later line) about asks refused unstarted as \
         read after their caller's deadline; {} lines in all; its other lines: {:?}",
        log.total(),
        log.lines()
            .iter()
            .filter(|l| !l.contains(LATE_ASK_LINE))
            .take(10)
            .collect::<Vec<_>>()
    );
    eprintln!("[zombie] first error of each kind: {first_errors:?}");
    if !zombies.is_empty() {
        eprintln!(
            "[zombie] zombie executions (id, sent after SIGSTOP, caller's error): {:?}",
            &zombies[..zombies.len().min(20)]
        );
    }
    eprintln!("[zombie] test took {:?}", started.elapsed());

    assert!(applied_twice.is_empty(), "applied twice: {applied_twice:?}");
    assert!(unknown.is_empty(), "applied but never sent: {unknown:?}");
    assert!(
        lost.is_empty(),
        "{} asks reported successful were not applied: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        zombies.is_empty(),
        "{} asks sent after SIGSTOP were reported failed to their callers but executed by p1 \
         after it woke (zombie executions; id, sent after SIGSTOP, error): {:?}",
        zombies.len(),
        &zombies[..zombies.len().min(20)]
    );
    assert!(
        in_flight.len() <= CALLERS,
        "{} asks applied though their callers failed, more than the {CALLERS} that can be in \
         flight at the SIGSTOP: {in_flight:?}",
        in_flight.len()
    );
    stop_pair(me, p1).await;
}
