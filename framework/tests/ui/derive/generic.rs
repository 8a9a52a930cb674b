use actormesh::RemoteMessage;
use serde::{Deserialize, Serialize};

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(name = "store.Put")]
struct Put<T> {
    value: T,
}

fn main() {}
