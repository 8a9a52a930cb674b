//! Seeded, deterministic fuzzing of the frame decoder (`Envelopes`, the header decode and
//! `decode_payload`), through `actormesh::__fuzz`.
//!
//! Inputs are random bytes and mutations of valid frames (the encoder's frames of every header
//! variant, and the committed corpus in `fuzz-corpus/`): bit flips, truncation, corrupt and huge
//! length prefixes, huge length claims inside headers, splices of two frames, byte edits. Each
//! input is made from its own 64-bit seed, so a finding replays with `FUZZ_REPLAY=<seed>`.
//!
//! Properties, per input: no panic (each decode runs under `catch_unwind`); the envelope
//! iterator ends within `len + 1` steps; the peak allocation of a decode stays under the hard
//! bound (the bincode limit plus slack: a 4 GiB length claim never allocates 4 GiB) and under
//! the proportional bound `AMPLIFICATION * len + SLACK`. The global allocator of this binary
//! counts bytes (`peak_alloc`), so this is a test binary of its own and its tests run one at a
//! time.
//!
//! - fast: `cargo test -p actormesh --test fuzz_wire` (20,000 inputs);
//! - long: `cargo test --release -p actormesh --test fuzz_wire -- --ignored --nocapture`
//!   (1,000,000 inputs; `FUZZ_INPUTS` and `FUZZ_SEED` override).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Instant;

use actormesh::__fuzz::{decode_frame, round_trip, seed_frames, FrameOutcome, Rng, DECODE_LIMIT};
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// The allocation counter is process-wide: one fuzz run at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Allowed bytes per input byte above `SLACK`: the decode limit is at most 64 times the input
/// (the smallest of 1, 4, 16, 64 MiB at least 16 times it).
const AMPLIFICATION: usize = 64;
/// Constant allowance: the 1 MiB floor of the decode limit, and serde's cautious preallocation
/// of a sequence or map (at most 1 MiB of elements; a hash map's table rounds it up to ~1.6 MiB).
const SLACK: usize = 4 * 1024 * 1024;
/// Largest generated input.
const MAX_INPUT: usize = 256 * 1024;
/// Examples kept per finding class.
const EXAMPLES: usize = 3;

/// The seed of input `i` of a run seeded `seed`.
fn input_seed(seed: u64, i: u64) -> u64 {
    Rng(seed ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03)).next()
}

/// The encoder's seed frames, then the committed corpus (sorted by file name).
fn corpus() -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = seed_frames().into_iter().map(|(_, f)| f).collect();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz-corpus");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("fuzz-corpus/ exists")
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    frames.extend(files.iter().map(|p| std::fs::read(p).expect("corpus file")));
    frames
}

