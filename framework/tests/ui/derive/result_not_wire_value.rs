use actormesh::RemoteMessage;
use serde::{Deserialize, Serialize};

// Not serializable.
struct Handle(std::fs::File);

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(name = "files.Open", result = "Handle")]
struct Open;

fn main() {}
