//! Envelopes and frames: the bytes that cross the link between two nodes.
//!
//! A frame is one gRPC message on the link's stream and holds one or more envelopes, each
//! `[u32 little-endian length][header][payload]`. The header is a bincode-encoded [`Header`];
//! the payload, the rest of the envelope, is the bincode (serde) encoding of the user's message,
//! reply or constructor arguments. The length prefix lets a reader skip an envelope it cannot
//! decode and go on with the next one: one bad envelope never costs the others.

use bincode::{Decode, Encode};
use bytes::{BufMut, Bytes, BytesMut};

use crate::trace::TraceContext;

/// The bincode configuration of every header and payload: varint integers and a hard limit on
/// what one decode may allocate, so a lying length prefix cannot exhaust memory. Decodes lower
/// the limit further to the size of their input (`with_limit_for!`).
pub(crate) const CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ 64 * 1024 * 1024 }>,
> = bincode::config::standard().with_limit::<{ 64 * 1024 * 1024 }>();

/// Runs `$decode` (an expression using the configuration `$cfg`) with the bincode limit scaled
/// to the `$len` bytes being decoded: the smallest of 1, 4, 16 and 64 MiB that is at least 16
/// times `$len`, so a few bytes claiming a 60 MiB string cannot allocate it. Never smaller than
/// a valid value needs: bincode claims at most 16 bytes per byte read (`u128` varint) and, for
/// a string or byte vector, its length once its bytes are there to read.
macro_rules! with_limit_for {
    ($len:expr, |$cfg:ident| $decode:expr) => {{
        use bincode::config::standard as std_config;
        match $len.saturating_mul(16) {
            0..=0x10_0000 => {
                let $cfg = std_config().with_limit::<0x10_0000>();
                $decode
            }
            0x10_0001..=0x40_0000 => {
                let $cfg = std_config().with_limit::<0x40_0000>();
                $decode
            }
            0x40_0001..=0x100_0000 => {
                let $cfg = std_config().with_limit::<0x100_0000>();
                $decode
            }
            _ => {
                let $cfg = CONFIG;
                $decode
            }
        }
    }};
}

/// Size of the length prefix of every envelope.
pub(crate) const LEN_PREFIX: usize = 4;

/// Why a remote operation failed, as carried in a reply.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(crate) enum WireError {
    /// No running actor with that id on the node (gone, stopping or between restarts): the
    /// message was not handled.
    ActorNotFound,
    /// The actor stopped while it held the message (its handler had started), before replying.
    ActorStopped,
    /// The actor does not accept the message type.
    UnknownMessage { actor_type: String, message: u64 },
    /// The node cannot spawn the actor type.
    UnknownActorType { actor_type: String },
    /// The payload could not be decoded or the reply encoded.
    Codec(String),
    /// The handler panicked.
    HandlerPanicked(String),
    /// The deadline passed before the actor handled the message.
    DeadlineExpired,
    /// The node is shutting down and accepts no new work.
    ShuttingDown,
    /// The order came from a node that no longer leads the cluster.
    Fenced,
    /// The receiving node's membership (its lease) was lost, or in doubt and could not be
    /// confirmed, when the request was to start: it was not handled.
    NotMember,
    /// The receiving node does not host the entity's shard (it moved, or is moving): not
    /// handled; the caller routes it again.
    NotOwner,
    /// Too many messages wait for moving shards of the entity type on the receiving node:
    /// not handled.
    EntityBufferFull,
}

/// Why a watched actor terminated, as carried in a `Terminated` envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub(crate) enum WireTermination {
    /// The actor stopped.
    Stopped,
    /// No such actor when the watch arrived.
    NotFound,
    /// Its node is shutting down.
    NodeShutdown,
}

