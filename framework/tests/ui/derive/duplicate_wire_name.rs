use actix::{Actor, Context, Handler};
use actormesh::RemoteMessage;
use serde::{Deserialize, Serialize};

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(name = "chat.Post", result = "u64")]
struct Post;

// Copied from `Post`, and the name was not changed.
#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(name = "chat.Post")]
struct Delete;

struct Room;
impl Actor for Room {
    type Context = Context<Self>;
}
impl Handler<Post> for Room {
    type Result = u64;
    fn handle(&mut self, _: Post, _: &mut Context<Self>) -> u64 {
        0
    }
}
impl Handler<Delete> for Room {
    type Result = ();
    fn handle(&mut self, _: Delete, _: &mut Context<Self>) {}
}

actormesh::remote_actor!(Room = "chat.Room" { Post, Delete });

fn main() {}
