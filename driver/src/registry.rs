//! Executor registry: the published view of the executors (address, cores, liveness, last
//! heartbeat) that jobs and the driver's own block reads consult. Only the scheduler loop
//! writes it; it decides nothing.

use std::time::Duration;

use dashmap::DashMap;
use ember_engine::ExecutorId;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Whether an executor can be given work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorState {
    /// Registered and heartbeating.
    Alive,
    /// Missed its heartbeats or failed an RPC: its blocks are gone and it gets no tasks.
    Lost,
}

/// What the driver knows of one executor.
#[derive(Debug, Clone)]
pub struct ExecutorInfo {
    /// Its id.
    pub id: ExecutorId,
    /// `host:port` of its ExecutorService.
    pub address: String,
    /// Task slots.
    pub cores: u32,
    /// Block manager limit.
    pub memory_bytes: u64,
    /// Bytes its block manager held at the last heartbeat.
    pub used_bytes: u64,
    /// Its process id (for local clusters and diagnostics).
    pub pid: u32,
    /// When it was last heard from.
    pub last_heartbeat: Instant,
    /// Whether it can take work.
    pub state: ExecutorState,
    /// What its mllib kernels run on (`cpu`, or `gpu: <adapter>`).
    pub device: String,
}

/// The executors known to the driver.
#[derive(Debug, Default)]
pub struct ExecutorRegistry {
    executors: DashMap<ExecutorId, ExecutorInfo>,
    changed: Notify,
}

impl ExecutorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or revives) an executor.
    pub fn register(&self, info: ExecutorInfo) {
        tracing::info!(executor = %info.id, address = %info.address, "executor registered");
        self.executors.insert(info.id.clone(), info);
        self.changed.notify_waiters();
    }

    /// Records a heartbeat; returns false when the executor is unknown or was declared lost
    /// (it must register again).
    pub fn heartbeat(&self, id: &ExecutorId, used_bytes: u64) -> bool {
        match self.executors.get_mut(id) {
            Some(mut e) if e.state == ExecutorState::Alive => {
                e.last_heartbeat = Instant::now();
                e.used_bytes = used_bytes;
                true
            }
            _ => false,
        }
    }

    /// Declares an executor lost; returns whether it was alive until now.
    pub fn mark_lost(&self, id: &ExecutorId) -> bool {
        let was_alive = match self.executors.get_mut(id) {
            Some(mut e) if e.state == ExecutorState::Alive => {
                e.state = ExecutorState::Lost;
                true
            }
            _ => false,
        };
        if was_alive {
            self.changed.notify_waiters();
        }
        was_alive
    }

    /// Alive executors, sorted by id.
    pub fn alive(&self) -> Vec<ExecutorInfo> {
        let mut v: Vec<ExecutorInfo> = self
            .executors
            .iter()
            .filter(|e| e.state == ExecutorState::Alive)
            .map(|e| e.value().clone())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// One executor's record.
    pub fn get(&self, id: &ExecutorId) -> Option<ExecutorInfo> {
        self.executors.get(id).map(|e| e.value().clone())
    }

    /// Whether `id` is alive.
    pub fn is_alive(&self, id: &ExecutorId) -> bool {
        self.executors
            .get(id)
            .is_some_and(|e| e.state == ExecutorState::Alive)
    }

    /// Waits until at least `n` executors are alive or `timeout` passes; returns how many
    /// are alive.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let count = self.alive().len();
            if count >= n {
                return count;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.alive().len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> ExecutorInfo {
        ExecutorInfo {
            id: ExecutorId(id.into()),
            address: "127.0.0.1:1".into(),
            cores: 2,
            memory_bytes: 1 << 20,
            used_bytes: 0,
            pid: 1,
            last_heartbeat: Instant::now(),
            state: ExecutorState::Alive,
            device: "cpu".into(),
        }
    }

    #[test]
    fn lost_executors_get_no_work_and_must_reregister() {
        let r = ExecutorRegistry::new();
        r.register(info("a"));
        r.register(info("b"));
        assert_eq!(r.alive().len(), 2);
        assert!(r.mark_lost(&ExecutorId("a".into())));
        assert!(
            !r.mark_lost(&ExecutorId("a".into())),
            "second loss is not news"
        );
        assert_eq!(r.alive().len(), 1);
        assert!(!r.heartbeat(&ExecutorId("a".into()), 0));
        assert!(r.heartbeat(&ExecutorId("b".into()), 0));
        r.register(info("a"));
        assert!(r.is_alive(&ExecutorId("a".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_returns_when_enough_registered_or_times_out() {
        let r = std::sync::Arc::new(ExecutorRegistry::new());
        assert_eq!(r.wait_for(1, Duration::from_secs(1)).await, 0);
        let r2 = std::sync::Arc::clone(&r);
        let waiter = tokio::spawn(async move { r2.wait_for(2, Duration::from_secs(60)).await });
        r.register(info("a"));
        r.register(info("b"));
        assert_eq!(waiter.await.expect("join"), 2);
    }
}
