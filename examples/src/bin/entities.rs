//! Keyed entities: shopping carts hosted by three nodes in one process (embedded discovery),
//! their contents kept in a `MemoryStore`.
//!
//! A client node that hosts no carts shows where a few carts live; items are added from
//! different nodes; one node shuts down gracefully while the client keeps adding items, and
//! its shards (with the carts on them) move to the two others; every cart then answers from
//! its new node with all its items.
//!
//! Run it with `cargo run -p actormesh-examples --bin entities`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, AtomicResponse, Context, Handler, MessageResult,
    ResponseActFuture, WrapFuture,
};
use actormesh::prelude::*;
use actormesh::{Entity, EntityConfig, EntityContext, EntityState, MemoryStore};
use serde::{Deserialize, Serialize};

/// The shard count of the carts: the same on every node.
const SHARDS: u32 = 24;
/// The carts of the demo.
const CARTS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];

/// Adds `quantity` of `item`; answers the number of items in the cart, once it is saved.
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "shop.AddItem", result = "Result<u32, String>")]
struct AddItem {
    item: String,
    quantity: u32,
}

/// Answers the cart's contents and the node its activation runs on (a read: safe to retry).
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "shop.View", result = "CartView")]
struct View;
impl Idempotent for View {}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CartView {
    node: String,
    items: BTreeMap<String, u32>,
}

impl CartView {
    fn count(&self) -> u32 {
        self.items.values().sum()
    }
}

/// One shopping cart: the activation of one key.
struct Cart {
    /// The contents, as last saved.
    items: BTreeMap<String, u32>,
    state: EntityState,
    node: String,
}

impl Actor for Cart {
    type Context = Context<Self>;
}

impl Handler<AddItem> for Cart {
    // Atomic: the cart handles nothing else until the save is done, so concurrent additions
    // cannot overwrite each other, and a handoff lets the save finish.
    type Result = AtomicResponse<Self, Result<u32, String>>;

    fn handle(&mut self, add: AddItem, _: &mut Context<Self>) -> Self::Result {
        let mut next = self.items.clone();
        *next.entry(add.item).or_insert(0) += add.quantity;
        let state = self.state.clone();
        let save: ResponseActFuture<Self, Result<u32, String>> = Box::pin(
            async move { state.save(&next).await.map(|()| next) }
                .into_actor(self)
                .map(|saved, cart, _| {
                    // Only a saved change becomes the cart's, and is acknowledged.
                    cart.items = saved.map_err(|e| e.to_string())?;
                    Ok(cart.items.values().sum())
                }),
        );
        AtomicResponse::new(save)
    }
}

impl Handler<View> for Cart {
    type Result = MessageResult<View>;

    fn handle(&mut self, _: View, _: &mut Context<Self>) -> Self::Result {
        MessageResult(CartView {
            node: self.node.clone(),
            items: self.items.clone(),
        })
    }
}

actormesh::remote_actor!(Cart = "shop.Cart" { AddItem, View });

impl Entity for Cart {
    const KIND: &'static str = "carts";

    fn activate(ctx: &mut EntityContext<'_, Self>) -> Self {
        let items = match ctx.state::<BTreeMap<String, u32>>() {
            Ok(saved) => saved.unwrap_or_default(),
            Err(e) => {
                // Not readable by this version: serve nothing rather than overwrite it.
                eprintln!("cart {:?}: unreadable state: {e}", ctx.key_str());
                ctx.stop();
                BTreeMap::new()
            }
        };
        Cart {
            items,
            state: ctx.state_handle(),
            node: ctx.node().id().to_string(),
        }
    }
}

type BoxError = Box<dyn std::error::Error>;

/// Starts a node of the `shop` cluster; with a store, it hosts carts.
async fn start(
    discovery: &MemoryDiscovery,
    id: &str,
    store: Option<&Arc<MemoryStore>>,
) -> Result<Node, Error> {
    let mut builder = Node::builder()
        .cluster("shop")
        .node_id(id)
        .discovery(discovery.clone())
        .ask_timeout(Duration::from_secs(2))
        .shutdown_timeout(Duration::from_secs(3));
    if let Some(store) = store {
        builder =
            builder.entity::<Cart>(EntityConfig::default().shards(SHARDS).store(store.clone()));
    }
    builder.start().await
}

