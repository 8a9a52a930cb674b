//! Benchmarks of actormesh against baselines measured in the same run.
//!
//! ```text
//! cargo run --release -p actormesh-examples --bin bench
//! ```
//!
//! 1. Local tell: `ActorRef::tell` against bare actix `Addr::do_send` into the same actor type,
//!    on the same thread.
//! 2. Remote tell between two OS processes on loopback (16-byte payload) against a plain tokio
//!    TCP stream of length-prefixed frames to a child process that only counts them.
//! 3. Remote ask: sequential round trips (p50/p99) against a plain TCP request/response echo,
//!    then 64 concurrent askers against 64 outstanding requests multiplexed on one TCP
//!    connection.
//!
//! The binary re-executes itself as its child processes (`bench serve-actor`, `bench
//! serve-tcp`). Every loop is bounded by a count and a wall-clock limit; the bench prints its
//! figures beside their targets and never fails because of slowness.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Message, MessageResult};
use actormesh::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use actormesh_examples::{
    announce, exit_when_stdin_closes, median, micros, rate, BoxError, ChildProcess,
};

// ---------------------------------------------------------------------------------------------
// Sizes and limits.
// ---------------------------------------------------------------------------------------------

/// Messages per round of the local tell figure.
const LOCAL_MESSAGES: u64 = 2_000_000;
/// Messages per round of the remote tell figure.
const REMOTE_MESSAGES: u64 = 5_000_000;
/// Rounds of each remote throughput figure (actormesh and baseline interleaved); the median
/// is kept.
const ROUNDS: usize = 3;
/// Rounds of the local tell figure (after one discarded warmup round), alternating which side
/// goes first; the median is kept.
const LOCAL_ROUNDS: usize = 5;
/// Sequential round trips measured (after the warmup).
const SEQ_ASKS: usize = 20_000;
/// Sequential round trips before measuring.
const SEQ_WARMUP: usize = 2_000;
/// Concurrent askers.
const ASKERS: usize = 64;
/// Asks per round of the concurrent figure, over all askers.
const CONCURRENT_ASKS: usize = 200_000;
/// Senders yield to the runtime every this many messages, so the link writer (same thread)
/// runs while they produce and the receiving process works in parallel.
const YIELD_EVERY: u64 = 4096;
/// Wall-clock limit of one throughput round (sending and draining).
const ROUND_LIMIT: Duration = Duration::from_secs(20);
/// Wall-clock limit of one latency series.
const SERIES_LIMIT: Duration = Duration::from_secs(20);
/// The TCP baseline writer's buffer.
const TCP_WRITE_BUFFER: usize = 256 * 1024;
/// The TCP baseline reader's buffer.
const TCP_READ_BUFFER: usize = 256 * 1024;

// ---------------------------------------------------------------------------------------------
// The actor and its messages (one actor type serves actix and actormesh).
// ---------------------------------------------------------------------------------------------

/// A 16-byte one-way message.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Hit([u8; 16]);
impl RemoteMessage for Hit {
    const NAME: &'static str = "bench.Hit";
}

/// How many `Hit`s the sink has handled.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Count;
impl RemoteMessage for Count {
    const NAME: &'static str = "bench.Count";
}

/// A 16-byte request answered with the same 16 bytes.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "[u8; 16]")]
struct Ping([u8; 16]);
impl RemoteMessage for Ping {
    const NAME: &'static str = "bench.Ping";
}

/// Counts what it receives and echoes pings.
#[derive(Default)]
struct Sink {
    count: u64,
    checksum: u64,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Hit> for Sink {
    type Result = ();
    fn handle(&mut self, msg: Hit, _: &mut Context<Self>) {
        self.count += 1;
        self.checksum = self.checksum.wrapping_add(u64::from(msg.0[0]));
    }
}

impl Handler<Count> for Sink {
    type Result = u64;
    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> u64 {
        std::hint::black_box(self.checksum);
        self.count
    }
}

impl Handler<Ping> for Sink {
    type Result = MessageResult<Ping>;
    fn handle(&mut self, msg: Ping, _: &mut Context<Self>) -> MessageResult<Ping> {
        MessageResult(msg.0)
    }
}

actormesh::remote_actor!(Sink = "bench.Sink" { Hit, Count, Ping });

fn payload(i: u64) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p[8..].copy_from_slice(&(!i).to_le_bytes());
    p
}

