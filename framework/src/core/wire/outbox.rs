//! The bounded, batching send queue of one direction of a link.
//!
//! Senders encode their envelope straight into the tail chunk of the queue, under a short lock
//! and with no allocation per message. The link's writer takes whole chunks as frames. Under
//! light load a frame holds one envelope (no added latency); under load, envelopes pile up while
//! the writer is busy and leave together, up to [`BATCH_BYTES`] per frame.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use super::envelope::{encode_envelope, EncodeError, Header};

/// A frame is closed to new envelopes once it holds this many bytes.
pub(crate) const BATCH_BYTES: usize = 64 * 1024;

/// Why an envelope was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError<E> {
    /// More than the queue's limit is waiting to be written.
    Full,
    /// The link is closed for good.
    Closed,
    /// The envelope is larger than the maximum frame size.
    TooLarge(usize),
    /// The payload did not encode.
    Encode(E),
}

#[derive(Debug, Default)]
struct State {
    /// Frames being filled: bytes and how many envelopes each holds.
    chunks: VecDeque<(BytesMut, usize)>,
    queued: usize,
    envelopes: usize,
    writer: Option<Waker>,
    closed: bool,
    /// Bumped for each new connection of a link: a stream of an older connection ends.
    epoch: u64,
}

/// One direction's queue of encoded envelopes.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    drained: tokio::sync::Notify,
    max_frame: usize,
    max_queued: usize,
}

