//! **For fuzzing only.** Entry points into the crate-private frame decoder for the fuzz driver
//! (`framework/tests/fuzz_wire.rs`, which needs a test binary of its own to count allocations).
//! Not part of the API: hidden from the docs, and may change or go away in any release.
//!
//! Reached from outside the crate as `actormesh::__fuzz`.

use bytes::{BufMut, Bytes, BytesMut};

use super::envelope::{
    decode_payload, encode_envelope, encode_payload, Envelopes, FrameError, Header, WireError,
    WireTermination,
};
use crate::trace::TraceContext;

/// The most one header or payload decode may claim (the bincode limit of the wire `CONFIG`).
pub const DECODE_LIMIT: usize = 64 * 1024 * 1024;

/// Size of the length prefix of every envelope.
pub const LEN_PREFIX: usize = super::envelope::LEN_PREFIX;

/// SplitMix64: a small, seeded, deterministic generator for the fuzzers (the in-crate
/// handshake fuzzer and `framework/tests/fuzz_wire.rs`), so that a seed replays an input.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// One of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What decoding one frame gave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameOutcome {
    /// Items the envelope iterator yielded before it ended.
    pub items: usize,
    /// Envelopes whose header decoded.
    pub headers: usize,
    /// `Truncated` errors.
    pub truncated: usize,
    /// `BadHeader` errors.
    pub bad_headers: usize,
    /// Payload decodes tried (one per probe type per decoded envelope).
    pub payload_probes: usize,
    /// Payload decodes that succeeded.
    pub payloads_decoded: usize,
    /// The iterator still yielded items after `len + 1` steps (it would not have ended).
    pub unterminated: bool,
}

/// Decodes `frame` the way a link reader does: every envelope's header, and, when
/// `probe_payloads`, its payload as each of a few payload types (as a handler would). Runs at
/// most `frame.len() + 1` iterator steps.
pub fn decode_frame(frame: &[u8], probe_payloads: bool) -> FrameOutcome {
    let mut out = FrameOutcome::default();
    let mut envelopes = Envelopes::new(Bytes::copy_from_slice(frame));
    for _ in 0..=frame.len() {
        let Some(item) = envelopes.next() else {
            return out;
        };
        out.items += 1;
        match item {
            Ok((_header, payload)) => {
                out.headers += 1;
                if probe_payloads {
                    let (tried, ok) = probe_payload(&payload);
                    out.payload_probes += tried;
                    out.payloads_decoded += ok;
                }
            }
            Err(FrameError::Truncated { .. }) => out.truncated += 1,
            Err(FrameError::BadHeader(_)) => out.bad_headers += 1,
        }
    }
    out.unterminated = envelopes.next().is_some();
    out
}

/// Decodes `payload` as each probe type (integers, strings, byte vectors, nested sequences,
/// options, maps): returns how many decodes were tried and how many succeeded.
pub fn probe_payload(payload: &[u8]) -> (usize, usize) {
    use std::collections::HashMap;
    let results = [
        decode_payload::<u64>(payload).is_ok(),
        decode_payload::<String>(payload).is_ok(),
        decode_payload::<Vec<u8>>(payload).is_ok(),
        decode_payload::<Vec<u64>>(payload).is_ok(),
        decode_payload::<Vec<String>>(payload).is_ok(),
        decode_payload::<(u64, String, Option<Vec<u8>>)>(payload).is_ok(),
        decode_payload::<HashMap<String, Vec<u32>>>(payload).is_ok(),
        decode_payload::<Vec<Vec<u16>>>(payload).is_ok(),
    ];
    (results.len(), results.iter().filter(|ok| **ok).count())
}

/// Decodes every envelope of a valid frame and encodes it again: the bytes must be the same.
/// Returns the number of envelopes, or what differed.
pub fn round_trip(frame: &[u8]) -> Result<usize, String> {
    let mut again = BytesMut::new();
    let mut count = 0;
    let mut envelopes = Envelopes::new(Bytes::copy_from_slice(frame));
    for _ in 0..=frame.len() {
        let Some(item) = envelopes.next() else {
            break;
        };
        let (header, payload) = item.map_err(|e| format!("envelope {count}: {e}"))?;
        encode_envelope(&mut again, &header, |b| {
            b.put_slice(&payload);
            Ok::<_, ()>(())
        })
        .map_err(|e| format!("envelope {count} does not encode again: {e:?}"))?;
        count += 1;
    }
    if again[..] != *frame {
        return Err(format!(
            "{count} envelopes encode again to {} bytes, not the {} read",
            again.len(),
            frame.len()
        ));
    }
    Ok(count)
}

