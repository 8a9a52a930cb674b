//! The thread that keeps a node's etcd lease alive: a tokio runtime of its own, so that the
//! node's actors cannot starve it. A handler that keeps the node's thread busy for longer than
//! the lease TTL (a long synchronous computation, a flood of input) must not get the node
//! declared `Down`: the keep-alive, the etcd connection and the watches run here, and only
//! their results (events, the lease deadline) reach the node's thread.

use std::future::Future;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A current-thread runtime on a thread of its own; stopped (its tasks cancelled) on drop.
#[derive(Debug)]
pub(super) struct IoThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl IoThread {
    /// Starts the thread.
    pub(super) fn start() -> std::io::Result<Self> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("actormesh-etcd".to_owned())
            .spawn(move || {
                // Until the discovery goes; dropping the runtime then cancels its tasks.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(IoThread {
            handle,
            stop: Some(stop),
        })
    }

    /// Runs `task` on the thread.
    pub(super) fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