impl Outbox {
    /// A queue that refuses envelopes above `max_frame` bytes and pushes beyond `max_queued`.
    pub(crate) fn new(max_frame: usize, max_queued: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            drained: tokio::sync::Notify::new(),
            max_frame,
            max_queued,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent (every mutation
        // is a single push or pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configured queue limit in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.max_queued
    }

    /// Encodes one envelope into the queue and wakes the writer.
    pub(crate) fn push<E>(
        &self,
        header: &Header,
        payload: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), PushError<E>> {
        let mut st = self.lock();
        if st.closed {
            return Err(PushError::Closed);
        }
        if st.queued >= self.max_queued {
            return Err(PushError::Full);
        }
        if st.chunks.back().is_none_or(|(c, _)| c.len() >= BATCH_BYTES) {
            st.chunks
                .push_back((BytesMut::with_capacity(BATCH_BYTES + 1024), 0));
        }
        let max_frame = self.max_frame;
        let (chunk, count) = st.chunks.back_mut().expect("a chunk was just ensured");
        let before = chunk.len();
        let size = match encode_envelope(chunk, header, payload) {
            Ok(size) => size,
            Err(EncodeError::Payload(e)) => return Err(PushError::Encode(e)),
            Err(EncodeError::Header) => return Err(PushError::TooLarge(usize::MAX)),
        };
        if size > max_frame {
            chunk.truncate(before);
            return Err(PushError::TooLarge(size));
        }
        if before > 0 && chunk.len() > max_frame {
            let tail = chunk.split_off(before);
            st.chunks.push_back((tail, 1));
        } else {
            *count += 1;
        }
        st.queued += size;
        st.envelopes += 1;
        let writer = st.writer.take();
        drop(st);
        if let Some(w) = writer {
            w.wake();
        }
        Ok(())
    }

    /// Takes the next frame, or registers the writer to be woken by the next push.
    ///
    /// A stream of an earlier `epoch` than the current one gets the end of the stream.
    pub(crate) fn poll_frame(&self, cx: &mut Context<'_>, epoch: u64) -> Poll<Option<Bytes>> {
        let mut st = self.lock();
        if st.epoch != epoch {
            return Poll::Ready(None);
        }
        while let Some((chunk, count)) = st.chunks.pop_front() {
            if chunk.is_empty() {
                continue;
            }
            st.queued -= chunk.len();
            st.envelopes -= count;
            if st.chunks.is_empty() {
                self.drained.notify_waiters();
            }
            return Poll::Ready(Some(chunk.freeze()));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        st.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Starts a new epoch: streams of the previous one end. Returns the new epoch.
    pub(crate) fn new_epoch(&self) -> u64 {
        let mut st = self.lock();
        st.epoch += 1;
        let writer = st.writer.take();
        let epoch = st.epoch;
        drop(st);
        if let Some(w) = writer {
            w.wake();
        }
        epoch
    }

    /// Bytes waiting to be written.
    pub(crate) fn queued(&self) -> usize {
        self.lock().queued
    }

    /// Discards everything queued; returns how many envelopes were dropped.
    pub(crate) fn clear(&self) -> usize {
        let mut st = self.lock();
        let dropped = st.envelopes;
        st.chunks.clear();
        st.queued = 0;
        st.envelopes = 0;
        drop(st);
        self.drained.notify_waiters();
        dropped
    }

    /// Refuses further pushes; the writer ends after the queued frames.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        let writer = st.writer.take();
        drop(st);
        if let Some(w) = writer {
            w.wake();
        }
    }

    /// Waits until nothing is queued.
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.queued() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The frames of an outbox as a stream, for a request or response body.
#[derive(Debug)]
pub(crate) struct FrameStream {
    pub(crate) outbox: std::sync::Arc<Outbox>,
    pub(crate) epoch: u64,
}

impl Stream for FrameStream {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.outbox.poll_frame(cx, self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::envelope::{decode_payload, encode_payload, Envelopes};
    use std::task::Waker;

    fn tell() -> Header {
        Header::Tell {
            target: 1,
            message: 2,
            trace: None,
        }
    }

    fn next(outbox: &Outbox) -> Option<Bytes> {
        let mut cx = Context::from_waker(Waker::noop());
        match outbox.poll_frame(&mut cx, 0) {
            Poll::Ready(f) => f,
            Poll::Pending => None,
        }
    }

    #[test]
    fn batches_pushes_into_one_frame() {
        let outbox = Outbox::new(1 << 20, 1 << 20);
        for i in 0..100u32 {
            outbox.push(&tell(), |b| encode_payload(&i, b)).unwrap();
        }
        let frame = next(&outbox).expect("a frame");
        let values: Vec<u32> = Envelopes::new(frame)
            .map(|e| decode_payload(&e.unwrap().1).unwrap())
            .collect();
        assert_eq!(values, (0..100).collect::<Vec<_>>());
        assert_eq!(outbox.queued(), 0);
        assert!(next(&outbox).is_none());
    }

    #[test]
    fn refuses_when_full_and_oversized() {
        let outbox = Outbox::new(64, 100);
        let big = vec![0u8; 200];
        assert!(matches!(
            outbox.push(&tell(), |b| encode_payload(&big, b)),
            Err(PushError::TooLarge(n)) if n > 200
        ));
        assert_eq!(
            outbox.queued(),
            0,
            "a refused envelope leaves nothing behind"
        );
        let mut pushed = 0;
        while outbox
            .push(&tell(), |b| encode_payload(&[0u8; 20], b))
            .is_ok()
        {
            pushed += 1;
            assert!(pushed < 100, "the queue must fill up");
        }
        assert_eq!(
            outbox.push(&tell(), |b| encode_payload(&1u8, b)),
            Err(PushError::Full)
        );
        // Frames never exceed max_frame once there is more than one envelope.
        while let Some(frame) = next(&outbox) {
            assert!(frame.len() <= 64);
        }
    }

    #[test]
    fn clear_counts_envelopes() {
        let outbox = Outbox::new(1024, 1 << 20);
        for i in 0..10u32 {
            outbox.push(&tell(), |b| encode_payload(&i, b)).unwrap();
        }
        assert_eq!(outbox.clear(), 10);
        assert_eq!(outbox.queued(), 0);
    }

    #[test]
    fn closed_outbox_ends_the_stream() {
        let outbox = Outbox::new(1024, 1024);
        outbox.push(&tell(), |b| encode_payload(&1u8, b)).unwrap();
        outbox.close();
        assert_eq!(
            outbox.push(&tell(), |b| encode_payload(&1u8, b)),
            Err(PushError::Closed)
        );
        assert!(next(&outbox).is_some(), "queued frames still leave");
        outbox
            .push(&tell(), |b| encode_payload(&1u8, b))
            .unwrap_err();
        outbox.new_epoch();
        let mut cx0 = Context::from_waker(Waker::noop());
        assert_eq!(
            outbox.poll_frame(&mut cx0, 0),
            Poll::Ready(None),
            "old epoch ends"
        );
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(outbox.poll_frame(&mut cx, 0), Poll::Ready(None));
    }
}
