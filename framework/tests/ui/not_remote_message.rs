use actix::{Actor, Context, Handler, Message};
use actormesh::{ActorRef, RemoteMessage};
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Listed;
impl RemoteMessage for Listed {
    const NAME: &'static str = "ui.Listed";
}

// An actix message, but not a remote one.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Local;

struct P;
impl Actor for P {
    type Context = Context<Self>;
}
impl Handler<Listed> for P {
    type Result = ();
    fn handle(&mut self, _: Listed, _: &mut Context<Self>) {}
}
impl Handler<Local> for P {
    type Result = ();
    fn handle(&mut self, _: Local, _: &mut Context<Self>) {}
}

actormesh::remote_actor!(P = "ui.P" { Listed });

async fn send(target: ActorRef<P>) {
    let _ = target.ask(Local).await;
}

fn main() {
    let _ = send;
}