/// Where each envelope of `frame` starts, by its length prefixes (bounded walk).
fn envelope_starts(frame: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut pos = 0;
    for _ in 0..=frame.len() / 4 {
        if frame.len() - pos < 4 {
            break;
        }
        starts.push(pos);
        let len = u32::from_le_bytes(frame[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        match pos.checked_add(4 + len) {
            Some(next) if next <= frame.len() => pos = next,
            _ => break,
        }
    }
    starts
}

/// A bincode varint claiming a large length (a string, byte vector or sequence length).
fn huge_varint(rng: &mut Rng) -> Vec<u8> {
    let claims32: [u32; 8] = [
        1 << 16,
        1 << 20,
        (1 << 26) - 16,
        1 << 26,
        (1 << 26) + 1,
        1 << 31,
        u32::MAX,
        rng.next() as u32,
    ];
    let claims64: [u64; 4] = [1 << 32, 1 << 60, u64::MAX, rng.next()];
    match rng.below(3) {
        0 => [&[251u8][..], &(rng.next() as u16 | 0x8000).to_le_bytes()].concat(),
        1 => [&[252u8][..], &rng.pick(&claims32).to_le_bytes()].concat(),
        _ => [&[253u8][..], &rng.pick(&claims64).to_le_bytes()].concat(),
    }
}

/// One mutation of `frame`.
fn mutate_once(rng: &mut Rng, frame: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    const INTERESTING: [u8; 10] = [0, 1, 0x7f, 0x80, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff];
    match rng.below(7) {
        // bit flips
        0 => {
            for _ in 0..1 + rng.below(8) {
                if !frame.is_empty() {
                    let at = rng.below(frame.len());
                    frame[at] ^= 1 << rng.below(8);
                }
            }
        }
        // truncation, at the end or the front
        1 => {
            let at = rng.below(frame.len() + 1);
            if rng.below(4) == 0 {
                frame.drain(..at);
            } else {
                frame.truncate(at);
            }
        }
        // a length prefix rewritten
        2 => {
            let starts = envelope_starts(frame);
            if let Some(&at) = starts.get(rng.below(starts.len())) {
                let real = u32::from_le_bytes(frame[at..at + 4].try_into().expect("4 bytes"));
                let rest = (frame.len() - at - 4) as u32;
                let values = [
                    0,
                    1,
                    2,
                    3,
                    real.wrapping_sub(1),
                    real.wrapping_add(1),
                    real.wrapping_mul(2),
                    rest,
                    rest.wrapping_add(1),
                    1 << 26,
                    1 << 31,
                    u32::MAX,
                    rng.next() as u32,
                ];
                frame[at..at + 4].copy_from_slice(&rng.pick(&values).to_le_bytes());
            }
        }
        // a huge length claim inside an envelope, its prefix kept consistent
        3 => {
            let starts = envelope_starts(frame);
            if let Some(&at) = starts.get(rng.below(starts.len())) {
                let body = at + 4;
                let claimed = u32::from_le_bytes(frame[at..body].try_into().expect("4 bytes"));
                let len = (claimed as usize).min(frame.len() - body);
                let end = body + len;
                let pos = body + rng.below(len + 1);
                let claim = huge_varint(rng);
                let cut = rng.below(claim.len().min(end - pos) + 1);
                frame.splice(pos..pos + cut, claim.iter().copied());
                let new_len = len - cut + claim.len();
                frame[at..at + 4].copy_from_slice(&(new_len as u32).to_le_bytes());
            }
        }
        // splice with another frame
        4 => {
            let other = rng.pick(corpus);
            let keep = rng.below(frame.len() + 1);
            let from = rng.below(other.len() + 1);
            frame.truncate(keep);
            frame.extend_from_slice(&other[from..]);
        }
        // concatenate another frame (two valid frames make a valid one)
        5 => {
            let other: &Vec<u8> = rng.pick(corpus);
            frame.extend_from_slice(other);
        }
        // byte edits
        _ => {
            let at = rng.below(frame.len() + 1);
            let run: Vec<u8> = (0..1 + rng.below(8))
                .map(|_| *rng.pick(&INTERESTING))
                .collect();
            match rng.below(3) {
                0 => {
                    frame.splice(at..at, run);
                }
                1 => {
                    let end = (at + run.len()).min(frame.len());
                    frame.drain(at..end);
                }
                _ => {
                    let end = (at + run.len()).min(frame.len());
                    frame.splice(at..end, run);
                }
            }
        }
    }
    frame.truncate(MAX_INPUT);
}

/// The input made from `seed`, and what kind of input it is.
fn make_input(seed: u64, corpus: &[Vec<u8>]) -> (&'static str, Vec<u8>) {
    let mut rng = Rng(seed);
    match rng.below(10) {
        0 => {
            let len = if rng.below(8) == 0 {
                rng.below(4096)
            } else {
                rng.below(64)
            };
            ("random", rng.bytes(len))
        }
        1 => {
            // a consistent length prefix over random header bytes
            let n = rng.below(48);
            let body = rng.bytes(n);
            let mut frame = (body.len() as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(&body);
            ("random-envelope", frame)
        }
        2 => ("corpus", rng.pick(corpus).clone()),
        n => {
            let mut frame = rng.pick(corpus).clone();
            let rounds = if n >= 8 { 2 + rng.below(3) } else { 1 };
            for _ in 0..rounds {
                mutate_once(&mut rng, &mut frame, corpus);
            }
            (if rounds > 1 { "stacked" } else { "mutated" }, frame)
        }
    }
}

/// Runs one decode under `catch_unwind`; its outcome (or panic) and peak allocation.
fn measured(input: &[u8], payloads: bool) -> (Result<FrameOutcome, String>, usize) {
    ALLOC.reset_peak_usage();
    let before = ALLOC.current_usage();
    let result = catch_unwind(AssertUnwindSafe(|| decode_frame(input, payloads)));
    let peak = ALLOC.peak_usage().saturating_sub(before);
    let result = result.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into())
    });
    (result, peak)
}

