use actormesh::RemoteMessage;
use serde::{Deserialize, Serialize};

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote = "chat.Post"]
struct NotAList;

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(name)]
struct NoValue;

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(name = chat.Post)]
struct NameNotAString;

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(name = "chat.Post", result = "Vec<")]
struct ResultNotAType;

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(name = "chat.Post", name = "chat.Post2")]
struct NameTwice;

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(name = "")]
struct EmptyName;

fn main() {}
