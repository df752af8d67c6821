//! One ExecutePlan operation: the task producing its responses, the responses a client has
//! not yet released (so a broken stream can be reattached and resumed), and its
//! interruption.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;

use super::proto::ExecutePlanResponse;

/// How many responses the producer may run ahead of the client before it waits.
const AHEAD: usize = 16;

/// How long a producer waits for a client that reads nothing before it gives the
/// operation up (a reattachable operation whose client never came back).
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Default)]
struct State {
    /// Responses not yet released, oldest first.
    responses: VecDeque<ExecutePlanResponse>,
    /// Index (in the operation's whole response sequence) of `responses[0]`.
    first: usize,
    /// How many responses have been handed to a client stream.
    delivered: usize,
    /// Set once the producer has finished: with the error the client gets, if it failed.
    done: Option<Result<(), tonic::Status>>,
}

/// An operation of a session, addressable by its id for reattach, release and interrupt.
pub struct Operation {
    /// The operation id (chosen by the client, or by the server).
    pub id: String,
    /// Tags the client attached (`spark.addTag`), for `interruptTag`.
    pub tags: Vec<String>,
    /// Whether the client may reattach: responses are kept until it releases them.
    pub reattachable: bool,
    state: Mutex<State>,
    changed: tokio::sync::Notify,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

/// The responses of an operation as a gRPC stream.
pub type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<ExecutePlanResponse, tonic::Status>> + Send>>;

impl Operation {
    /// A new operation, not yet started.
    pub fn new(id: String, tags: Vec<String>, reattachable: bool) -> Arc<Self> {
        Arc::new(Self {
            id,
            tags,
            reattachable,
            state: Mutex::new(State::default()),
            changed: tokio::sync::Notify::new(),
            task: Mutex::new(None),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers the task producing the responses, so an interrupt can stop it.
    pub fn set_task(&self, handle: tokio::task::AbortHandle) {
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }

    /// Adds a response, waiting while the client is far behind. Returns `false` when the
    /// operation is over (interrupted, or abandoned by its client): the producer stops.
    pub async fn push(&self, response: ExecutePlanResponse) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut s = self.state();
                if s.done.is_some() {
                    return false;
                }
                let end = s.first + s.responses.len();
                if end < s.delivered + AHEAD {
                    s.responses.push_back(response);
                    drop(s);
                    self.changed.notify_waiters();
                    return true;
                }
            }
            if tokio::time::timeout(ABANDONED_AFTER, changed)
                .await
                .is_err()
            {
                tracing::warn!(operation = %self.id, "no client read the operation's results; giving it up");
                self.interrupt();
                return false;
            }
        }
    }

    /// Marks the operation finished, successfully or with the error the client gets.
    pub fn finish(&self, result: Result<(), tonic::Status>) {
        let mut s = self.state();
        if s.done.is_none() {
            s.done = Some(result);
        }
        drop(s);
        self.changed.notify_waiters();
    }

    /// Whether the producer has finished.
    pub fn is_done(&self) -> bool {
        self.state().done.is_some()
    }

    /// Stops the operation: its task is aborted (which cancels its job) and a client
    /// still reading gets OPERATION_CANCELED. Returns whether it was still running.
    pub fn interrupt(&self) -> bool {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
        let running = !self.is_done();
        let error = super::error::ConnectError::Cancelled(self.id.clone()).to_status();
        self.finish(Err(error));
        running
    }

    /// Releases the responses up to and including `response_id`.
    pub fn release_until(&self, response_id: &str) {
        let mut s = self.state();
        if let Some(pos) = s
            .responses
            .iter()
            .position(|r| r.response_id == response_id)
        {
            s.responses.drain(..=pos);
            s.first += pos + 1;
        }
        drop(s);
        self.changed.notify_waiters();
    }

    /// The index of the response after `response_id` (the first response if `None`), or
    /// `None` if that response was released already.
    pub fn position_after(&self, response_id: Option<&str>) -> Option<usize> {
        let s = self.state();
        match response_id {
            None => (s.first == 0).then_some(0),
            Some(id) => s
                .responses
                .iter()
                .position(|r| r.response_id == id)
                .map(|p| s.first + p + 1),
        }
    }

