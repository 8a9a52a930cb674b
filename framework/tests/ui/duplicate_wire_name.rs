use actix::{Actor, Context, Handler, Message};
use actormesh::RemoteMessage;
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Post;
impl RemoteMessage for Post {
    const NAME: &'static str = "chat.Post";
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Edit;
impl RemoteMessage for Edit {
    const NAME: &'static str = "chat.Edit";
}

// Copied from `Post`, and the name was not changed.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Delete;
impl RemoteMessage for Delete {
    const NAME: &'static str = "chat.Post";
}

struct Room;
impl Actor for Room {
    type Context = Context<Self>;
}
impl Handler<Post> for Room {
    type Result = ();
    fn handle(&mut self, _: Post, _: &mut Context<Self>) {}
}
impl Handler<Edit> for Room {
    type Result = ();
    fn handle(&mut self, _: Edit, _: &mut Context<Self>) {}
}
impl Handler<Delete> for Room {
    type Result = ();
    fn handle(&mut self, _: Delete, _: &mut Context<Self>) {}
}

actormesh::remote_actor!(Room = "chat.Room" { Post, Edit, Delete });

fn main() {}