/// What an envelope is. Requests travel from the node that opened the link to the node that
/// accepted it; `Reply` and `Terminated` travel back.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(crate) enum Header {
    /// Fire-and-forget message; payload is the message.
    Tell {
        target: u64,
        message: u64,
        trace: Option<TraceContext>,
    },
    /// Request with a reply; payload is the message.
    Ask {
        id: u64,
        target: u64,
        message: u64,
        /// Milliseconds the caller still waits; the receiver drops the work after that.
        timeout_ms: u32,
        /// When the caller gives up, in milliseconds since the Unix epoch on the caller's
        /// clock: the deadline survives time the ask spends queued in a kernel buffer or in a
        /// frozen receiver, which `timeout_ms` (counted from when the receiver reads it) does
        /// not see.
        deadline_unix_ms: u64,
        trace: Option<TraceContext>,
    },
    /// Spawn an actor of a declared type; payload is the constructor arguments.
    Spawn { id: u64, actor_type: String },
    /// Tell the caller when `target` terminates.
    Watch { watch: u64, target: u64 },
    /// Stop `target` after the messages already in its mailbox (a supervised actor is not
    /// restarted).
    Stop { target: u64 },
    /// The controller (leader with token `fence`) asks for a replica of `group`; payload is
    /// the constructor arguments. Replied with the new actor's id.
    SpawnReplica {
        id: u64,
        actor_type: String,
        group: String,
        fence: u64,
        /// The replica is a singleton: its host stops it when its lease may have expired.
        singleton: bool,
    },
    /// The controller (leader with token `fence`) retires replica `target` of `group`: it
    /// leaves the group, then stops after its queued messages.
    Retire {
        id: u64,
        target: u64,
        group: String,
        fence: u64,
    },
    /// Answer to `Ask` or `Spawn`; payload is the reply when `error` is `None`.
    Reply { id: u64, error: Option<WireError> },
    /// A watched actor terminated.
    Terminated { watch: u64, reason: WireTermination },
    /// Fire-and-forget message to the keyed entity `key` of type `kind`, activated where its
    /// shard is hosted; payload is the message. `hops` counts the nodes that forwarded it
    /// (a shard in motion): a node does not forward past a small bound. `version` is the
    /// version of the assignment the sender routed it by: a node whose own is older holds
    /// it until it catches up rather than sending it back.
    EntityTell {
        kind: String,
        key: Vec<u8>,
        message: u64,
        hops: u8,
        version: u64,
        trace: Option<TraceContext>,
    },
    /// Request with a reply to the keyed entity `key` of type `kind`; as `Ask` otherwise.
    EntityAsk {
        id: u64,
        kind: String,
        key: Vec<u8>,
        message: u64,
        timeout_ms: u32,
        deadline_unix_ms: u64,
        trace: Option<TraceContext>,
    },
}

/// Why an envelope or frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// The frame ends inside an envelope.
    #[error("truncated frame: envelope claims {claimed} bytes, {available} remain")]
    Truncated { claimed: usize, available: usize },
    /// The header bytes are not a valid header (corrupt, or from a newer protocol).
    #[error("malformed envelope header: {0}")]
    BadHeader(String),
}

/// Appends one envelope to `buf`: the header, then whatever `payload` writes.
///
/// On error nothing is left in `buf`. Returns the envelope's encoded size.
pub(crate) fn encode_envelope<E>(
    buf: &mut BytesMut,
    header: &Header,
    payload: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<usize, EncodeError<E>> {
    let start = buf.len();
    buf.put_u32_le(0);
    let result = bincode::encode_into_std_write(header, &mut Writer(buf), CONFIG)
        .map_err(|_| EncodeError::Header)
        .and_then(|_| payload(buf).map_err(EncodeError::Payload));
    match result {
        Ok(()) => {
            let len = buf.len() - start - LEN_PREFIX;
            match u32::try_from(len) {
                Ok(len32) => {
                    buf[start..start + LEN_PREFIX].copy_from_slice(&len32.to_le_bytes());
                    Ok(len + LEN_PREFIX)
                }
                Err(_) => {
                    buf.truncate(start);
                    Err(EncodeError::Header)
                }
            }
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}

/// Encoding an envelope failed.
#[derive(Debug)]
pub(crate) enum EncodeError<E> {
    /// The header did not encode, or the envelope exceeds 4 GiB.
    Header,
    /// The payload writer failed.
    Payload(E),
}

/// Serializes `value` with serde into `buf` (the payload of an envelope).
pub(crate) fn encode_payload<T: serde::Serialize + ?Sized>(
    value: &T,
    buf: &mut BytesMut,
) -> Result<(), String> {
    bincode::serde::encode_into_std_write(value, &mut Writer(buf), CONFIG)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Deserializes a payload with serde. Trailing bytes are an error: they mean the two sides
/// disagree about the type.
pub(crate) fn decode_payload<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, read) = with_limit_for!(bytes.len(), |config| {
        bincode::serde::decode_from_slice::<T, _>(bytes, config)
    })
    .map_err(|e| e.to_string())?;
    if read != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the value: the two nodes disagree about the message type",
            bytes.len() - read
        ));
    }
    Ok(value)
}