    /// The responses from index `from` on, as they are produced, ending after the last
    /// (or with the operation's error).
    pub fn stream_from(self: &Arc<Self>, from: usize) -> ResponseStream {
        let op = Arc::clone(self);
        let guard = ClientGone(Arc::clone(self));
        Box::pin(futures::stream::unfold(
            (op, from, false, guard),
            |(op, next, ended, guard)| async move {
                if ended {
                    return None;
                }
                loop {
                    let changed = op.changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    {
                        let mut s = op.state();
                        if next < s.first {
                            let e = tonic::Status::failed_precondition(format!(
                                "INVALID_CURSOR.POSITION_NOT_AVAILABLE: response {next} of \
                                 operation {} was released",
                                op.id
                            ));
                            return Some((Err(e), (Arc::clone(&op), next, true, guard)));
                        }
                        if next < s.first + s.responses.len() {
                            let i = next - s.first;
                            let response = if op.reattachable {
                                s.responses[i].clone()
                            } else {
                                // Nobody can come back for it: hand it over.
                                s.first += 1;
                                s.responses.pop_front().unwrap_or_default()
                            };
                            s.delivered = s.delivered.max(next + 1);
                            drop(s);
                            op.changed.notify_waiters();
                            return Some((Ok(response), (Arc::clone(&op), next + 1, false, guard)));
                        }
                        match &s.done {
                            Some(Ok(())) => return None,
                            Some(Err(e)) => {
                                let e = e.clone();
                                return Some((Err(e), (Arc::clone(&op), next, true, guard)));
                            }
                            None => {}
                        }
                    }
                    changed.await;
                }
            },
        ))
    }
}

/// Held by a client's response stream: when a client that cannot reattach goes away
/// before the end, its operation (and job) is stopped.
struct ClientGone(Arc<Operation>);

impl Drop for ClientGone {
    fn drop(&mut self) {
        if !self.0.reattachable && !self.0.is_done() {
            self.0.interrupt();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn response(id: &str) -> ExecutePlanResponse {
        ExecutePlanResponse {
            response_id: id.to_string(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_reattached_stream_resumes_after_the_last_response_seen() {
        let op = Operation::new("op".into(), vec![], true);
        for id in ["a", "b", "c"] {
            assert!(op.push(response(id)).await);
        }
        op.finish(Ok(()));
        let first: Vec<_> = op.stream_from(0).take(1).collect().await;
        assert_eq!(first[0].as_ref().unwrap().response_id, "a");
        let from = op.position_after(Some("a")).unwrap();
        let rest: Vec<String> = op
            .stream_from(from)
            .map(|r| r.unwrap().response_id)
            .collect()
            .await;
        assert_eq!(rest, vec!["b", "c"]);
        op.release_until("b");
        assert_eq!(op.position_after(Some("a")), None);
        let e = op.stream_from(0).next().await.unwrap().unwrap_err();
        assert!(e.message().contains("released"), "{e}");
    }

    #[tokio::test]
    async fn an_interrupted_operation_ends_its_stream_with_cancellation() {
        let op = Operation::new("op".into(), vec!["t".into()], false);
        let handle = tokio::spawn(std::future::pending::<()>());
        op.set_task(handle.abort_handle());
        assert!(op.interrupt());
        assert!(handle.await.unwrap_err().is_cancelled());
        let e = op.stream_from(0).next().await.unwrap().unwrap_err();
        assert!(e.message().contains("OPERATION_CANCELED"), "{e}");
        assert!(!op.interrupt());
        assert!(
            !op.push(response("late")).await,
            "an interrupted producer stops"
        );
    }

    #[tokio::test]
    async fn a_client_that_goes_away_stops_its_operation() {
        let op = Operation::new("op".into(), vec![], false);
        assert!(op.push(response("a")).await);
        let mut stream = op.stream_from(0);
        assert!(stream.next().await.unwrap().is_ok());
        drop(stream);
        assert!(op.is_done());
        let kept = Operation::new("kept".into(), vec![], true);
        drop(kept.stream_from(0));
        assert!(
            !kept.is_done(),
            "a reattachable operation waits for its client"
        );
    }
}
