//! What makes an actor and its messages remotely addressable.
//!
//! A message that may cross nodes implements [`RemoteMessage`]: it is an actix [`Message`]
//! that serde can (de)serialize, whose result serde can (de)serialize too, and that has a
//! **stable wire name** chosen by you. Renaming or moving the Rust type keeps the cluster
//! working as long as the name stays.
//!
//! An actor becomes addressable through [`ActorRef`](crate::ActorRef) with one
//! [`remote_actor!`](crate::remote_actor) declaration that names the actor type and lists every
//! message it accepts. [`Spawnable`] adds remote spawning by name with serializable arguments.

use std::collections::HashMap;

use actix::dev::{MessageResponse, OneshotSender};
use actix::{Actor, Addr, AsyncContext, Context, Handler, Message};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::core::wire::envelope::decode_payload;
use crate::core::wire::envelope::WireError;
use crate::id::wire_id;
use crate::runtime::decode::with_decode_node;
use crate::runtime::panics::{self, Fate};
use crate::runtime::reply::RemoteReply;
use crate::runtime::{DispatchFn, Inbound};
use crate::trace::{self, TraceContext};
use tokio::sync::oneshot::error::TryRecvError;

/// A value that can cross the wire: serializable, owned and sendable between threads.
///
/// Every type that is serde `Serialize` and `DeserializeOwned`, `Send` and `'static` is one;
/// there is nothing to implement.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross the wire: it is not a `WireValue`",
    label = "not a `WireValue`",
    note = "a `WireValue` is serde `Serialize + DeserializeOwned`, `Send` and `'static`: derive `Serialize` and `Deserialize` for `{Self}`, and make it own its data (no references, no `Rc`)",
    note = "remote messages, their results and the arguments of a `Spawnable` must all be `WireValue`s"
)]
pub trait WireValue: Serialize + DeserializeOwned + Send + 'static {}

// Reported as "not a `WireValue`" rather than as the serde or `Send` bound that fails.
#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned + Send + 'static> WireValue for T {}

/// Fails to compile unless `T` is a [`WireValue`]: the check of the `result` type that
/// `#[derive(RemoteMessage)]` generates, reported where that type is written.
#[doc(hidden)]
pub const fn assert_wire_value<T: WireValue>() {}

/// An actix message that may be sent to an actor on another node.
///
/// Derive it: `#[derive(RemoteMessage)]` implements this trait and actix `Message` from one
/// attribute, `#[remote(name = "...")]` with the wire name, plus `result = "..."` with the type
/// of the reply when it is not `()`. The type must not be generic (a remote message has one wire
/// name).
///
/// ```
/// use actormesh::RemoteMessage;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(RemoteMessage, Serialize, Deserialize)]
/// #[remote(name = "calc.Add", result = "u64")]
/// struct Add(u64);
///
/// #[derive(RemoteMessage, Serialize, Deserialize)]
/// #[remote(name = "calc.Reset")] // answers `()`
/// struct Reset;
/// ```
///
/// The same by hand, with actix's derive:
///
/// ```
/// use actix::Message;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Message, Serialize, Deserialize)]
/// #[rtype(result = "u64")]
/// struct Add(u64);
///
/// impl actormesh::RemoteMessage for Add {
///     const NAME: &'static str = "calc.Add";
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a remote message: it does not implement `RemoteMessage`",
    label = "not a `RemoteMessage`",
    note = "derive it with a stable wire name: `#[derive(RemoteMessage, Serialize, Deserialize)]` and `#[remote(name = \"service.Name\", result = \"...\")]` on `{Self}`",
    note = "or implement `RemoteMessage` by hand with a stable `NAME` (and actix `Message`)"
)]
pub trait RemoteMessage: Message + WireValue
where
    Self::Result: WireValue,
{
    /// The stable wire name. Keep it unchanged for as long as any node of the cluster may
    /// send or receive this message; a dotted `service.Message` style avoids collisions.
    const NAME: &'static str;

    #[doc(hidden)]
    const WIRE_ID: u64 = wire_id(Self::NAME);
}