/// Valid frames, named: one envelope of every `Header` variant (and every error and
/// termination reason), with empty, small and large payloads, and frames of several envelopes.
pub fn seed_frames() -> Vec<(String, Vec<u8>)> {
    let trace = Some(TraceContext {
        trace_id: u128::MAX,
        span_id: 1,
    });
    let mut headers: Vec<(String, Header)> = vec![
        (
            "tell".into(),
            Header::Tell {
                target: 1,
                message: 0xdead_beef,
                trace: None,
            },
        ),
        (
            "tell-traced".into(),
            Header::Tell {
                target: u64::MAX,
                message: 7,
                trace,
            },
        ),
        (
            "ask".into(),
            Header::Ask {
                id: 3,
                target: 4,
                message: 5,
                timeout_ms: 5_000,
                deadline_unix_ms: 1_700_000_000_000,
                trace: None,
            },
        ),
        (
            "ask-traced-max".into(),
            Header::Ask {
                id: u64::MAX,
                target: u64::MAX,
                message: u64::MAX,
                timeout_ms: u32::MAX,
                deadline_unix_ms: u64::MAX,
                trace,
            },
        ),
        (
            "spawn".into(),
            Header::Spawn {
                id: 9,
                actor_type: "bank.Account".into(),
            },
        ),
        (
            "spawn-empty-type".into(),
            Header::Spawn {
                id: 0,
                actor_type: String::new(),
            },
        ),
        (
            "spawn-unicode-type".into(),
            Header::Spawn {
                id: 300,
                actor_type: "акаунт.類型.🦀".into(),
            },
        ),
        (
            "watch".into(),
            Header::Watch {
                watch: 11,
                target: 12,
            },
        ),
        ("stop".into(), Header::Stop { target: 250 }),
        (
            "spawn-replica".into(),
            Header::SpawnReplica {
                id: 13,
                actor_type: "kv.Shard".into(),
                group: "kv".into(),
                fence: 42,
                singleton: false,
            },
        ),
        (
            "spawn-replica-singleton".into(),
            Header::SpawnReplica {
                id: 65_536,
                actor_type: "cron.Leader".into(),
                group: "cron".into(),
                fence: u64::MAX,
                singleton: true,
            },
        ),
        (
            "retire".into(),
            Header::Retire {
                id: 14,
                target: 15,
                group: "kv".into(),
                fence: 43,
            },
        ),
        (
            "reply-ok".into(),
            Header::Reply {
                id: 16,
                error: None,
            },
        ),
        (
            "terminated-stopped".into(),
            Header::Terminated {
                watch: 17,
                reason: WireTermination::Stopped,
            },
        ),
        (
            "terminated-not-found".into(),
            Header::Terminated {
                watch: 18,
                reason: WireTermination::NotFound,
            },
        ),
        (
            "terminated-shutdown".into(),
            Header::Terminated {
                watch: 19,
                reason: WireTermination::NodeShutdown,
            },
        ),
    ];
    let errors = [
        ("not-found", WireError::ActorNotFound),
        ("stopped", WireError::ActorStopped),
        (
            "unknown-message",
            WireError::UnknownMessage {
                actor_type: "bank.Account".into(),
                message: 99,
            },
        ),
        (
            "unknown-actor-type",
            WireError::UnknownActorType {
                actor_type: "no.Such".into(),
            },
        ),
        ("codec", WireError::Codec("unexpected end".into())),
        ("panicked", WireError::HandlerPanicked("x".repeat(300))),
        ("deadline", WireError::DeadlineExpired),
        ("shutting-down", WireError::ShuttingDown),
        ("fenced", WireError::Fenced),
        ("not-member", WireError::NotMember),
    ];
    for (name, error) in errors {
        headers.push((
            format!("reply-{name}"),
            Header::Reply {
                id: 20,
                error: Some(error),
            },
        ));
    }
    let mut frames: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(name, h)| (name.clone(), frame_of(&[(h, Payload::Text("payload"))])))
        .collect();
    let tell = &headers[0].1;
    let ask = &headers[2].1;
    let reply = &headers[12].1;
    frames.push((
        "tell-empty-payload".into(),
        frame_of(&[(tell, Payload::None)]),
    ));
    frames.push((
        "ask-u64-payload".into(),
        frame_of(&[(ask, Payload::U64(1 << 40))]),
    ));
    frames.push((
        "reply-64k-payload".into(),
        frame_of(&[(reply, Payload::Bytes(vec![0xa5; 64 * 1024]))]),
    ));
    frames.push((
        "batch-tell-ask-reply".into(),
        frame_of(&[
            (tell, Payload::Text("one")),
            (ask, Payload::U64(2)),
            (reply, Payload::Bytes(vec![1, 2, 3])),
        ]),
    ));
    let all: Vec<_> = headers
        .iter()
        .map(|(_, h)| (h, Payload::Text("batched")))
        .collect();
    frames.push(("batch-every-variant".into(), frame_of(&all)));
    frames
}

