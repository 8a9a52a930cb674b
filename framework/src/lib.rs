//! # actormesh
//!
//! Services written as plain [actix] actors, addressed through one location-transparent
//! reference type, [`ActorRef`], that works the same whether the actor runs in this process or
//! on another node.
//!
//! A tour:
//!
//! - [`RemoteMessage`](trait@RemoteMessage) gives a message a **stable wire name**
//!   (`#[derive(RemoteMessage)]`); [`remote_actor!`] declares which messages an actor accepts
//!   through references ([`Accepts`]); [`Spawnable`] lets other nodes spawn it.
//! - [`Node`] is a member of a cluster: [`Node::builder`] configures it, [`Node::spawn`] starts
//!   actors, [`Node::spawn_on`] starts them on other nodes, [`Node::register_name`] and
//!   [`Node::lookup`] name them cluster-wide, [`Node::shutdown`] leaves cleanly.
//! - [`ActorRef::tell`] is fire-and-forget (at-most-once); [`ActorRef::ask`] waits for the reply
//!   and ends in exactly one of reply, typed [`Error`] or timeout.
//! - [`discovery`] finds the other nodes: [`MemoryDiscovery`] is the embedded default.
//!
//! ```no_run
//! use actix::{Actor, Context, Handler};
//! use actormesh::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(RemoteMessage, Serialize, Deserialize)]
//! #[remote(name = "hello.Greet", result = "String")]
//! struct Greet(String);
//!
//! struct Greeter;
//! impl Actor for Greeter { type Context = Context<Self>; }
//! impl Handler<Greet> for Greeter {
//!     type Result = String;
//!     fn handle(&mut self, msg: Greet, _: &mut Context<Self>) -> String {
//!         format!("hello, {}", msg.0)
//!     }
//! }
//! actormesh::remote_actor!(Greeter = "hello.Greeter" { Greet });
//!
//! #[actix::main]
//! async fn main() -> Result<(), actormesh::Error> {
//!     let discovery = MemoryDiscovery::new();
//!     let a = Node::builder().discovery(discovery.clone()).start().await?;
//!     let b = Node::builder().discovery(discovery).start().await?;
//!     let greeter = a.spawn(Greeter);
//!     a.register_name("greeter", &greeter).await?;
//!     let remote = b.lookup::<Greeter>("greeter").await?; // a reference from node b to node a
//!     println!("{}", remote.ask(Greet("world".into())).await?);
//!     b.shutdown().await;
//!     a.shutdown().await;
//!     Ok(())
//! }
//! ```

// Layers, top to bottom (imports point down only; `python3 ../shared/tools/rs_cycles.py
// framework/src` checks that no file imports a file that imports it back; the test-only
// `sim/` still has one circle, see ARCHITECTURE.md):
//
//   public API   actor_ref.rs, group/, node/, message.rs, supervise.rs
//   runtime      runtime/: the node's actor table, inbound requests, orders, membership view,
//                load reports, the controller's shell, shutdown
//   I/O below    transport/ (links; reaches the runtime through `transport::server::Acceptor`),
//                discovery/ (the `Discovery` trait, memory and etcd backends)
//   core         core/: the I/O-free data model and decisions (wire, balance, placement,
//                controller, views, health); id.rs, error.rs, stats.rs, trace.rs are leaves
mod actor_ref;
mod admin;
mod context;
mod core;
#[cfg(feature = "dev-certs")]
mod devcerts;
pub mod discovery;
mod entity;
mod error;
mod group;
mod id;
mod message;
pub mod metrics;
mod node;
mod ratelog;
mod runtime;
#[cfg(test)]
mod sim;
mod stats;
pub mod store;
pub mod supervise;
pub mod trace;
mod transport;

/// For fuzzing only (`tests/fuzz_wire.rs`): the frame decoder's entry points. Not part of the API.
#[doc(hidden)]
pub use crate::core::wire::fuzz as __fuzz;

pub use crate::core::status::{Blocked, GroupStatus};
pub use crate::core::terminated::{Terminated, TerminationReason};
pub use crate::core::{balance, controller, placement};
pub use actor_ref::ActorRef;
/// Derives [`RemoteMessage`](trait@RemoteMessage) and actix `Message` from
/// `#[remote(name = "...", result = "...")]`; see the trait.
pub use actormesh_macros::RemoteMessage;
pub use context::{SpawnContext, Spawnable};
#[cfg(feature = "dev-certs")]
pub use devcerts::{DevCa, NodeCert};
pub use discovery::{
    Autoscale, Discovery, GroupEvent, GroupMember, GroupSpec, Leadership, LoadReport,
    MembershipEvent, MemoryDiscovery, NodeInfo, PlacementPolicy, SpecEvent,
};
pub use entity::{Entity, EntityConfig, EntityContext, EntityRef, EntityState, EntityStatus};
pub use error::{Error, Result, TellError};
pub use group::{Ejection, GroupConfig, GroupRef, Idempotent, Saturation};
pub use id::{ActorId, NodeId};
pub use message::{Accepts, RemoteActor, RemoteMessage, WireValue};
pub use node::{Node, NodeBuilder, StopCause};
pub use stats::{DropReason, StatsSnapshot};
pub use store::{MemoryStore, StateStore};
pub use supervise::{Restart, Supervision};
pub use transport::tls::LinkTls;

/// The names most programs need: `use actormesh::prelude::*;`.
pub mod prelude {
    pub use crate::{
        ActorRef, Error, GroupConfig, GroupRef, Idempotent, MemoryDiscovery, Node, NodeId,
        RemoteActor, RemoteMessage, SpawnContext, Spawnable, Terminated,
    };
}

/// What the [`remote_actor!`] macro and `#[derive(RemoteMessage)]` expand to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::message::{
        assert_wire_value, handle, Declaration, Deliver, RemoteMessage, Stop, WireValue,
    };
    pub use actix;
}