/// A property that failed for one input.
#[derive(Debug)]
struct Finding {
    class: &'static str,
    seed: u64,
    detail: String,
    input: Vec<u8>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.input[..self.input.len().min(512)];
        let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
        let more = if self.input.len() > shown.len() {
            format!(
                "… ({} bytes; FUZZ_REPLAY={:#x} prints all)",
                self.input.len(),
                self.seed
            )
        } else {
            String::new()
        };
        write!(
            f,
            "[{}] seed {:#018x}: {}\n    input {}{}",
            self.class, self.seed, self.detail, hex, more
        )
    }
}

/// Checks every property for one input; returns its peak allocations (headers only, all).
fn check(seed: u64, input: &[u8], findings: &mut Vec<Finding>) -> (usize, usize) {
    let mut found = |class, detail: String| {
        findings.push(Finding {
            class,
            seed,
            detail,
            input: input.to_vec(),
        })
    };
    let len = input.len();
    let proportional = AMPLIFICATION * len + SLACK;
    let hard = DECODE_LIMIT + SLACK + 2 * len;
    let mut peaks = [0; 2];
    let mut header_amplified = false;
    for (i, payloads) in [false, true].into_iter().enumerate() {
        let (result, peak) = measured(input, payloads);
        peaks[i] = peak;
        let what = if payloads { "payload" } else { "header" };
        match result {
            Err(message) => found("panic", format!("{what} decode panicked: {message}")),
            Ok(out) => {
                if out.unterminated || out.items > len + 1 {
                    found(
                        "hang",
                        format!(
                            "{} items from {len} bytes, unterminated: {}",
                            out.items, out.unterminated
                        ),
                    );
                }
                if out.items != out.headers + out.truncated + out.bad_headers {
                    found("count", format!("{out:?}"));
                }
            }
        }
        if peak > hard {
            found(
                "alloc-hard",
                format!("{what} decode of {len} bytes allocated {peak} bytes at its peak"),
            );
        } else if peak > proportional && !header_amplified {
            header_amplified = !payloads;
            found(
                if payloads {
                    "alloc-amplified-payload"
                } else {
                    "alloc-amplified-header"
                },
                format!(
                    "{what} decode of {len} bytes allocated {peak} bytes at its peak (bound {proportional})"
                ),
            );
        }
    }
    (peaks[0], peaks[1])
}

/// What a run saw.
#[derive(Debug, Default)]
struct Report {
    inputs: u64,
    bytes: u64,
    secs: f64,
    kinds: std::collections::BTreeMap<&'static str, u64>,
    max_peak: (usize, u64, usize),
    /// The slowest input: seconds, seed, length.
    slowest: (f64, u64, usize),
    sum_peak: u128,
    over_1mib: u64,
    decoded_headers: u64,
    findings: std::collections::BTreeMap<&'static str, (u64, Vec<Finding>)>,
}