/// A payload of a seed envelope.
enum Payload {
    None,
    Text(&'static str),
    U64(u64),
    Bytes(Vec<u8>),
}

fn frame_of(items: &[(&Header, Payload)]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for (header, payload) in items {
        encode_envelope(&mut buf, header, |b| match payload {
            Payload::None => Ok(()),
            Payload::Text(t) => encode_payload(*t, b),
            Payload::U64(v) => encode_payload(v, b),
            Payload::Bytes(v) => encode_payload(v, b),
        })
        .expect("a seed envelope encodes");
    }
    buf.to_vec()
}

#[cfg(test)]
mod tests {
    //! The handshake check, fuzzed in-crate: `check_handshake` and the metadata it reads are
    //! crate-private to the transport, which this module may reach only from its tests.

    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::sync::watch;
    use tonic::metadata::MetadataMap;

    use super::*;
    use crate::core::wire::outbox::Outbox;
    use crate::core::wire::PROTOCOL_VERSION;
    use crate::id::NodeId;
    use crate::transport::server::{check_handshake, Acceptor};
    use crate::transport::{MD_CLUSTER, MD_FROM, MD_PROTOCOL, MD_TO};

    /// Just enough of a node for the handshake check.
    struct Stub {
        id: NodeId,
        cluster: String,
    }

    impl Acceptor for Stub {
        fn node_id(&self) -> &NodeId {
            &self.id
        }
        fn cluster(&self) -> &str {
            &self.cluster
        }
        fn limits(&self) -> (usize, usize) {
            (1024, 1024)
        }
        fn is_stopping(&self) -> bool {
            false
        }
        fn shutdown_signal(&self) -> watch::Receiver<bool> {
            watch::channel(false).1
        }
        fn track_inbound(&self, _outbox: &Arc<Outbox>) {}
        fn link_epoch(&self) -> u64 {
            0
        }
        fn listen_limits(&self) -> crate::transport::listener::Limits {
            crate::transport::listener::Limits {
                max_connections: 1,
                handshake_timeout: std::time::Duration::from_secs(1),
            }
        }
        fn tls(&self) -> Option<crate::transport::tls::LinkTls> {
            None
        }
        fn on_request_frame(self: &Arc<Self>, _frame: Bytes, _replies: &Arc<Outbox>, _: u64) {}
        fn spawn_reader<F: std::future::Future<Output = ()> + Send + 'static>(
            self: &Arc<Self>,
            _reader: F,
        ) {
        }
    }

    use super::Rng;

    /// One metadata value as a peer could send it: raw header-value bytes.
    fn raw_value(rng: &mut Rng, good: &str, binary: bool) -> Vec<u8> {
        // tonic's own base64 encoding of a `-bin` value
        let b64 = |b: &[u8]| {
            tonic::metadata::BinaryMetadataValue::from_bytes(b)
                .as_encoded_bytes()
                .to_vec()
        };
        let enc = |b: &[u8]| if binary { b64(b) } else { b.to_vec() };
        match rng.below(12) {
            0 => enc(good.as_bytes()),
            1 => Vec::new(),
            2 => {
                let n = rng.below(64);
                enc(&rng.bytes(n))
            }
            // huge
            // huge: up to the 16 KiB of headers the HTTP/2 server accepts by default
            3 => {
                let (c, n) = (b'a' + rng.below(26) as u8, 1 + rng.below(16 * 1024));
                enc(&vec![c; n])
            }
            // not UTF-8 once decoded
            4 => enc(&[0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x82]),
            // the good value with one byte changed, added or cut
            5 => {
                let mut v = good.as_bytes().to_vec();
                if v.is_empty() || rng.below(2) == 0 {
                    v.insert(rng.below(v.len() + 1), rng.next() as u8);
                } else {
                    let at = rng.below(v.len());
                    v[at] ^= 1 << rng.below(8);
                }
                enc(&v)
            }
            // invalid base64 (or, for the ASCII key, padded numbers)
            6 => b"!!not*base64==".to_vec(),
            7 => b64(good.as_bytes())
                .into_iter()
                .chain(*b"====")
                .collect::<Vec<u8>>(),
            8 => [b" ", good.as_bytes(), b"\t"].concat(),
            9 => {
                let picks: [&[u8]; 8] = [
                    b"+3",
                    b"03",
                    b"-0",
                    b"4294967299",
                    b"18446744073709551619",
                    b"3.0",
                    b"\xc3\xa9",
                    b"0x3",
                ];
                picks[rng.below(picks.len())].to_vec()
            }
            // obs-text bytes (allowed in a header value, not a string)
            10 => {
                let n = rng.below(32);
                (0..n).map(|_| 0x80 | rng.next() as u8).collect()
            }
            _ => {
                let n = rng.below(32);
                rng.bytes(n)
            }
        }
    }