/// An actor that can be addressed through [`ActorRef`](crate::ActorRef), locally and from other
/// nodes. Implement it with [`remote_actor!`](crate::remote_actor), not by hand.
pub trait RemoteActor: Actor<Context = Context<Self>> + Handler<Stop> {
    /// The stable name of the actor type, checked when a reference or a name is resolved.
    const NAME: &'static str;

    #[doc(hidden)]
    fn declare(declaration: &mut Declaration<Self>);
}

/// An actor type that accepts message `M` through an [`ActorRef`](crate::ActorRef) or a
/// [`GroupRef`](crate::GroupRef): [`remote_actor!`](crate::remote_actor) implements it for every
/// message it lists. Use it as a bound in generic code (`A: Accepts<M>`); do not implement it by
/// hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not accept `{M}` through an `ActorRef` or `GroupRef`",
    label = "`{M}` is not listed in the `remote_actor!` declaration of `{Self}`",
    note = "add `{M}` to the list of messages: `remote_actor!({Self} = \"...\" {{ ..., {M} }})`",
    note = "`{Self}` must also implement `Handler<{M}>`"
)]
pub trait Accepts<M>: RemoteActor
where
    M: RemoteMessage,
    M::Result: WireValue,
{
    /// Queues a wrapped message (with its reply channel and trace position).
    #[doc(hidden)]
    fn deliver(addr: &Addr<Self>, delivery: Deliver<M>);

    /// Queues a bare message: the plain actix path of a `tell` with nothing to trace.
    #[doc(hidden)]
    fn deliver_plain(addr: &Addr<Self>, message: M);
}

/// No message: the message type of an [`Accepts`] implementation that every remote actor has.
///
/// It exists for type inference. With a single implementation of `Accepts<_>` for an actor
/// type, the compiler would infer the message type of a send from it and report a message that
/// is not listed as a bare type mismatch ("expected `Listed`, found `NotListed`"); a second,
/// always present implementation leaves the message type to the argument, so the error is the
/// one of [`Accepts`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub enum Unlisted {}

impl Message for Unlisted {
    type Result = ();
}

#[diagnostic::do_not_recommend]
impl RemoteMessage for Unlisted {
    const NAME: &'static str = "actormesh.Unlisted";
}

#[diagnostic::do_not_recommend]
impl<A: RemoteActor> Accepts<Unlisted> for A {
    fn deliver(_: &Addr<Self>, delivery: Deliver<Unlisted>) {
        match delivery.message {}
    }

    fn deliver_plain(_: &Addr<Self>, message: Unlisted) {
        match message {}
    }
}

/// Declares an actix actor type remotely addressable, with its stable name and every message
/// it accepts through an [`ActorRef`](crate::ActorRef).
///
/// It implements [`RemoteActor`] for the actor and [`Accepts<M>`](Accepts) for every listed
/// message `M`, for which the actor must implement `Handler<M>`. The build fails when two listed
/// messages have the same wire name.
///
/// ```
/// # use actix::{Actor, Context, Handler};
/// # use actormesh::RemoteMessage;
/// # use serde::{Deserialize, Serialize};
/// #[derive(RemoteMessage, Serialize, Deserialize)]
/// #[remote(name = "counter.Get", result = "u64")]
/// struct Get;
///
/// #[derive(RemoteMessage, Serialize, Deserialize)]
/// #[remote(name = "counter.Incr")]
/// struct Incr;
///
/// #[derive(Default)]
/// struct Counter(u64);
/// impl Actor for Counter { type Context = Context<Self>; }
/// impl Handler<Get> for Counter {
///     type Result = u64;
///     fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 { self.0 }
/// }
/// impl Handler<Incr> for Counter {
///     type Result = ();
///     fn handle(&mut self, _: Incr, _: &mut Context<Self>) { self.0 += 1 }
/// }
///
/// actormesh::remote_actor!(Counter = "counter.Counter" { Get, Incr });
/// ```
#[macro_export]
macro_rules! remote_actor {
    ($actor:ty = $name:literal { $($msg:ty),* $(,)? }) => {
        $crate::__distinct_wire_names!($($msg),*);
        impl $crate::RemoteActor for $actor {
            const NAME: &'static str = $name;
            fn declare(declaration: &mut $crate::__private::Declaration<Self>) {
                $( declaration.message::<$msg>(); )*
            }
        }
        impl $crate::__private::actix::Handler<$crate::__private::Stop> for $actor {
            type Result = ();
            fn handle(
                &mut self,
                _: $crate::__private::Stop,
                ctx: &mut $crate::__private::actix::Context<Self>,
            ) {
                $crate::__private::actix::ActorContext::stop(ctx)
            }
        }
        $(
            impl $crate::Accepts<$msg> for $actor {
                fn deliver(
                    addr: &$crate::__private::actix::Addr<Self>,
                    delivery: $crate::__private::Deliver<$msg>,
                ) {
                    addr.do_send(delivery)
                }
                fn deliver_plain(addr: &$crate::__private::actix::Addr<Self>, message: $msg) {
                    addr.do_send(message)
                }
            }
            impl $crate::__private::actix::Handler<$crate::__private::Deliver<$msg>> for $actor {
                type Result = ();
                fn handle(
                    &mut self,
                    delivery: $crate::__private::Deliver<$msg>,
                    ctx: &mut $crate::__private::actix::Context<Self>,
                ) {
                    $crate::__private::handle(self, delivery, ctx)
                }
            }
        )*
    };
}

