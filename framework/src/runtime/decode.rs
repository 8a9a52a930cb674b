//! The node that resolves references found inside a payload while it is decoded.
//!
//! An [`ActorRef`](crate::ActorRef) inside a message is decoded into a reference usable from
//! the receiving node; serde gives the deserializer no context, so the decoding node is set
//! for the duration of one decode in a thread-local.

use std::cell::RefCell;
use std::sync::Arc;

use super::NodeShared;

thread_local! {
    static DECODE_NODE: RefCell<Option<Arc<NodeShared>>> = const { RefCell::new(None) };
}

/// Runs `f` (a decode) with `node` as the node that resolves any `ActorRef` inside.
pub(crate) fn with_decode_node<R>(node: &Arc<NodeShared>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<NodeShared>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            DECODE_NODE.with(|n| *n.borrow_mut() = previous);
        }
    }
    let previous = DECODE_NODE.with(|n| n.borrow_mut().replace(node.clone()));
    let _restore = Restore(previous);
    f()
}

/// The node decoding the current payload, if any.
pub(crate) fn decode_node() -> Option<Arc<NodeShared>> {
    DECODE_NODE.with(|n| n.borrow().clone())
}
