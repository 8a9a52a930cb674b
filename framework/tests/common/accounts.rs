//! The `Account` entity of the entity tests, and the journal its activations write.

use std::collections::BTreeMap;
use std::sync::Mutex;

use actix::prelude::*;
use actormesh::prelude::*;
use actormesh::{Entity, EntityContext, EntityState};
use serde::{Deserialize, Serialize};

/// What the accounts did, written by the accounts themselves: (key, node, event).
#[derive(Default)]
pub struct Journal(Mutex<Vec<(String, String, &'static str)>>);

impl Journal {
    pub fn note(&self, key: &str, node: &str, what: &'static str) {
        self.0
            .lock()
            .unwrap()
            .push((key.to_owned(), node.to_owned(), what));
    }

    /// For each key with `prefix`: the number of activations that were live at once, at
    /// most (an activation is live from its "start" to its "stop").
    pub fn max_live(&self, prefix: &str) -> BTreeMap<String, usize> {
        let mut live: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (key, _, what) in self.0.lock().unwrap().iter() {
            if !key.starts_with(prefix) {
                continue;
            }
            let entry = live.entry(key.clone()).or_default();
            match *what {
                "start" => {
                    entry.0 += 1;
                    entry.1 = entry.1.max(entry.0);
                }
                "stop" => entry.0 = entry.0.saturating_sub(1),
                _ => {}
            }
        }
        live.into_iter().map(|(k, (_, max))| (k, max)).collect()
    }

    pub fn count(&self, prefix: &str, what: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _, w)| k.starts_with(prefix) && *w == what)
            .count()
    }
}

pub static JOURNAL: std::sync::LazyLock<Journal> = std::sync::LazyLock::new(Journal::default);

/// A bank account: its balance is saved before a deposit is acknowledged.
pub struct Account {
    key: String,
    node: String,
    balance: u64,
    state: EntityState,
}

impl Actor for Account {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        JOURNAL.note(&self.key, &self.node, "start");
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        JOURNAL.note(&self.key, &self.node, "stop");
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "test.Deposit", result = "Result<u64, String>")]
pub struct Deposit(pub u64);

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "test.Balance", result = "u64")]
pub struct Balance;

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "test.Where", result = "String")]
pub struct Where;

/// A tell: adds without saving.
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "test.Credit", result = "()")]
pub struct Credit(pub u64);

impl Handler<Deposit> for Account {
    // Atomic: nothing else is handled until the save answered (no lost update).
    type Result = AtomicResponse<Self, Result<u64, String>>;

    fn handle(&mut self, Deposit(n): Deposit, _: &mut Context<Self>) -> Self::Result {
        let next = self.balance + n;
        let state = self.state.clone();
        AtomicResponse::new(Box::pin(
            async move { state.save(&next).await.map(|()| next) }
                .into_actor(self)
                .map(|saved, act, _| {
                    let next = saved.map_err(|e| e.to_string())?;
                    act.balance = next;
                    Ok(next)
                }),
        ))
    }
}

impl Handler<Balance> for Account {
    type Result = u64;
    fn handle(&mut self, _: Balance, _: &mut Context<Self>) -> u64 {
        self.balance
    }
}

impl Handler<Where> for Account {
    type Result = String;
    fn handle(&mut self, _: Where, _: &mut Context<Self>) -> String {
        self.node.clone()
    }
}

impl Handler<Credit> for Account {
    type Result = ();
    fn handle(&mut self, Credit(n): Credit, _: &mut Context<Self>) {
        self.balance += n;
        JOURNAL.note(&self.key, &self.node, "credit");
    }
}

actormesh::remote_actor!(Account = "test.Account" { Deposit, Balance, Where, Credit });

impl Entity for Account {
    const KIND: &'static str = "accounts";

    fn activate(ctx: &mut EntityContext<'_, Self>) -> Self {
        Account {
            key: ctx.key_str().unwrap_or("?").to_owned(),
            node: ctx.node().id().to_string(),
            balance: ctx.state::<u64>().ok().flatten().unwrap_or(0),
            state: ctx.state_handle(),
        }
    }
}

/// Waits until `nodes` hold every one of the accounts' `shards`, each its balanced share
/// (`shards / n` rounded down or up), with nothing in motion.
pub async fn settled(nodes: &[&actormesh::Node], shards: usize) {
    super::eventually_now(
        "every shard hosted by its assignee, balanced",
        std::time::Duration::from_secs(20),
        || {
            let statuses: Vec<_> = nodes.iter().map(|n| n.entity_status("accounts")).collect();
            let (low, high) = (shards / nodes.len(), shards.div_ceil(nodes.len()));
            let hosted: usize = statuses.iter().flatten().map(|s| s.hosted_here).sum();
            let done = hosted == shards
                && statuses.iter().all(|s| {
                    s.is_some_and(|s| {
                        s.shards as usize == shards
                            && s.in_motion_here == 0
                            && s.hosted_here == s.assigned_here
                            && (low..=high).contains(&s.assigned_here)
                    })
                });
            if done {
                Ok(())
            } else {
                Err(statuses)
            }
        },
    )
    .await;
}