    /// The metadata a caller sends, as HTTP/2 would hand it to tonic (values h2 would refuse
    /// are dropped: they never reach `accept`).
    fn metadata(rng: &mut Rng, node: &Stub) -> MetadataMap {
        let mut headers = http::HeaderMap::new();
        let version = PROTOCOL_VERSION.to_string();
        let keys = [
            (MD_PROTOCOL, version.as_str(), false),
            (MD_CLUSTER, node.cluster.as_str(), true),
            (MD_FROM, "caller", true),
            (MD_TO, node.id.as_str(), true),
        ];
        for (key, good, binary) in keys {
            // absent, once, or repeated
            for _ in 0..rng.below(3) {
                let raw = raw_value(rng, good, binary);
                if let Ok(v) = http::HeaderValue::from_bytes(&raw) {
                    headers.append(key, v);
                }
            }
        }
        MetadataMap::from_headers(headers)
    }

    /// The reads of `transport::server::accept` (its private `bin` helper, repeated here).
    fn read_handshake(md: &MetadataMap) -> (Option<String>, String, String, String) {
        let bin = |key: &str| {
            md.get_bin(key)
                .and_then(|v| v.to_bytes().ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let protocol = md
            .get(MD_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (protocol, bin(MD_CLUSTER), bin(MD_FROM), bin(MD_TO))
    }

    /// Runs `inputs` seeded handshakes: none panics; the check accepts exactly the caller of
    /// this protocol, cluster and node; a refusal's text is bounded by what it quotes.
    fn fuzz_handshake(seed: u64, inputs: u64) -> (u64, u64) {
        let mut accepted = 0;
        for i in 0..inputs {
            let input_seed = seed ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let mut rng = Rng(input_seed);
            let names = ["", "n1", "node-ü", &"x".repeat(300)];
            let node = Stub {
                id: NodeId::new(names[rng.below(names.len())]),
                cluster: names[rng.below(names.len())].to_owned(),
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let md = metadata(&mut rng, &node);
                let (protocol, cluster, _from, to) = read_handshake(&md);
                let result = check_handshake(&node, protocol.as_deref(), &cluster, &to);
                (protocol, cluster, to, result)
            }));
            let Ok((protocol, cluster, to, result)) = outcome else {
                panic!("handshake input seed {input_seed:#018x} panicked");
            };
            let expect_ok = protocol.as_deref().and_then(|p| p.parse::<u32>().ok())
                == Some(PROTOCOL_VERSION)
                && cluster == node.cluster
                && to == node.id.as_str();
            assert_eq!(
                result.is_ok(),
                expect_ok,
                "seed {input_seed:#018x}: {protocol:?} {cluster:?} {to:?} -> {result:?}"
            );
            if let Err(refusal) = &result {
                // What an unauthenticated caller is told never names this node's side.
                assert!(
                    !refusal.public.contains(&format!("`{}`", node.cluster))
                        || cluster.contains(&node.cluster),
                    "seed {input_seed:#018x}: {refusal:?}"
                );
                let text = &refusal.detail;
                let quoted = protocol.as_ref().map_or(0, String::len)
                    + cluster.len()
                    + to.len()
                    + 2 * node.id.as_str().len()
                    + node.cluster.len();
                assert!(
                    text.len() <= 256 + quoted,
                    "seed {input_seed:#018x}: refusal of {} bytes",
                    text.len()
                );
            } else {
                accepted += 1;
            }
        }
        (inputs, accepted)
    }

    #[test]
    fn handshake_fuzz_fast() {
        let (inputs, accepted) = fuzz_handshake(0x5eed_0011, 20_000);
        assert!(accepted > 0, "some of {inputs} handshakes must be accepted");
    }

    /// `cargo test -p actormesh --lib handshake_fuzz_long -- --ignored --nocapture`
    #[test]
    #[ignore = "long fuzz run (1,000,000 handshakes)"]
    fn handshake_fuzz_long() {
        let start = std::time::Instant::now();
        let (inputs, accepted) = fuzz_handshake(0x5eed_0012, 1_000_000);
        let secs = start.elapsed().as_secs_f64();
        println!(
            "handshake fuzz: {inputs} inputs ({accepted} accepted) in {secs:.1} s, {:.0} inputs/s, no findings",
            inputs as f64 / secs
        );
    }

    #[test]
    fn every_seed_frame_round_trips() {
        for (name, frame) in seed_frames() {
            let n = round_trip(&frame).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(n >= 1, "{name}");
            let out = decode_frame(&frame, true);
            assert_eq!((out.headers, out.items), (n, n), "{name}");
        }
    }
}
