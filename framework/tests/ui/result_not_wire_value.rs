use actix::Message;
use actormesh::RemoteMessage;
use serde::{Deserialize, Serialize};

// Not serializable.
struct Handle(std::fs::File);

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Handle")]
struct Open;
impl RemoteMessage for Open {
    const NAME: &'static str = "ui.Open";
}

fn main() {}
