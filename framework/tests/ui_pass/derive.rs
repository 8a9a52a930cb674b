//! The derive compiles without `actix` in scope, with and without `result`, and its output
//! is what the hand-written form would be.
use actormesh::RemoteMessage;
use serde::{Deserialize, Serialize};

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(name = "chat.Post", result = "u64")]
struct Post {
    text: String,
}

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(name = "chat.Clear")]
struct Clear;

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(result = Vec<String>, name = "chat.History")]
enum History {
    All,
    Last(u32),
}

#[derive(RemoteMessage, Serialize, Deserialize)]
#[remote(name = "chat.Ping", result = "Result<(), String>")]
struct Ping
where
    u8: Copy;

fn result_of<M: actormesh::__private::actix::Message<Result = R>, R>() {}

fn main() {
    assert_eq!(<Post as RemoteMessage>::NAME, "chat.Post");
    assert_eq!(<Clear as RemoteMessage>::NAME, "chat.Clear");
    assert_eq!(<History as RemoteMessage>::NAME, "chat.History");
    assert_eq!(<Ping as RemoteMessage>::NAME, "chat.Ping");
    result_of::<Post, u64>();
    result_of::<Clear, ()>();
    result_of::<History, Vec<String>>();
    result_of::<Ping, Result<(), String>>();
    let _ = (Post { text: String::new() }, History::All, History::Last(1));
}