impl Report {
    fn print(&self) {
        println!(
            "wire fuzz: {} inputs ({} MiB) in {:.1} s, {:.0} inputs/s",
            self.inputs,
            self.bytes >> 20,
            self.secs,
            self.inputs as f64 / self.secs
        );
        println!("  kinds: {:?}", self.kinds);
        println!("  headers decoded: {}", self.decoded_headers);
        let (peak, seed, len) = self.max_peak;
        println!(
            "  peak allocation per input: mean {} B, max {} B (seed {seed:#018x}, {len} input bytes), {} inputs above 1 MiB",
            self.sum_peak / u128::from(self.inputs.max(1)),
            peak,
            self.over_1mib
        );
        let (took, seed, len) = self.slowest;
        println!(
            "  slowest input: {:.1} ms (seed {seed:#018x}, {len} bytes, both decodes)",
            took * 1e3
        );
        if self.findings.is_empty() {
            println!("  findings: none");
        }
        for (class, (count, examples)) in &self.findings {
            println!("  findings [{class}]: {count}");
            for f in examples {
                println!("  {f}");
            }
        }
    }

    fn hard_findings(&self) -> u64 {
        self.findings
            .iter()
            .filter(|(c, _)| !c.starts_with("alloc-amplified"))
            .map(|(_, (n, _))| n)
            .sum()
    }
}

fn run(seed: u64, inputs: u64) -> Report {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let corpus = corpus();
    let mut report = Report::default();
    let start = Instant::now();
    let mut findings = Vec::new();
    for i in 0..inputs {
        let seed = input_seed(seed, i);
        let (kind, input) = make_input(seed, &corpus);
        *report.kinds.entry(kind).or_default() += 1;
        let began = Instant::now();
        let (_, peak) = check(seed, &input, &mut findings);
        let took = began.elapsed().as_secs_f64();
        if took > report.slowest.0 {
            report.slowest = (took, seed, input.len());
        }
        report.decoded_headers += decode_frame(&input, false).headers as u64;
        report.inputs += 1;
        report.bytes += input.len() as u64;
        report.sum_peak += peak as u128;
        if peak > 1 << 20 {
            report.over_1mib += 1;
        }
        if peak > report.max_peak.0 {
            report.max_peak = (peak, seed, input.len());
        }
        for f in findings.drain(..) {
            let (count, examples) = report.findings.entry(f.class).or_default();
            *count += 1;
            if examples.len() < EXAMPLES {
                examples.push(f);
            }
        }
    }
    report.secs = start.elapsed().as_secs_f64();
    report
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| {
            let v = v.trim();
            v.strip_prefix("0x")
                .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or(default)
}

fn assert_clean(report: &Report) {
    report.print();
    assert_eq!(report.hard_findings(), 0, "fuzz findings, see above");
    if std::env::var_os("FUZZ_STRICT").is_some() {
        assert!(report.findings.is_empty(), "fuzz findings, see above");
    }
}

#[test]
fn fuzz_fast() {
    let report = run(env_u64("FUZZ_SEED", 0x5eed_f00d), 20_000);
    assert_clean(&report);
    assert!(
        report.decoded_headers > 1_000,
        "the mutations reach the decoder"
    );
}

#[test]
#[ignore = "long fuzz run: cargo test --release -p actormesh --test fuzz_wire -- --ignored --nocapture"]
fn fuzz_long() {
    let report = run(
        env_u64("FUZZ_SEED", 0x5eed_1000),
        env_u64("FUZZ_INPUTS", 1_000_000),
    );
    assert_clean(&report);
}

/// `FUZZ_REPLAY=<input seed> cargo test -p actormesh --test fuzz_wire replay -- --nocapture`
#[test]
fn replay() {
    let Some(seed) = std::env::var_os("FUZZ_REPLAY").map(|_| env_u64("FUZZ_REPLAY", 0)) else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (kind, input) = make_input(seed, &corpus());
    let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
    println!("seed {seed:#018x} ({kind}, {} bytes): {hex}", input.len());
    let mut findings = Vec::new();
    let peaks = check(seed, &input, &mut findings);
    println!(
        "outcome {:?}, peaks (header, all) {peaks:?}",
        decode_frame(&input, true)
    );
    for f in &findings {
        println!("{f}");
    }
}

/// Fuzz findings, fixed: a few bytes claiming a 60 MiB string (in a header, in a payload)
/// allocated it, zeroed, before the decoder saw that the bytes were missing.
#[test]
fn regression_small_input_claiming_a_huge_string() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let inputs: [(u64, &[u8]); 3] = [
        (
            0xdc76_8b2a_fd87_d6b6,
            &[7, 0, 0, 0, 2, 0, 0xfc, 0, 0, 0xc0, 0x03],
        ),
        (
            0xee21_b769_a38a_da3e,
            &[
                0x10, 0, 0, 0, 0, 1, 0xfc, 0xef, 0xbe, 0xad, 0xde, 0, 7, 0x70, 0x61, 0x79, 0x6c,
                0x6f, 0x61, 0x64, 0x13, 0, 0, 0, 0, 1, 7, 0, 0xfc, 0, 0, 0xc0, 0x03, 0, 0xfd, 0xb4,
                0x49, 0xec, 7, 0x3a, 0x83, 0x28, 0x71,
            ],
        ),
        (0, &[10, 0, 0, 0, 0, 1, 7, 0, 0xfc, 0, 0, 0xc0, 0x03, 0]),
    ];
    for (seed, input) in inputs {
        let mut findings = Vec::new();
        let (header, all) = check(seed, input, &mut findings);
        assert!(findings.is_empty(), "{findings:?}");
        assert!(
            header < 2 << 20 && all < SLACK,
            "{seed:#x}: {header} / {all} bytes"
        );
    }
}

