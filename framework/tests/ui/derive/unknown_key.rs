use actormesh::RemoteMessage;
use serde::{Deserialize, Serialize};

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(name = "chat.Post", rtype = "u64")]
struct Post;

fn main() {}
