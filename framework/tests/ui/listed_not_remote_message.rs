use actix::{Actor, Context, Handler, Message};

#[derive(Message)]
#[rtype(result = "()")]
struct Local;

struct P;
impl Actor for P {
    type Context = Context<Self>;
}
impl Handler<Local> for P {
    type Result = ();
    fn handle(&mut self, _: Local, _: &mut Context<Self>) {}
}

actormesh::remote_actor!(P = "ui.P" { Local });

fn main() {}
