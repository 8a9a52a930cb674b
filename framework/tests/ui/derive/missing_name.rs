use actormesh::RemoteMessage;
use serde::{Deserialize, Serialize};

#[derive(RemoteMessage, Serialize, Deserialize)]
struct NoAttribute;

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(result = "u64")]
struct NoName;

fn main() {}