/// Fails the build when two of the messages listed in one [`remote_actor!`](crate::remote_actor)
/// have the same wire id: the same `NAME` (or two names hashing alike), which would make the
/// receiving node hand one message's bytes to the other's handler. One compile-time assertion per
/// pair, so that the error names both types.
#[doc(hidden)]
#[macro_export]
macro_rules! __distinct_wire_names {
    () => {};
    ($head:ty $(, $tail:ty)*) => {
        $(
            const _: () = ::core::assert!(
                <$head as $crate::RemoteMessage>::WIRE_ID
                    != <$tail as $crate::RemoteMessage>::WIRE_ID,
                ::core::concat!(
                    "remote_actor!: `",
                    ::core::stringify!($head),
                    "` and `",
                    ::core::stringify!($tail),
                    "` have the same wire name (equal `RemoteMessage::NAME`s, or names with the \
                     same hash): give each message its own name",
                ),
            );
        )*
        $crate::__distinct_wire_names!($($tail),*);
    };
}

/// Asks an actor to stop after the messages already in its mailbox (see
/// [`ActorRef::stop`](crate::ActorRef::stop)); handled by code [`remote_actor!`](crate::remote_actor)
/// generates.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Stop;

impl Message for Stop {
    type Result = ();
}

/// A message on its way into an actor, with where its reply goes and its trace position.
///
/// Every message sent through an [`ActorRef`](crate::ActorRef), local or remote, is delivered
/// wrapped in this, so that a panicking handler turns into a typed error for the caller and
/// every handler run is a span that continues the sender's trace.
#[doc(hidden)]
pub struct Deliver<M: Message> {
    pub(crate) message: M,
    pub(crate) reply: Option<ReplyTo<M>>,
    pub(crate) trace: Option<TraceContext>,
    /// When the caller gives up; a message still queued after that is dropped unhandled.
    pub(crate) deadline: Option<std::time::Instant>,
    /// For a remote ask on a node with a lease: the lease it was read under, checked again
    /// before the handler runs (a node declared down while the ask waited does not start it).
    pub(crate) fence: Option<crate::runtime::fence::FenceStamp>,
}

impl<M: Message> std::fmt::Debug for Deliver<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliver")
            .field("reply", &self.reply.is_some())
            .field("trace", &self.trace)
            .finish_non_exhaustive()
    }
}

impl<M: Message> Message for Deliver<M> {
    type Result = ();
}

/// Where the result of an ask goes.
pub(crate) enum ReplyTo<M: Message> {
    /// A caller on this node, waiting on channels.
    Caller(Reply<M>),
    /// A caller on another node: the reply is encoded and queued on its link.
    Remote(RemoteReply),
}

/// Where the result of a local ask goes, and where the caller learns why there is none.
///
/// Dropped before its handler started (the message was dropped in the mailbox of an actor
/// that stopped), it tells the caller that the message was not handled.
pub(crate) struct Reply<M: Message> {
    pub(crate) result: Option<OneshotSender<M::Result>>,
    pub(crate) fate: Option<tokio::sync::oneshot::Sender<Fate>>,
}