/// Waits (at most 5 s) until every shard of the carts is held by the node it is assigned
/// to; returns how many each node holds.
async fn settled(hosts: &[&Node]) -> Result<String, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let statuses: Vec<_> = hosts
            .iter()
            .filter_map(|n| Some((n.id(), n.entity_status(Cart::KIND)?)))
            .collect();
        let hosted: usize = statuses.iter().map(|(_, s)| s.hosted_here).sum();
        let still = statuses
            .iter()
            .all(|(_, s)| s.in_motion_here == 0 && s.hosted_here == s.assigned_here);
        if hosted == SHARDS as usize && still {
            let held: Vec<String> = statuses
                .iter()
                .map(|(id, s)| format!("{id} {}", s.hosted_here))
                .collect();
            return Ok(held.join(", "));
        }
        if Instant::now() >= deadline {
            return Err(format!("the shards did not settle within 5 s: {statuses:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `{apple: 2, pear: 1}`.
fn show(items: &BTreeMap<String, u32>) -> String {
    let items: Vec<String> = items.iter().map(|(i, n)| format!("{i}: {n}")).collect();
    format!("{{{}}}", items.join(", "))
}

async fn run() -> Result<(), BoxError> {
    let discovery = MemoryDiscovery::new();
    let store = Arc::new(MemoryStore::new());
    let mut hosts = Vec::new();
    for id in ["node-1", "node-2", "node-3"] {
        hosts.push(start(&discovery, id, Some(&store)).await?);
    }
    let client = start(&discovery, "client", None).await?;
    let held = settled(&hosts.iter().collect::<Vec<_>>()).await?;
    println!("1. three nodes host the carts ({SHARDS} shards; {held}); the client hosts none");

    println!("2. items added from different nodes:");
    let fruit = ["apple", "pear", "plum"];
    for (i, key) in CARTS.iter().enumerate() {
        for (j, item) in fruit.iter().enumerate().take(i % 3 + 1) {
            // Each addition from another node: they all reach the one activation.
            let via = &hosts[(i + j) % 3];
            let quantity = (j + 1) as u32;
            let add = AddItem {
                item: item.to_string(),
                quantity,
            };
            via.entity::<Cart>(key).ask(add).await??;
            println!("   {key:<5} <- {quantity} {item} (sent from {})", via.id());
        }
    }

    println!("3. where the carts live (asked from the client):");
    let mut before = BTreeMap::new();
    for key in CARTS {
        let view = client.entity::<Cart>(key).ask(View).await?;
        println!("   {key:<5} on {}: {}", view.node, show(&view.items));
        before.insert(key, view);
    }

    // The node that holds the most of these carts leaves.
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for view in before.values() {
        *per_node.entry(view.node.as_str()).or_default() += 1;
    }
    let (leaving_id, carts_there) = per_node
        .iter()
        .max_by_key(|(node, n)| (**n, std::cmp::Reverse(**node)))
        .map(|(node, n)| (node.to_string(), *n))
        .ok_or("no cart answered")?;
    let index = hosts
        .iter()
        .position(|n| n.id().as_str() == leaving_id)
        .ok_or("the leaving node is not a host")?;
    let leaving = hosts.remove(index);
    println!(
        "4. {leaving_id} (hosting {carts_there} of these carts) shuts down gracefully; meanwhile the client adds a kiwi to every cart"
    );
    let shutdown = {
        let leaving = leaving.clone();
        actix::spawn(async move {
            let started = Instant::now();
            leaving.shutdown().await;
            started.elapsed()
        })
    };
    for key in CARTS {
        let add = AddItem {
            item: "kiwi".into(),
            quantity: 1,
        };
        // A tell: held while the cart's shard moves, then delivered to its new node.
        if let Err(e) = client.entity::<Cart>(key).tell(add) {
            return Err(e.error.into());
        }
    }
    let took = shutdown.await?;
    let held = settled(&hosts.iter().collect::<Vec<_>>()).await?;
    println!("   handed over and gone in {took:.1?}; now {held}");

    println!("5. every cart answers, from its new node if it moved, with all its items:");
    for key in CARTS {
        let cart = client.entity::<Cart>(key);
        let was = &before[key];
        // The kiwi told during the move may still be on its way: read again for up to 2 s.
        let deadline = Instant::now() + Duration::from_secs(2);
        let view = loop {
            // A read is safe to send twice: retried through the move if need be.
            let view = cart.ask_idempotent(View).await?;
            if view.count() == was.count() + 1 || Instant::now() >= deadline {
                break view;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let moved = if view.node == was.node {
            format!("still on {}", view.node)
        } else {
            format!("moved {} -> {}", was.node, view.node)
        };
        println!("   {key:<5} {moved}: {}", show(&view.items));
        let mut expected = was.items.clone();
        expected.insert("kiwi".into(), 1);
        if view.items != expected {
            return Err(format!("cart {key} holds {:?}, not {expected:?}", view.items).into());
        }
        if view.node == leaving_id {
            return Err(format!("cart {key} still answers from {leaving_id}").into());
        }
    }

    let dropped: u64 = hosts.iter().map(|n| n.stats().dropped_total()).sum::<u64>()
        + client.stats().dropped_total()
        + leaving.stats().dropped_total();
    println!("6. shutting down; messages dropped along the way: {dropped}");
    client.shutdown().await;
    for node in hosts {
        node.shutdown().await;
    }
    println!("done");
    Ok(())
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    // Every wait above is bounded; this bounds the whole demo as well.
    match tokio::time::timeout(Duration::from_secs(30), run()).await {
        Ok(done) => done,
        Err(_) => Err("the demo did not finish within 30 s".into()),
    }
}
