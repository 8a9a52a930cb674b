//! Shared pieces of the actormesh examples and benchmarks: child processes that announce
//! themselves, percentiles, durations printed the same way everywhere, and the benchmarks'
//! sink actor ([`sink`]).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The actor the benchmarks send to: it counts [`Hit`](sink::Hit)s, says how many it
/// counted ([`Count`](sink::Count)) and answers a [`Ping`](sink::Ping) with its number.
pub mod sink {
    use actix::{Actor, Context, Handler};
    use actormesh::RemoteMessage;
    use serde::{Deserialize, Serialize};

    /// One tell of a throughput figure (a 16-byte payload).
    #[derive(Debug, Clone, RemoteMessage, Serialize, Deserialize)]
    #[remote(name = "bench.Hit", result = "()")]
    pub struct Hit(pub [u8; 16]);

    /// How many hits the sink has counted.
    #[derive(Debug, Clone, RemoteMessage, Serialize, Deserialize)]
    #[remote(name = "bench.Count", result = "u64")]
    pub struct Count;

    /// A round trip: answered with its number.
    #[derive(Debug, Clone, RemoteMessage, Serialize, Deserialize)]
    #[remote(name = "bench.Ping", result = "u64")]
    pub struct Ping(pub u64);

    /// Counts hits.
    #[derive(Debug, Default)]
    pub struct Sink {
        hits: u64,
    }

    impl Actor for Sink {
        type Context = Context<Self>;
    }

    impl Handler<Hit> for Sink {
        type Result = ();
        fn handle(&mut self, _: Hit, _: &mut Context<Self>) {
            self.hits += 1;
        }
    }

    impl Handler<Count> for Sink {
        type Result = u64;
        fn handle(&mut self, _: Count, _: &mut Context<Self>) -> u64 {
            self.hits
        }
    }

    impl Handler<Ping> for Sink {
        type Result = u64;
        fn handle(&mut self, msg: Ping, _: &mut Context<Self>) -> u64 {
            msg.0
        }
    }

    actormesh::remote_actor!(Sink = "bench.Sink" { Hit, Count, Ping });
}

/// The error type of the example binaries.
pub type BoxError = Box<dyn std::error::Error>;

/// This binary run again as a child process with `args`, once it has printed its first line.
#[derive(Debug)]
pub struct ChildProcess {
    /// The process (killed when dropped).
    pub child: Child,
    stdin: Option<ChildStdin>,
    _stdout: BufReader<ChildStdout>,
    /// The first line it printed (its announcement: an address, a reference, `READY`…).
    pub line: String,
}

impl ChildProcess {
    /// Starts the current executable with `args` and waits (up to 20 s) for its first line.
    pub async fn start(args: &[&str]) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), stdout.read_line(&mut line))
            .await
            .map_err(|_| format!("child {args:?} did not announce itself within 20 s"))??;
        let line = line.trim().to_owned();
        if line.is_empty() {
            return Err(format!("child {args:?} exited without announcing itself").into());
        }
        Ok(ChildProcess {
            child,
            stdin,
            _stdout: stdout,
            line,
        })
    }

    /// Like [`ChildProcess::start`], and checks that the announcement is `READY`.
    pub async fn ready(args: &[&str]) -> Result<Self, BoxError> {
        let child = Self::start(args).await?;
        if child.line != "READY" {
            return Err(
                format!("unexpected first line from child {args:?}: {}", child.line).into(),
            );
        }
        Ok(child)
    }

    /// Closes its stdin (it exits), waits up to 2 s, then kills it.
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(2), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// In a child process: exits when its stdin closes (the parent ended or let it go).
pub fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        use std::io::Read;
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}

/// In a child process: prints its announcement line (see [`ChildProcess::start`]).
pub fn announce(line: &str) -> Result<(), BoxError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// The `p`-th percentile (0–100) of sorted samples, by rounded rank; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A duration as milliseconds, right-aligned: `  1234.5 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:8.1} ms", d.as_secs_f64() * 1000.0)
}

/// The median of `values` (the upper one of an even count); zero when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A rate per second: `2.55 M/s` or `197.5 k/s`.
pub fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.1} k/s", r / 1e3)
    }
}

/// A duration as microseconds: `194.7 us`.
pub fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_rounded_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(51));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        assert_eq!(ms(Duration::from_micros(1500)), "     1.5 ms");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(rate(2_550_000.0), "2.55 M/s");
        assert_eq!(rate(197_500.0), "197.5 k/s");
        assert_eq!(micros(Duration::from_nanos(194_700)), "194.7 us");
    }
}