impl<M: Message> Reply<M> {
    /// The handler starts: the result sender goes to it, and the caller gets the actor's
    /// panic notice, which tells it of a panic of the actor's task before the result came
    /// (an asynchronous handler's future panicked).
    fn start(mut self) -> Option<OneshotSender<M::Result>> {
        if let (Some(fate), Some(notice)) = (self.fate.take(), panics::notice()) {
            let _ = fate.send(Fate::Started(notice));
        }
        self.result.take()
    }

    /// The handler panicked.
    fn panicked(self, text: String) {
        self.end(Fate::Panicked(text));
    }

    /// The caller's deadline passed before the handler ran.
    fn expired(self) {
        self.end(Fate::Expired);
    }

    fn end(mut self, why: Fate) {
        self.result = None;
        if let Some(fate) = self.fate.take() {
            let _ = fate.send(why);
        }
    }
}

impl<M: Message> Drop for Reply<M> {
    fn drop(&mut self) {
        if self.result.is_some() {
            if let Some(fate) = self.fate.take() {
                let _ = fate.send(Fate::NotHandled);
            }
        }
    }
}

/// Whether this node would record `actormesh.handle` spans (a subscriber wants them).
pub(crate) fn handle_spans_enabled() -> bool {
    tracing::enabled!(tracing::Level::DEBUG)
}

/// Runs the user's handler for a delivered message: in a span, catching a panic.
///
/// A panic stops the actor (its state may be broken) and reaches the caller of an ask as
/// [`Error::HandlerPanicked`](crate::Error::HandlerPanicked). Called by the code that
/// [`remote_actor!`](crate::remote_actor) generates.
#[doc(hidden)]
pub fn handle<A, M>(actor: &mut A, delivery: Deliver<M>, ctx: &mut Context<A>)
where
    A: RemoteActor + Handler<M>,
    M: RemoteMessage,
    M::Result: WireValue,
{
    let Deliver {
        message,
        reply,
        trace,
        deadline,
        fence,
    } = delivery;
    // One clock read for both checks (an ask always has a deadline; a tell has neither).
    let now = deadline.map(|_| std::time::Instant::now());
    if let Some(fence) = fence {
        if !fence.may_start(now.unwrap_or_else(std::time::Instant::now)) {
            tracing::debug!(
                actor_type = A::NAME,
                message = M::NAME,
                "this node's membership was lost or is in doubt; ask refused unhandled"
            );
            if let Some(ReplyTo::Remote(remote)) = reply {
                remote.send::<()>(Err(WireError::NotMember));
            }
            return;
        }
    }
    if deadline.zip(now).is_some_and(|(d, now)| d <= now) {
        tracing::debug!(
            actor_type = A::NAME,
            message = M::NAME,
            "caller gave up before the handler ran; message dropped unhandled"
        );
        match reply {
            Some(ReplyTo::Remote(remote)) => remote.expired(),
            Some(ReplyTo::Caller(r)) => r.expired(),
            None => {}
        }
        return;
    }
    let span = tracing::debug_span!(
        "actormesh.handle",
        actor_type = A::NAME,
        message = M::NAME,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    // The sender's position (from another node, or a local send that carried one), else
    // the running handler's, else a new trace.
    let here =
        (!span.is_disabled()).then(|| trace::continue_trace(&span, trace.or_else(trace::current)));
    let _entered = span.enter();
    let run = || <A as Handler<M>>::handle(actor, message, ctx);
    // Without a trace position (spans disabled) there is no context to set.
    let outcome = match here {
        Some(_) => trace::with_current(here, || panics::catch(run)),
        None => panics::catch(run),
    };
    match outcome {
        Ok(response) => match reply {
            None => response.handle(ctx, None),
            Some(ReplyTo::Caller(r)) => response.handle(ctx, r.start()),
            Some(ReplyTo::Remote(remote)) => {
                let (tx, mut rx) = tokio::sync::oneshot::channel();
                response.handle(ctx, Some(tx));
                match rx.try_recv() {
                    // The usual case, a synchronous handler: reply inline, no task, no timer.
                    Ok(value) => remote.send(Ok(value)),
                    Err(TryRecvError::Closed) => remote.send::<()>(Err(WireError::ActorStopped)),
                    // An asynchronous handler: its future may still panic the actor.
                    Err(TryRecvError::Empty) => remote.send_later(rx, panics::notice(), deadline),
                }
            }
        },
        Err(caught) => {
            let text = caught.message;
            tracing::error!(
                actor_type = A::NAME,
                message = M::NAME,
                panic = %text,
                at = caught.location.as_deref().unwrap_or("unknown"),
                "handler panicked; stopping the actor"
            );
            if let Some(backtrace) = caught.backtrace {
                tracing::debug!(
                    actor_type = A::NAME,
                    message = M::NAME,
                    "backtrace of the panic:\n{backtrace}"
                );
            }
            match reply {
                Some(ReplyTo::Caller(r)) => r.panicked(text),
                Some(ReplyTo::Remote(remote)) => {
                    remote.send::<()>(Err(WireError::HandlerPanicked(text)))
                }
                None => {}
            }
            crate::supervise::mark_failed(crate::supervise::mailbox_key(&ctx.address()));
            actix::ActorContext::stop(ctx);
        }
    }
}

/// The list of messages an actor type accepts remotely, built by
/// [`remote_actor!`](crate::remote_actor).
#[doc(hidden)]
pub struct Declaration<A: RemoteActor> {
    pub(crate) handlers: HashMap<u64, (&'static str, DispatchFn<A>)>,
}

impl<A: RemoteActor> std::fmt::Debug for Declaration<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.handlers.values().map(|(n, _)| *n).collect();
        f.debug_struct("Declaration")
            .field("actor", &A::NAME)
            .field("messages", &names)
            .finish()
    }
}