struct Writer<'a>(&'a mut BytesMut);

impl std::io::Write for Writer<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(data);
        Ok(data.len())
    }
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Iterates over the envelopes of a frame. Each item is the header and the payload (a cheap
/// slice of the frame), or the error of one envelope; after a `Truncated` error the iterator
/// ends, since the rest of the frame has no known boundaries.
#[derive(Debug)]
pub(crate) struct Envelopes {
    frame: Bytes,
    pos: usize,
}

impl Envelopes {
    pub(crate) fn new(frame: Bytes) -> Self {
        Envelopes { frame, pos: 0 }
    }
}

impl Iterator for Envelopes {
    type Item = Result<(Header, Bytes), FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.frame.len() - self.pos;
        if rest == 0 {
            return None;
        }
        if rest < LEN_PREFIX {
            self.pos = self.frame.len();
            return Some(Err(FrameError::Truncated {
                claimed: LEN_PREFIX,
                available: rest,
            }));
        }
        let mut len_bytes = [0u8; LEN_PREFIX];
        len_bytes.copy_from_slice(&self.frame[self.pos..self.pos + LEN_PREFIX]);
        let len = u32::from_le_bytes(len_bytes) as usize;
        let start = self.pos + LEN_PREFIX;
        if len > rest - LEN_PREFIX {
            self.pos = self.frame.len();
            return Some(Err(FrameError::Truncated {
                claimed: len,
                available: rest - LEN_PREFIX,
            }));
        }
        let end = start + len;
        self.pos = end;
        let envelope = &self.frame[start..end];
        Some(
            match with_limit_for!(envelope.len(), |config| {
                bincode::decode_from_slice::<Header, _>(envelope, config)
            }) {
                Ok((header, read)) => Ok((header, self.frame.slice(start + read..end))),
                Err(e) => Err(FrameError::BadHeader(e.to_string())),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tell(target: u64) -> Header {
        Header::Tell {
            target,
            message: 42,
            trace: None,
        }
    }

    fn frame_of(items: &[(Header, &str)]) -> BytesMut {
        let mut buf = BytesMut::new();
        for (h, p) in items {
            encode_envelope(&mut buf, h, |b| encode_payload(*p, b)).unwrap();
        }
        buf
    }

    #[test]
    fn round_trip_many_envelopes() {
        let frame = frame_of(&[(tell(1), "one"), (tell(2), "two")]).freeze();
        let got: Vec<_> = Envelopes::new(frame).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0, tell(2));
        assert_eq!(decode_payload::<String>(&got[1].1).unwrap(), "two");
    }

    #[test]
    fn truncated_frame_yields_good_envelopes_then_error() {
        let mut frame = frame_of(&[(tell(1), "one"), (tell(2), "two")]);
        frame.truncate(frame.len() - 2);
        let got: Vec<_> = Envelopes::new(frame.freeze()).collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert!(matches!(got[1], Err(FrameError::Truncated { .. })));
    }

    #[test]
    fn short_length_prefix_is_truncated() {
        let got: Vec<_> = Envelopes::new(Bytes::from_static(&[1, 0])).collect();
        assert!(matches!(got[..], [Err(FrameError::Truncated { .. })]));
    }

    #[test]
    fn lying_length_prefix_does_not_allocate_or_panic() {
        let got: Vec<_> =
            Envelopes::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1])).collect();
        assert!(matches!(
            got[..],
            [Err(FrameError::Truncated {
                claimed: 0xffff_ffff,
                ..
            })]
        ));
    }

    #[test]
    fn garbage_header_is_skipped_and_next_envelope_read() {
        let mut buf = BytesMut::new();
        buf.put_u32_le(3);
        buf.put_slice(&[0xee, 0xee, 0xee]); // unknown header variant
        buf.extend_from_slice(&frame_of(&[(tell(9), "after")]));
        let got: Vec<_> = Envelopes::new(buf.freeze()).collect();
        assert!(matches!(got[0], Err(FrameError::BadHeader(_))));
        assert_eq!(got[1].as_ref().unwrap().0, tell(9));
    }

    #[test]
    fn payload_decode_rejects_wrong_type_and_trailing_bytes() {
        let mut buf = BytesMut::new();
        encode_payload(&(1u8, 2u8), &mut buf).unwrap();
        assert!(
            decode_payload::<u8>(&buf).is_err(),
            "trailing bytes are an error"
        );
        assert!(decode_payload::<String>(&[0xff]).is_err());
    }

    #[test]
    fn huge_claimed_vec_length_is_refused_by_the_limit() {
        // A varint claiming a 2^60-element Vec<u8> must be refused, not allocated.
        let bytes = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10];
        assert!(decode_payload::<Vec<u8>>(&bytes).is_err());
    }

    #[test]
    fn small_envelope_cannot_claim_a_large_string() {
        // Fuzz finding (seed 0xdc768b2afd87d6b6): a Spawn header whose 11 bytes claim a 60 MiB
        // actor type allocated the 60 MiB (zeroed) before finding the bytes missing.
        let frame = [7, 0, 0, 0, 2, 0, 0xfc, 0, 0, 0xc0, 0x03];
        let got: Vec<_> = Envelopes::new(Bytes::copy_from_slice(&frame)).collect();
        match &got[..] {
            [Err(FrameError::BadHeader(e))] => assert!(e.contains("LimitExceeded"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(decode_payload::<String>(&[0xfc, 0, 0, 0xc0, 0x03]).is_err());
    }

    #[test]
    fn limit_scaled_to_the_input_still_fits_valid_values() {
        // u128 zeros: 1 byte each on the wire, 16 claimed (the worst ratio), across the
        // 1 MiB / 4 MiB limit boundary.
        for n in [65_530, 65_536, 70_000] {
            let values = vec![0u128; n];
            let mut buf = BytesMut::new();
            encode_payload(&values, &mut buf).unwrap();
            assert_eq!(decode_payload::<Vec<u128>>(&buf).unwrap(), values);
        }
        let text = "é".repeat(600_000);
        let mut buf = BytesMut::new();
        encode_payload(&text, &mut buf).unwrap();
        assert_eq!(decode_payload::<String>(&buf).unwrap(), text);
        let big = Header::Reply {
            id: u64::MAX,
            error: Some(WireError::HandlerPanicked("p".repeat(2 << 20))),
        };
        let mut frame = BytesMut::new();
        encode_envelope(&mut frame, &big, |_| Ok::<_, ()>(())).unwrap();
        let got: Vec<_> = Envelopes::new(frame.freeze())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got[0].0, big);
    }

    #[test]
    fn failed_payload_leaves_buffer_unchanged() {
        let mut buf = frame_of(&[(tell(1), "one")]);
        let before = buf.len();
        let r = encode_envelope(&mut buf, &tell(2), |_| Err::<(), _>("boom"));
        assert!(matches!(r, Err(EncodeError::Payload("boom"))));
        assert_eq!(buf.len(), before);
    }
}
