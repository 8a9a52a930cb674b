use actix::{Actor, Context, Handler, Message};
use actormesh::{ActorRef, RemoteMessage};
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Listed;
impl RemoteMessage for Listed {
    const NAME: &'static str = "ui.Listed";
}

#[derive(Message, Serialize, Deserialize)]
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
impl Handler<NotListed> for P {
    type Result = ();
    fn handle(&mut self, _: NotListed, _: &mut Context<Self>) {}
}

actormesh::remote_actor!(P = "ui.P" { Listed });

async fn send(target: ActorRef<P>) {
    let _ = target.ask(NotListed).await;
    let _ = target.tell(NotListed);
}

fn main() {
    let _ = send;
}