impl<A: RemoteActor> Declaration<A> {
    pub(crate) fn build() -> Self {
        let mut declaration = Declaration {
            handlers: HashMap::new(),
        };
        A::declare(&mut declaration);
        declaration
    }

    /// Adds a message the actor accepts remotely.
    pub fn message<M>(&mut self) -> &mut Self
    where
        A: Handler<Deliver<M>> + Handler<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        // `remote_actor!` already fails the build on a shared wire id (`__distinct_wire_names!`);
        // this stays for a `RemoteActor::declare` written by hand.
        let previous = self
            .handlers
            .insert(M::WIRE_ID, (M::NAME, dispatch::<A, M>));
        if let Some((name, _)) = previous {
            if name != M::NAME {
                tracing::error!(
                    actor_type = A::NAME,
                    first = name,
                    second = M::NAME,
                    "two message names of one actor hash to the same wire id; rename one"
                );
            }
        }
        self
    }
}

/// The `DispatchFn` of message type `M` for actor type `A`.
fn dispatch<A, M>(addr: &Addr<A>, inbound: Inbound<'_>, payload: &[u8]) -> Result<(), WireError>
where
    A: RemoteActor + Handler<Deliver<M>> + Handler<M>,
    M: RemoteMessage,
    M::Result: WireValue,
{
    let _span = tracing::debug_span!(
        "actormesh.deliver",
        node = %inbound.node.info.id,
        actor = %inbound.actor,
        message = M::NAME,
    )
    .entered();
    let message: M =
        with_decode_node(inbound.node, || decode_payload(payload)).map_err(WireError::Codec)?;
    if !addr.connected() {
        // Stopped or between restarts: the message is not handled.
        return Err(WireError::ActorNotFound);
    }
    match inbound.ask {
        None if !inbound.wrap
            && inbound.trace.is_none()
            && inbound.fence.is_none()
            && !handle_spans_enabled() =>
        {
            addr.do_send(message)
        }
        None => addr.do_send(Deliver {
            message,
            reply: None,
            trace: inbound.trace,
            deadline: None,
            fence: inbound.fence,
        }),
        Some(ask) => {
            let node = inbound.node;
            node.asks_handled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            addr.do_send(Deliver {
                message,
                reply: Some(ReplyTo::Remote(RemoteReply {
                    id: ask.id,
                    outbox: ask.outbox,
                    guard: Some(node.inflight_guard()),
                })),
                trace: inbound.trace,
                deadline: Some(ask.deadline.into_std()),
                fence: inbound.fence.or_else(|| node.fence_stamp(ask.epoch)),
            });
        }
    }
    Ok(())
}
