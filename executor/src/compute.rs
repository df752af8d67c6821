//! Compute runtime: the tokio runtime that runs tasks, apart from the one that serves RPCs,
//! so that heartbeats and block fetches are answered while every core computes.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// A multi-threaded runtime with one worker per executor core.
#[derive(Debug)]
pub(crate) struct ComputeRuntime {
    runtime: Option<Runtime>,
}

/// Aborts the spawned task when dropped, so a task whose caller went away stops.
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> AbortOnDrop<T> {
    /// Asks the task to stop at its next await point. Awaiting the handle afterwards
    /// returns once the task is gone (or with its output, when it finished first).
    pub(crate) fn abort(&self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl ComputeRuntime {
    /// A runtime with `cores` worker threads.
    pub(crate) fn try_new(cores: usize) -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(cores.max(1))
            .thread_name("ember-compute")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Runs `future` on the compute runtime; dropping the returned handle aborts it.
    pub(crate) fn spawn<F>(&self, future: F) -> AbortOnDrop<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // The runtime is only taken out in `drop`, so it is always present here.
        let runtime = self
            .runtime
            .as_ref()
            .expect("compute runtime present until drop");
        AbortOnDrop(runtime.spawn(future))
    }
}

impl Drop for ComputeRuntime {
    fn drop(&mut self) {
        // Dropping a runtime from inside another one panics; shut it down without waiting.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
