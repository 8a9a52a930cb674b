use actix::{Actor, Context, Handler, Message};
use actormesh::{ActorRef, GroupRef, RemoteMessage};
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Listed;
impl RemoteMessage for Listed {
    const NAME: &'static str = "ui.Listed";
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct AlsoListed;
impl RemoteMessage for AlsoListed {
    const NAME: &'static str = "ui.AlsoListed";
}

#[derive(Message, Serialize, Deserialize, Clone)]
#[rtype(result = "()")]
struct NotListed;
impl RemoteMessage for NotListed {
    const NAME: &'static str = "ui.NotListed";
}

struct P;
impl Actor for P {
    type Context = Context<Self>;
}
impl Handler<Listed> for P {
    type Result = ();
    fn handle(&mut self, _: Listed, _: &mut Context<Self>) {}
}
impl Handler<AlsoListed> for P {
    type Result = u64;
    fn handle(&mut self, _: AlsoListed, _: &mut Context<Self>) -> u64 {
        0
    }
}
impl Handler<NotListed> for P {
    type Result = ();
    fn handle(&mut self, _: NotListed, _: &mut Context<Self>) {}
}

actormesh::remote_actor!(P = "ui.P" { Listed, AlsoListed });

async fn send(target: ActorRef<P>, group: GroupRef<P>) {
    let _ = target.ask(NotListed).await;
    let _ = target.tell(NotListed);
    let _ = group.ask(NotListed).await;
    let _ = group.broadcast(NotListed);
}

fn main() {
    let _ = send;
}
