//! Panics that the node catches: reported once, in the log, with where they happened, and
//! to the callers whose asks the panicking actor was handling.
//!
//! Two places catch: around a handler's call (`message::handle`: its caller gets the panic),
//! and around every poll of an actor's task (`poll_actor`: a handler's future running in the
//! actor panicked; every ask the actor had started and not answered gets the panic through
//! the actor's [`Notice`], set before the task, and with it the asks' result senders, goes).
//!
//! A caught panic still goes through the process's panic hook, which prints it (with
//! `RUST_BACKTRACE=1`, a backtrace of some 65 frames) to stderr, before the node logs it
//! again. The node installs, once per process, a hook that stays quiet for the panics it
//! catches in handlers (recording where they happened and, when backtraces are enabled, the
//! backtrace, for the node's own log line) and hands every other panic to the hook that was
//! installed before it.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Once, OnceLock};

/// How an ask's handler went, as its caller learns it when no result comes.
pub(crate) enum Fate {
    /// The handler started; if the actor's task panics before the result is sent, the
    /// notice says so (an asynchronous handler's future was running).
    Started(Arc<Notice>),
    /// The handler panicked, with this text.
    Panicked(String),
    /// The handler never ran.
    NotHandled,
    /// The caller's deadline passed before the handler ran: dropped unhandled.
    Expired,
}

/// Set, once, when an actor's task panics: read by the callers of the asks it had started
/// and not answered (their result senders go with the task, after the notice is set).
#[derive(Debug, Default)]
pub(crate) struct Notice(OnceLock<String>);

impl Notice {
    /// The panic's text, if the actor's task panicked.
    pub(crate) fn panic(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// The notice of the actor being polled on this thread (created at its first started ask).
pub(crate) fn notice() -> Option<Arc<Notice>> {
    NOTICE.with_borrow_mut(|lent| {
        let (polling, notice) = lent;
        polling.then(|| notice.get_or_insert_with(Default::default).clone())
    })
}

/// Polls an actor's task (`poll`) with its notice lent to this thread, catching a panic
/// (quietly, see [`install_hook`]). On a panic, the notice is set before this returns the
/// panic, so that the callers of the asks in progress, whose result senders go when the task
/// is dropped, learn of it.
pub(crate) fn poll_actor<R>(
    notice: &mut Option<Arc<Notice>>,
    poll: impl FnOnce() -> R,
) -> Result<R, Caught> {
    let outer = NOTICE.replace((true, notice.take()));
    let outcome = catch(poll);
    let (_, mine) = NOTICE.replace(outer);
    if let (Err(caught), Some(mine)) = (&outcome, &mine) {
        let _ = mine.0.set(caught.message.clone());
    }
    *notice = mine;
    outcome
}

thread_local! {
    /// While an actor's task is polled: `true`, and its notice, if it has one yet.
    static NOTICE: RefCell<(bool, Option<Arc<Notice>>)> = const { RefCell::new((false, None)) };
    /// Whether this thread is inside [`catch`].
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// What the hook saw of the last panic caught on this thread.
    static SEEN: RefCell<Option<Seen>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// What the hook records of a caught panic.
struct Seen {
    location: Option<String>,
    backtrace: Option<String>,
}

/// A panic caught by [`catch`].
pub(crate) struct Caught {
    /// The panic's message (its payload, if a string).
    pub(crate) message: String,
    /// Where it happened (`file:line:column`), if known.
    pub(crate) location: Option<String>,
    /// The backtrace, when `RUST_BACKTRACE` enables them.
    pub(crate) backtrace: Option<String>,
}

/// Installs the quiet hook (once per process; the previous hook keeps every other panic).
pub(crate) fn install_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.get() {
                let backtrace = std::backtrace::Backtrace::capture();
                let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
                    .then(|| backtrace.to_string());
                SEEN.set(Some(Seen {
                    location: info.location().map(ToString::to_string),
                    backtrace,
                }));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, catching a panic (quietly, if [`install_hook`] ran).
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Caught> {
    let outer = CATCHING.replace(true);
    let outcome = catch_unwind(AssertUnwindSafe(f));
    CATCHING.set(outer);
    outcome.map_err(|payload| {
        let seen = SEEN.take();
        Caught {
            message: panic_text(payload.as_ref()),
            location: seen.as_ref().and_then(|s| s.location.clone()),
            backtrace: seen.and_then(|s| s.backtrace),
        }
    })
}

/// The panic payload as text.
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_carries_its_message_and_location() {
        install_hook();
        let caught = catch(|| -> u32 { panic!("boom {}", 7) }).err().unwrap();
        assert_eq!(caught.message, "boom 7");
        let location = caught.location.expect("the hook saw where");
        assert!(location.contains("panics.rs"), "{location}");
        assert_eq!(catch(|| 5).ok(), Some(5));
        // Outside `catch`, the flag is off again.
        assert!(!CATCHING.get());
    }
}
