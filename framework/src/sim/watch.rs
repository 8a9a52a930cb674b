//! What a node does with the items of its watches: the membership view, the campaign and
//! leadership, and (for a leader) the specs and the followed groups, turned into controller
//! events the way `discovery::etcd` turns etcd changes into discovery events.

use std::collections::BTreeMap;

use crate::core::controller::Event;

use super::etcd::{Change, Value, WatchId};
use super::node::{Campaign, Purpose, Watching};
use super::server::Reply;
use super::world::{Inc, World};

impl World {
    /// The first item of a watch: the answer to the request that opened it.
    pub(crate) fn on_opened(&mut self, inc: Inc, req: u64, watch: WatchId, reply: Reply) {
        let Some(node) = self.node_mut(inc) else {
            return self.cancel_watch(watch);
        };
        let Some((_, purpose)) = node.untrack(req) else {
            // The request timed out and was given up (or asked again).
            return self.cancel_watch(watch);
        };
        match (purpose, reply) {
            (Purpose::WatchNodes, Reply::Snapshot(values)) => {
                node.watches.insert(watch, Watching::Nodes);
                let view: BTreeMap<_, _> = values
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::Node { info, .. } => Some((info.id.clone(), info)),
                        _ => None,
                    })
                    .collect();
                let old = std::mem::replace(&mut node.view, view.clone());
                if node.leading.is_some() {
                    for info in view.values().filter(|i| old.get(&i.id) != Some(*i)) {
                        self.feed(inc, Event::MemberUp(info.clone()));
                    }
                    for id in old.keys().filter(|id| !view.contains_key(*id)) {
                        self.feed(inc, Event::MemberDown(id.clone()));
                    }
                }
            }
            (Purpose::Campaign, Reply::Campaign(won)) => {
                node.watches.insert(watch, Watching::Leader);
                match won {
                    Some(token) => self.become_leader(inc, token),
                    None => node.campaign = Campaign::Waiting,
                }
            }
            (Purpose::WatchSpecs(token), Reply::Snapshot(values)) if self.leads(inc, token) => {
                self.watching(inc, watch, Watching::Specs(token));
                for value in values {
                    if let Value::Spec(spec) = value {
                        self.feed(inc, Event::SpecPut(spec));
                    }
                }
            }
            (Purpose::Follow(token, group), Reply::Snapshot(values)) if self.leads(inc, token) => {
                self.watching(inc, watch, Watching::Group(token, group.clone()));
                let members = values
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::Member(m) => Some(m),
                        _ => None,
                    })
                    .collect();
                self.feed(inc, Event::GroupMembers { group, members });
            }
            _ => self.cancel_watch(watch),
        }
    }

    /// Records that `watch` of `inc` is for `what`.
    fn watching(&mut self, inc: Inc, watch: WatchId, what: Watching) {
        if let Some(node) = self.node_mut(inc) {
            node.watches.insert(watch, what);
        }
    }

    /// A change seen by a watch of `inc`.
    pub(crate) fn on_change(&mut self, inc: Inc, watch: WatchId, change: Change) {
        let Some(node) = self.node_mut(inc) else {
            return self.cancel_watch(watch);
        };
        let Some(what) = node.watches.get(&watch).cloned() else {
            return self.cancel_watch(watch);
        };
        match what {
            Watching::Nodes => {
                if let Some(event) = membership_event(change) {
                    match &event {
                        Event::MemberUp(info) => {
                            node.view.insert(info.id.clone(), info.clone());
                        }
                        Event::MemberDown(id) | Event::MemberLeft(id) => {
                            node.view.remove(id);
                        }
                        _ => {}
                    }
                    if node.leading.is_some() {
                        self.feed(inc, event);
                    }
                }
            }
            Watching::Leader => match node.campaign {
                Campaign::Leading => {
                    let token = node.leading.as_ref().map_or(0, |l| l.token);
                    let lost = match change {
                        Change::Delete { .. } => true,
                        Change::Put { create_rev, .. } => create_rev != token,
                    };
                    if lost {
                        self.step_down(inc);
                    }
                }
                Campaign::Waiting if matches!(change, Change::Delete { .. }) => {
                    node.watches.remove(&watch);
                    node.campaign = Campaign::Idle;
                    self.cancel_watch(watch);
                    self.campaign(inc);
                }
                _ => {}
            },
            Watching::Specs(token) if self.leads(inc, token) => {
                let event = match change {
                    Change::Put {
                        old,
                        new: Value::Spec(spec),
                        ..
                    } if old.as_deref() != Some(&Value::Spec(spec.clone())) => {
                        Some(Event::SpecPut(spec))
                    }
                    Change::Delete {
                        old: Value::Spec(spec),
                    } => Some(Event::SpecRemoved(spec.group)),
                    _ => None,
                };
                if let Some(event) = event {
                    self.feed(inc, event);
                }
            }
            Watching::Group(token, group) if self.leads(inc, token) => {
                let event = match change {
                    Change::Put {
                        old,
                        new: Value::Member(member),
                        ..
                    } if old.as_deref() != Some(&Value::Member(member.clone())) => {
                        Some(Event::GroupJoined { group, member })
                    }
                    Change::Delete {
                        old: Value::Member(member),
                    } => Some(Event::GroupLeft { group, member }),
                    _ => None,
                };
                if let Some(event) = event {
                    self.feed(inc, event);
                }
            }
            Watching::Specs(_) | Watching::Group(..) => self.cancel_watch(watch),
        }
    }
}

/// The membership event of a change of a node key (`discovery::etcd::membership_event`): a
/// node that writes `leaving` before its key goes has left; one whose key just goes is down.
fn membership_event(change: Change) -> Option<Event> {
    match change {
        Change::Put {
            old,
            new: Value::Node { info, leaving },
            ..
        } => {
            let new = Value::Node {
                info: info.clone(),
                leaving,
            };
            (!leaving && old.as_deref() != Some(&new)).then_some(Event::MemberUp(info))
        }
        Change::Delete {
            old: Value::Node { info, leaving },
        } => Some(if leaving {
            Event::MemberLeft(info.id)
        } else {
            Event::MemberDown(info.id)
        }),
        _ => None,
    }
}
