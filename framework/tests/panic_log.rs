//! A handler panic that the node catches is reported once, readable, in the log: it does not
//! also go through the process's panic hook (which would print it again, with a backtrace per
//! caught panic under `RUST_BACKTRACE=1`). Panics the node does not catch still reach the
//! hook. (One test in its own binary: the panic hook is process-wide.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix::{Actor, Context, Handler, Message};
use actormesh::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u32")]
struct Boom;
impl RemoteMessage for Boom {
    const NAME: &'static str = "panic_log.Boom";
}

struct Fragile;
impl Actor for Fragile {
    type Context = Context<Self>;
}
impl Handler<Boom> for Fragile {
    type Result = u32;
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) -> u32 {
        panic!("fragile cannot take it")
    }
}
actormesh::remote_actor!(Fragile = "panic_log.Fragile" { Boom });

/// The log, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_caught_handler_panic_is_logged_once_and_skips_the_panic_hook() {
    static HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);
    std::panic::set_hook(Box::new(|_| {
        HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
    }));
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    actix::System::new().block_on(async {
        let node = Node::builder().start().await.unwrap();
        let fragile = node.spawn(Fragile);
        match fragile.ask(Boom).await {
            Err(Error::HandlerPanicked { message, .. }) => {
                assert_eq!(message, "fragile cannot take it")
            }
            other => panic!("expected the panic, got {other:?}"),
        }
        node.shutdown().await;
    });
    assert_eq!(
        HOOK_CALLS.load(Ordering::SeqCst),
        0,
        "a caught handler panic does not reach the panic hook"
    );
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("fragile cannot take it"))
        .collect();
    assert_eq!(lines.len(), 1, "one log line for the panic:\n{text}");
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    assert!(lines[0].contains("panic_log.Fragile"), "{}", lines[0]);
    assert!(
        lines[0].contains("panic_log.rs:"),
        "the line says where: {}",
        lines[0]
    );
    // A panic the node does not catch still reaches the hook.
    let _ = std::panic::catch_unwind(|| panic!("not a handler's"));
    assert_eq!(HOOK_CALLS.load(Ordering::SeqCst), 1);
}
