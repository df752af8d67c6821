//! Request batching: concurrent requests for one model version are merged into one Arrow
//! batch, evaluated once, and each gets its own rows back (TensorFlow Serving's batching).
//!
//! A worker takes the first waiting request, then every request already queued, and
//! waits up to the batch window for more, until the batch holds `max_batch` rows. With a
//! window of zero nothing waits: requests merge only when they queue up behind a batch
//! being evaluated, so a lone request pays no delay. A merged batch that fails (one
//! request's bad row) is evaluated again request by request, so the error reaches only
//! the request at fault.

use std::sync::Arc;
use std::time::Duration;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use ember_mllib::serving::Predictor;
use ember_mllib::MlError;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::metrics::Metrics;

/// How requests are merged.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// How long a batch waits for more requests after its first.
    pub window: Duration,
    /// Most rows in a batch; 1 turns batching off (each request is evaluated alone).
    pub max_rows: usize,
    /// Batches evaluated at once.
    pub workers: usize,
}

struct Job {
    batch: RecordBatch,
    reply: oneshot::Sender<Result<RecordBatch, MlError>>,
}

/// Evaluates requests for one model version, merging concurrent ones.
#[derive(Debug)]
pub struct Batcher {
    predictor: Arc<Predictor>,
    queue: Option<mpsc::UnboundedSender<Job>>,
    metrics: Arc<Metrics>,
    model: String,
}

impl Batcher {
    /// Starts the workers (none when batching is off).
    pub fn new(
        predictor: Arc<Predictor>,
        config: BatchConfig,
        metrics: Arc<Metrics>,
        model: String,
    ) -> Self {
        if config.max_rows <= 1 {
            return Self {
                predictor,
                queue: None,
                metrics,
                model,
            };
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..config.workers.max(1) {
            let worker = Worker {
                predictor: Arc::clone(&predictor),
                queue: Arc::clone(&rx),
                config,
                metrics: Arc::clone(&metrics),
                model: model.clone(),
            };
            tokio::spawn(worker.run());
        }
        Self {
            predictor,
            queue: Some(tx),
            metrics,
            model,
        }
    }

    /// The prediction of every row of `batch`.
    ///
    /// # Errors
    ///
    /// As [`Predictor::predict`].
    pub async fn predict(&self, batch: RecordBatch) -> Result<RecordBatch, MlError> {
        let Some(queue) = &self.queue else {
            self.metrics.batch(&self.model, batch.num_rows());
            return self.predictor.predict(&batch).await;
        };
        let (reply, answer) = oneshot::channel();
        queue
            .send(Job { batch, reply })
            .map_err(|_| MlError::data("the model version was unloaded"))?;
        answer
            .await
            .map_err(|_| MlError::data("the model version was unloaded"))?
    }
}

struct Worker {
    predictor: Arc<Predictor>,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    config: BatchConfig,
    metrics: Arc<Metrics>,
    model: String,
}

impl Worker {
    async fn run(self) {
        while let Some(jobs) = self.gather().await {
            self.evaluate(jobs).await;
        }
    }

    /// The next batch of jobs; `None` once the batcher is gone.
    async fn gather(&self) -> Option<Vec<Job>> {
        let mut queue = self.queue.lock().await;
        let first = queue.recv().await?;
        let deadline = tokio::time::Instant::now() + self.config.window;
        let mut rows = first.batch.num_rows();
        let mut jobs = vec![first];
        while rows < self.config.max_rows {
            let next = match queue.try_recv() {
                Ok(job) => job,
                Err(_) if self.config.window.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(deadline, queue.recv()).await {
                    Ok(Some(job)) => job,
                    _ => break,
                },
            };
            rows += next.batch.num_rows();
            jobs.push(next);
        }
        Some(jobs)
    }

    async fn evaluate(&self, jobs: Vec<Job>) {
        let rows: usize = jobs.iter().map(|j| j.batch.num_rows()).sum();
        if jobs.len() > 1 {
            let schema = jobs[0].batch.schema();
            let merged =
                concat_batches(&schema, jobs.iter().map(|j| &j.batch)).map_err(MlError::from);
            if let Ok(merged) = merged {
                if let Ok(out) = self.predictor.predict(&merged).await {
                    // Counted once it answered: a failed merge is counted as the
                    // evaluations of its requests below.
                    self.metrics.batch(&self.model, rows);
                    let mut offset = 0;
                    for job in jobs {
                        let n = job.batch.num_rows();
                        let _ = job.reply.send(Ok(out.slice(offset, n)));
                        offset += n;
                    }
                    return;
                }
            }
        }
        for job in jobs {
            self.metrics.batch(&self.model, job.batch.num_rows());
            let answer = self.predictor.predict(&job.batch).await;
            let _ = job.reply.send(answer);
        }
    }
}