// ---------------------------------------------------------------------------------------------
// Entry point.
// ---------------------------------------------------------------------------------------------

#[actix::main]
async fn main() {
    let role = std::env::args().nth(1).unwrap_or_default();
    let result = match role.as_str() {
        "serve-actor" => serve_actor().await,
        "serve-tcp" => serve_tcp().await,
        "" | "run" => run().await,
        other => Err(format!("unknown role `{other}`; run without arguments").into()),
    };
    if let Err(e) = result {
        eprintln!("bench {role}: error: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Children.
// ---------------------------------------------------------------------------------------------

/// `bench serve-actor`: a node with a `Sink`; prints the sink's reference as hex.
async fn serve_actor() -> Result<(), BoxError> {
    exit_when_stdin_closes();
    let node = Node::builder()
        .cluster("bench")
        .listen("127.0.0.1:0".parse()?)
        .start()
        .await?;
    let sink = node.spawn(Sink::default());
    announce(&hex(&sink.to_bytes()))?;
    std::future::pending::<()>().await;
    Ok(())
}

/// `bench serve-tcp`: a plain TCP server; prints its port. The first byte of a connection
/// chooses the mode: `C` counts length-prefixed frames, `E` echoes them.
async fn serve_tcp() -> Result<(), BoxError> {
    exit_when_stdin_closes();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    announce(&listener.local_addr()?.port().to_string())?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        actix_rt::spawn(async move {
            if let Err(e) = serve_tcp_conn(stream).await {
                eprintln!("serve-tcp: connection failed: {e}");
            }
        });
    }
}

async fn serve_tcp_conn(mut stream: TcpStream) -> Result<(), BoxError> {
    match stream.read_u8().await? {
        b'C' => serve_count(stream).await,
        b'E' => serve_echo(stream).await,
        other => Err(format!("unknown mode byte {other}").into()),
    }
}

/// Splits the complete `[u32 le length][body]` frames at the start of `buf[..filled]`; calls
/// `each` with every whole frame (prefix included) and returns how many bytes they took.
fn frames(buf: &[u8], mut each: impl FnMut(&[u8])) -> Result<usize, BoxError> {
    let mut pos = 0;
    while buf.len() - pos >= 4 {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into()?) as usize;
        if len + 4 > TCP_READ_BUFFER {
            return Err(format!("frame of {len} bytes is too large").into());
        }
        if buf.len() - pos - 4 < len {
            break;
        }
        each(&buf[pos..pos + 4 + len]);
        pos += 4 + len;
    }
    Ok(pos)
}

/// Reads the expected count, then counts frames until it is reached or the stream ends, and
/// answers with the count.
async fn serve_count(mut stream: TcpStream) -> Result<(), BoxError> {
    let expected = stream.read_u64_le().await?;
    let mut buf = vec![0u8; TCP_READ_BUFFER];
    let mut filled = 0;
    let mut count = 0u64;
    let mut checksum = 0u64;
    while count < expected {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
        let used = frames(&buf[..filled], |f| {
            count += 1;
            checksum = checksum.wrapping_add(u64::from(f[4]));
        })?;
        buf.copy_within(used..filled, 0);
        filled -= used;
    }
    std::hint::black_box(checksum);
    stream.write_u64_le(count).await?;
    stream.flush().await?;
    Ok(())
}

/// Echoes every frame; the replies to what one read brought leave in one write.
async fn serve_echo(mut stream: TcpStream) -> Result<(), BoxError> {
    let mut buf = vec![0u8; TCP_READ_BUFFER];
    let mut out = Vec::with_capacity(TCP_READ_BUFFER);
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let used = frames(&buf[..filled], |f| out.extend_from_slice(f))?;
        buf.copy_within(used..filled, 0);
        filled -= used;
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, BoxError> {
    if !text.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(Into::into))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Local tell.
// ---------------------------------------------------------------------------------------------

/// Bare actix: `Addr::do_send` of `n` messages, then a `send` to know all were handled.
async fn local_actix(n: u64) -> Result<f64, BoxError> {
    let addr = Sink::default().start();
    let start = Instant::now();
    for i in 0..n {
        addr.do_send(Hit(payload(i)));
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
    }
    let handled = addr.send(Count).await?;
    let elapsed = start.elapsed();
    if handled != n {
        return Err(format!("actix sink handled {handled} of {n}").into());
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// actormesh: `ActorRef::tell` of `n` messages to a local actor, then an `ask`.
async fn local_actormesh(node: &Node, n: u64) -> Result<f64, BoxError> {
    let sink = node.spawn(Sink::default());
    // Let the actor start (spawned through the node's arbiter).
    sink.ask(Count).await?;
    let start = Instant::now();
    for i in 0..n {
        if let Err(e) = sink.tell(Hit(payload(i))) {
            return Err(e.error.into());
        }
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
    }
    let handled = sink.ask(Count).await?;
    let elapsed = start.elapsed();
    if handled != n {
        return Err(format!("actormesh sink handled {handled} of {n}").into());
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// 2. Remote tell.
// ---------------------------------------------------------------------------------------------

/// One round of a throughput figure.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Messages that reached the receiver.
    done: u64,
    /// From the first send until the receiver had them all.
    elapsed: Duration,
    /// Whether the time limit cut the round short.
    cut: bool,
    /// Sends refused with `MailboxFull` and retried.
    retries: u64,
    /// When the sender had handed over its last message (`None`: not measured).
    sent_after: Option<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }
}

/// actormesh: `n` tells to the sink in the child process, then asks until it counted them.
async fn remote_actormesh(sink: &ActorRef<Sink>, n: u64) -> Result<Run, BoxError> {
    let base = sink.ask(Count).await?;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut retries = 0u64;
    let mut cut = false;
    'send: while sent < n {
        let mut message = Hit(payload(sent));
        loop {
            match sink.tell(message) {
                Ok(()) => break,
                Err(e) if matches!(e.error, Error::MailboxFull { .. }) => {
                    retries += 1;
                    message = e.into_inner();
                    tokio::task::yield_now().await;
                    if retries.is_multiple_of(1024) && start.elapsed() > ROUND_LIMIT {
                        cut = true;
                        break 'send;
                    }
                }
                Err(e) => return Err(e.error.into()),
            }
        }
        sent += 1;
        if sent.is_multiple_of(YIELD_EVERY) {
            tokio::task::yield_now().await;
            if start.elapsed() > ROUND_LIMIT {
                cut = true;
                break;
            }
        }
    }
    // The ask travels on the same link after the tells: its answer counts all that arrived.
    let sent_after = start.elapsed();
    let mut done;
    loop {
        done = sink.ask(Count).await? - base;
        if done >= sent || start.elapsed() > ROUND_LIMIT + Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(Run {
        done,
        elapsed: start.elapsed(),
        cut: cut || done < sent,
        retries,
        sent_after: Some(sent_after),
    })
}

/// Baseline: `n` length-prefixed 16-byte frames over one TCP connection through a big
/// `BufWriter`; the child counts frames and answers with the count.
async fn remote_tcp(port: u16, n: u64) -> Result<Run, BoxError> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (mut reader, writer) = stream.into_split();
    let mut writer = BufWriter::with_capacity(TCP_WRITE_BUFFER, writer);
    writer.write_u8(b'C').await?;
    writer.write_u64_le(n).await?;
    writer.flush().await?;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut cut = false;
    let mut frame = [0u8; 20];
    frame[..4].copy_from_slice(&16u32.to_le_bytes());
    while sent < n {
        frame[4..].copy_from_slice(&payload(sent));
        writer.write_all(&frame).await?;
        sent += 1;
        if sent.is_multiple_of(YIELD_EVERY) && start.elapsed() > ROUND_LIMIT {
            cut = true;
            break;
        }
    }
    writer.flush().await?;
    let sent_after = start.elapsed();
    if cut {
        // The child stops counting at the end of the stream.
        writer.shutdown().await?;
    }
    let done = tokio::time::timeout(ROUND_LIMIT + Duration::from_secs(10), reader.read_u64_le())
        .await
        .map_err(|_| "the TCP counter did not answer")??;
    Ok(Run {
        done,
        elapsed: start.elapsed(),
        cut: cut || done < n,
        retries: 0,
        sent_after: Some(sent_after),
    })
}

// ---------------------------------------------------------------------------------------------
// 3. Remote ask.
// ---------------------------------------------------------------------------------------------

/// Latency percentiles of a series of round trips.
#[derive(Debug, Clone, Copy)]
struct Latency {
    samples: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    cut: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latency(mut samples: Vec<Duration>, cut: bool) -> Latency {
    samples.sort_unstable();
    Latency {
        samples: samples.len(),
        p50: percentile(&samples, 50.0),
        p99: percentile(&samples, 99.0),
        max: samples.last().copied().unwrap_or_default(),
        cut,
    }
}

/// actormesh: sequential asks to the child's sink.
async fn seq_actormesh(sink: &ActorRef<Sink>) -> Result<Latency, BoxError> {
    let mut samples = Vec::with_capacity(SEQ_ASKS);
    let start = Instant::now();
    let mut cut = false;
    for i in 0..(SEQ_WARMUP + SEQ_ASKS) {
        if start.elapsed() > SERIES_LIMIT {
            cut = true;
            break;
        }
        let p = payload(i as u64);
        let t = Instant::now();
        let answer = sink.ask(Ping(p)).await?;
        let rtt = t.elapsed();
        if answer != p {
            return Err("the sink echoed something else".into());
        }
        if i >= SEQ_WARMUP {
            samples.push(rtt);
        }
    }
    Ok(latency(samples, cut))
}

/// A request or reply frame of the TCP echo baseline: `[u32 len = 24][u64 id][16 bytes]`.
fn echo_frame(id: u64) -> [u8; 28] {
    let mut f = [0u8; 28];
    f[..4].copy_from_slice(&24u32.to_le_bytes());
    f[4..12].copy_from_slice(&id.to_le_bytes());
    f[12..].copy_from_slice(&payload(id));
    f
}

async fn connect_echo(port: u16) -> Result<TcpStream, BoxError> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    stream.write_u8(b'E').await?;
    Ok(stream)
}

/// Baseline: sequential request/response round trips to the child's TCP echo.
async fn seq_tcp(port: u16) -> Result<Latency, BoxError> {
    let mut stream = connect_echo(port).await?;
    let mut samples = Vec::with_capacity(SEQ_ASKS);
    let mut reply = [0u8; 28];
    let start = Instant::now();
    let mut cut = false;
    for i in 0..(SEQ_WARMUP + SEQ_ASKS) {
        if start.elapsed() > SERIES_LIMIT {
            cut = true;
            break;
        }
        let request = echo_frame(i as u64);
        let t = Instant::now();
        stream.write_all(&request).await?;
        stream.read_exact(&mut reply).await?;
        let rtt = t.elapsed();
        if reply != request {
            return Err("the TCP echo answered something else".into());
        }
        if i >= SEQ_WARMUP {
            samples.push(rtt);
        }
    }
    Ok(latency(samples, cut))
}

/// actormesh: `ASKERS` tasks, each asking in turn, `total` asks in all.
async fn concurrent_actormesh(sink: &ActorRef<Sink>, total: usize) -> Result<Run, BoxError> {
    let per_task = total / ASKERS;
    let start = Instant::now();
    let tasks: Vec<_> = (0..ASKERS)
        .map(|t| {
            let sink = sink.clone();
            actix_rt::spawn(async move {
                let mut done = 0u64;
                for i in 0..per_task {
                    if i % 64 == 0 && start.elapsed() > ROUND_LIMIT {
                        break;
                    }
                    let p = payload((t * per_task + i) as u64);
                    let answer = sink.ask(Ping(p)).await?;
                    if answer != p {
                        return Err(Error::Codec("the sink echoed something else".into()));
                    }
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        done += task.await??;
    }
    Ok(Run {
        done,
        elapsed: start.elapsed(),
        cut: done < (per_task * ASKERS) as u64,
        retries: 0,
        sent_after: None,
    })
}

/// Baseline: `ASKERS` tasks with one request outstanding each, multiplexed on one TCP
/// connection: a writer task batching requests, a reader task matching replies by id.
async fn concurrent_tcp(port: u16, total: usize) -> Result<Run, BoxError> {
    type Pending = Rc<RefCell<HashMap<u64, tokio::sync::oneshot::Sender<[u8; 28]>>>>;
    let per_task = total / ASKERS;
    let stream = connect_echo(port).await?;
    let (mut reader, writer) = stream.into_split();
    let pending: Pending = Rc::new(RefCell::new(HashMap::with_capacity(ASKERS * 2)));
    let (requests, mut queue) = tokio::sync::mpsc::unbounded_channel::<[u8; 28]>();

    let writer_task = actix_rt::spawn(async move {
        let mut writer = BufWriter::with_capacity(TCP_WRITE_BUFFER, writer);
        while let Some(frame) = queue.recv().await {
            writer.write_all(&frame).await?;
            while let Ok(frame) = queue.try_recv() {
                writer.write_all(&frame).await?;
            }
            writer.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let replies = pending.clone();
    let reader_task = actix_rt::spawn(async move {
        let mut buf = vec![0u8; TCP_READ_BUFFER];
        let mut filled = 0;
        loop {
            let n = reader.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Ok::<_, BoxError>(());
            }
            filled += n;
            let mut table = replies.borrow_mut();
            let used = frames(&buf[..filled], |f| {
                let id = u64::from_le_bytes(f[4..12].try_into().unwrap_or_default());
                if let Some(tx) = table.remove(&id) {
                    let mut reply = [0u8; 28];
                    reply.copy_from_slice(f);
                    let _ = tx.send(reply);
                }
            })?;
            drop(table);
            buf.copy_within(used..filled, 0);
            filled -= used;
        }
    });

    let start = Instant::now();
    let tasks: Vec<_> = (0..ASKERS)
        .map(|t| {
            let pending = pending.clone();
            let requests = requests.clone();
            actix_rt::spawn(async move {
                let mut done = 0u64;
                for i in 0..per_task {
                    if i % 64 == 0 && start.elapsed() > ROUND_LIMIT {
                        break;
                    }
                    let id = (t * per_task + i) as u64;
                    let request = echo_frame(id);
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    pending.borrow_mut().insert(id, tx);
                    if requests.send(request).is_err() {
                        return Err("the TCP writer stopped");
                    }
                    match tokio::time::timeout(Duration::from_secs(5), rx).await {
                        Ok(Ok(reply)) if reply == request => done += 1,
                        Ok(Ok(_)) => return Err("the TCP echo answered something else"),
                        _ => return Err("no TCP echo reply within 5 s"),
                    }
                }
                Ok(done)
            })
        })
        .collect();
    drop(requests);
    let mut done = 0;
    for task in tasks {
        done += task.await??;
    }
    let elapsed = start.elapsed();
    // All askers are done: the writer ends with the queue, the reader with the connection.
    writer_task.await??;
    reader_task.abort();
    Ok(Run {
        done,
        elapsed,
        cut: done < (per_task * ASKERS) as u64,
        retries: 0,
        sent_after: None,
    })
}

// ---------------------------------------------------------------------------------------------
// The parent: run everything and print the table.
// ---------------------------------------------------------------------------------------------

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".to_owned());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned());
    format!("nproc {nproc}, kernel {kernel} (uname -r), cpu {cpu}, load average {load} at start")
}

/// Clock ticks per second of /proc CPU times.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU time of a process so far (`None`: this process), from /proc (Linux).
fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name: state is the first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks()))
}

/// CPU use of this process and of one child over a stretch of wall-clock time.
struct CpuMeter {
    child: Option<u32>,
    wall: Instant,
    parent_cpu: Option<Duration>,
    child_cpu: Option<Duration>,
}

impl CpuMeter {
    fn start(child: Option<u32>) -> Self {
        CpuMeter {
            child,
            wall: Instant::now(),
            parent_cpu: cpu_time(None),
            child_cpu: child.and_then(|p| cpu_time(Some(p))),
        }
    }

    /// `cpu parent P% child C%` since the start (of one core; 10 ms resolution).
    fn report(&self) -> String {
        let wall = self.wall.elapsed().as_secs_f64();
        let pct = |before: Option<Duration>, now: Option<Duration>| match (before, now) {
            (Some(b), Some(n)) => format!("{:.0}%", (n - b).as_secs_f64() / wall * 100.0),
            _ => "?".to_owned(),
        };
        format!(
            "cpu parent {} child {}",
            pct(self.parent_cpu, cpu_time(None)),
            pct(self.child_cpu, self.child.and_then(|p| cpu_time(Some(p))))
        )
    }
}

fn note(run: &Run) -> String {
    let mut n = String::new();
    if run.cut {
        n.push_str(" [time limit: partial]");
    }
    if let Some(sent) = run.sent_after {
        n.push_str(&format!(" [last send at {:.2} s]", sent.as_secs_f64()));
    }
    if run.retries > 0 {
        n.push_str(&format!(" [{} MailboxFull retries]", run.retries));
    }
    n
}

/// One row of the final table.
struct Row {
    figure: &'static str,
    actormesh: String,
    baseline: String,
    ratio: String,
    target: &'static str,
    met: bool,
}

async fn run() -> Result<(), BoxError> {
    println!("actormesh bench");
    println!("machine: {}", machine());
    println!(
        "build: {}",
        if cfg!(debug_assertions) {
            "DEBUG (numbers meaningless; use --release)"
        } else {
            "release"
        }
    );
    println!();
    let node = Node::builder()
        .cluster("bench")
        .listen("127.0.0.1:0".parse()?)
        .start()
        .await?;
    let mut rows = Vec::new();

    // 1. Local tell.
    println!("1. local tell, {LOCAL_MESSAGES} messages per round, same thread (median of {LOCAL_ROUNDS})");
    let (mut bare, mut mesh) = (Vec::new(), Vec::new());
    let b = local_actix(LOCAL_MESSAGES).await?;
    let m = local_actormesh(&node, LOCAL_MESSAGES).await?;
    println!(
        "   warmup:  actix Addr::do_send {:>12}   ActorRef::tell {:>12}   (discarded)",
        rate(b),
        rate(m)
    );
    for round in 1..=LOCAL_ROUNDS {
        let (b, m) = if round % 2 == 1 {
            let b = local_actix(LOCAL_MESSAGES).await?;
            (b, local_actormesh(&node, LOCAL_MESSAGES).await?)
        } else {
            let m = local_actormesh(&node, LOCAL_MESSAGES).await?;
            (local_actix(LOCAL_MESSAGES).await?, m)
        };
        println!(
            "   round {round}: actix Addr::do_send {:>12}   ActorRef::tell {:>12}",
            rate(b),
            rate(m)
        );
        bare.push(b);
        mesh.push(m);
    }
    let (b, m) = (median(bare), median(mesh));
    let overhead = (b / m - 1.0) * 100.0;
    println!(
        "   median: actix {}  actormesh {}  overhead {overhead:+.1}% (time per message)",
        rate(b),
        rate(m)
    );
    rows.push(Row {
        figure: "local tell (msgs/s)",
        actormesh: rate(m),
        baseline: rate(b),
        ratio: format!("overhead {overhead:+.1}%"),
        target: "overhead <= 10%",
        met: overhead <= 10.0,
    });
    println!();

    // The two child processes.
    let actor_child = ChildProcess::start(&["serve-actor"]).await?;
    let tcp_child = ChildProcess::start(&["serve-tcp"]).await?;
    let sink = node.actor_ref_from_bytes::<Sink>(&unhex(&actor_child.line)?)?;
    let port: u16 = tcp_child.line.parse()?;
    // Establish the link.
    let warm = Instant::now();
    sink.ask(Count).await?;
    println!(
        "children: serve-actor pid {:?} (sink {:?}, first ask {}), serve-tcp pid {:?} (port {port})",
        actor_child.child.id(),
        sink,
        micros(warm.elapsed()),
        tcp_child.child.id()
    );
    println!();

    // 2. Remote tell.
    println!(
        "2. remote tell, 16-byte payload, {REMOTE_MESSAGES} messages per round, two processes on loopback (median of {ROUNDS})"
    );
    let (mut mesh, mut tcp) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let cpu = CpuMeter::start(actor_child.child.id());
        let m = remote_actormesh(&sink, REMOTE_MESSAGES).await?;
        let m_cpu = cpu.report();
        let cpu = CpuMeter::start(tcp_child.child.id());
        let t = remote_tcp(port, REMOTE_MESSAGES).await?;
        let t_cpu = cpu.report();
        println!(
            "   round {round}: actormesh {:>10} ({} msgs in {:.2} s; {m_cpu}){}",
            rate(m.rate()),
            m.done,
            m.elapsed.as_secs_f64(),
            note(&m),
        );
        println!(
            "            plain TCP {:>10} ({} msgs in {:.2} s; {t_cpu}){}",
            rate(t.rate()),
            t.done,
            t.elapsed.as_secs_f64(),
            note(&t)
        );
        mesh.push(m.rate());
        tcp.push(t.rate());
    }
    let (m, t) = (median(mesh), median(tcp));
    println!(
        "   median: actormesh {}  plain TCP {}  ratio {:.1}%",
        rate(m),
        rate(t),
        m / t * 100.0
    );
    rows.push(Row {
        figure: "remote tell 16 B (msgs/s)",
        actormesh: rate(m),
        baseline: rate(t),
        ratio: format!("{:.1}% of TCP", m / t * 100.0),
        target: ">= 2.00 M/s",
        met: m >= 2_000_000.0,
    });
    println!();

    // 3a. Sequential asks.
    println!("3a. remote ask, sequential, {SEQ_ASKS} round trips after {SEQ_WARMUP} warmup");
    let m = seq_actormesh(&sink).await?;
    let t = seq_tcp(port).await?;
    for (name, l) in [("actormesh ask", &m), ("plain TCP echo", &t)] {
        println!(
            "   {name:<15} p50 {:>9}  p99 {:>9}  max {:>9}  ({} samples){}",
            micros(l.p50),
            micros(l.p99),
            micros(l.max),
            l.samples,
            if l.cut { " [time limit: partial]" } else { "" }
        );
    }
    let p50_ratio = m.p50.as_secs_f64() / t.p50.as_secs_f64();
    let p99_ratio = m.p99.as_secs_f64() / t.p99.as_secs_f64();
    println!("   ratio p50 {p50_ratio:.2}x  p99 {p99_ratio:.2}x");
    rows.push(Row {
        figure: "remote ask p50 (sequential)",
        actormesh: micros(m.p50),
        baseline: micros(t.p50),
        ratio: format!("{p50_ratio:.2}x"),
        target: "<= 1.3x",
        met: p50_ratio <= 1.3,
    });
    rows.push(Row {
        figure: "remote ask p99 (sequential)",
        actormesh: micros(m.p99),
        baseline: micros(t.p99),
        ratio: format!("{p99_ratio:.2}x"),
        target: "(reported)",
        met: true,
    });
    println!();

    // 3b. Concurrent asks.
    println!("3b. remote ask, {ASKERS} concurrent askers, {CONCURRENT_ASKS} asks per round (median of {ROUNDS})");
    let (mut mesh, mut tcp) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let cpu = CpuMeter::start(actor_child.child.id());
        let m = concurrent_actormesh(&sink, CONCURRENT_ASKS).await?;
        let m_cpu = cpu.report();
        let cpu = CpuMeter::start(tcp_child.child.id());
        let t = concurrent_tcp(port, CONCURRENT_ASKS).await?;
        let t_cpu = cpu.report();
        println!(
            "   round {round}: actormesh {:>10} ({} asks in {:.2} s; {m_cpu}){}",
            rate(m.rate()),
            m.done,
            m.elapsed.as_secs_f64(),
            note(&m),
        );
        println!(
            "            plain TCP {:>10} ({} asks in {:.2} s; {t_cpu}){}",
            rate(t.rate()),
            t.done,
            t.elapsed.as_secs_f64(),
            note(&t)
        );
        mesh.push(m.rate());
        tcp.push(t.rate());
    }
    let (m, t) = (median(mesh), median(tcp));
    println!(
        "   median: actormesh {}  plain TCP {}  ratio {:.1}%",
        rate(m),
        rate(t),
        m / t * 100.0
    );
    rows.push(Row {
        figure: "remote ask x64 (asks/s)",
        actormesh: rate(m),
        baseline: rate(t),
        ratio: format!("{:.1}% of TCP", m / t * 100.0),
        target: ">= 50% of TCP",
        met: m / t >= 0.5,
    });
    println!();

    let stats = node.stats();
    println!(
        "parent node drop counters: total {} (queue_full {}: counts refused tells that were retried)",
        stats.dropped_total(),
        stats.dropped(actormesh::DropReason::QueueFull)
    );
    println!();

    // The table.
    println!(
        "{:<29} | {:>12} | {:>12} | {:>17} | {:<16} | met",
        "figure", "actormesh", "baseline", "ratio", "target"
    );
    println!("{}", "-".repeat(29 + 12 + 12 + 17 + 16 + 4 + 5 * 3));
    for r in &rows {
        println!(
            "{:<29} | {:>12} | {:>12} | {:>17} | {:<16} | {}",
            r.figure,
            r.actormesh,
            r.baseline,
            r.ratio,
            r.target,
            if r.target == "(reported)" {
                "-"
            } else if r.met {
                "yes"
            } else {
                "NO"
            }
        );
    }
    println!("baselines: local = bare actix Addr::do_send; remote = plain tokio TCP to a child process (same run)");

    actor_child.stop().await;
    tcp_child.stop().await;
    tokio::time::timeout(Duration::from_secs(10), node.shutdown())
        .await
        .map_err(|_| "the node did not shut down within 10 s")?;
    Ok(())
}