#[test]
fn corpus_and_seed_frames_decode() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for (name, frame) in seed_frames() {
        round_trip(&frame).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let corpus = corpus();
    assert!(corpus.len() >= 30, "{} corpus frames", corpus.len());
    for (i, frame) in corpus.iter().enumerate() {
        let mut findings = Vec::new();
        check(i as u64, frame, &mut findings);
        let hard: Vec<_> = findings
            .iter()
            .filter(|f| !f.class.starts_with("alloc-amplified"))
            .collect();
        assert!(hard.is_empty(), "corpus frame {i}: {hard:?}");
    }
}

/// Writes the corpus: the encoder's seed frames and a few malformed frames.
/// `FUZZ_WRITE_CORPUS=1 cargo test -p actormesh --test fuzz_wire write_corpus`
#[test]
fn write_corpus() {
    if std::env::var_os("FUZZ_WRITE_CORPUS").is_none() {
        return;
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz-corpus");
    std::fs::create_dir_all(dir).expect("corpus dir");
    let mut files = seed_frames();
    let spawn = |claim: &[u8]| {
        // Header::Spawn { id: 0, actor_type: <claim> } with a consistent prefix
        let body = [&[2u8, 0][..], claim].concat();
        [&(body.len() as u32).to_le_bytes()[..], &body].concat()
    };
    let interesting: [(&str, Vec<u8>); 10] = [
        ("bad-empty", vec![]),
        ("bad-short-prefix", vec![1, 0]),
        ("bad-lying-prefix-4gib", vec![0xff, 0xff, 0xff, 0xff, 1]),
        ("bad-zero-length-envelope", vec![0, 0, 0, 0]),
        ("bad-unknown-variant", vec![3, 0, 0, 0, 0xee, 0xee, 0xee]),
        (
            "bad-header-string-claims-60mib",
            spawn(&[252, 0, 0, 0xc0, 0x03]),
        ),
        (
            "bad-header-string-claims-4gib",
            spawn(&[252, 0xff, 0xff, 0xff, 0xff]),
        ),
        (
            "bad-header-string-claims-2p60",
            spawn(&[253, 0, 0, 0, 0, 0, 0, 0, 0x10]),
        ),
        ("bad-header-string-not-utf8", spawn(&[2, 0xc3, 0x28])),
        (
            "bad-payload-string-claims-60mib",
            [
                &seed_frames()[0].1[..],
                &[10, 0, 0, 0, 0, 1, 7, 0, 252, 0, 0, 0xc0, 0x03, 0],
            ]
            .concat(),
        ),
    ];
    files.extend(interesting.into_iter().map(|(n, f)| (n.to_string(), f)));
    for (name, frame) in files {
        std::fs::write(format!("{dir}/{name}.bin"), frame).expect("corpus file");
    }
}
