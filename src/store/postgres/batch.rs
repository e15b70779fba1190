//! Group commit: concurrent writes of one kind share one statement and one commit.
//!
//! Each write used to pay a statement and a WAL flush of its own; under load the PostgreSQL
//! server spent its CPU on per-statement work (parse, plan, executor start, commit) rather
//! than on rows. A write is queued here instead; the batcher takes everything queued at that
//! moment (up to `max_batch`) and hands it to a flush function that writes it with one
//! multi-row statement. A few batches may be in flight at once (`slots`), so a slow commit
//! never idles the others, and while they are all busy the queue grows into the next, larger
//! batch. A lone write is flushed at once: nothing waits for a batch to fill.
//!
//! The flush function answers every job, only after its batch committed or with the batch's
//! error: callers keep "persisted, then answered".

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::super::StoreError;

/// One queued write and where its answer goes.
pub(super) struct Job<I, O> {
    pub(super) item: I,
    pub(super) reply: oneshot::Sender<Result<O, StoreError>>,
}

impl<I, O> Job<I, O> {
    /// Answer the caller. One that gave up (client gone) is fine: the write is committed or
    /// not, as its batch says.
    pub(super) fn answer(self, result: Result<O, StoreError>) {
        let _ = self.reply.send(result);
    }
}

/// The sending side; the batcher task ends when the last handle is dropped.
pub(super) struct Batcher<I, O> {
    tx: mpsc::Sender<Job<I, O>>,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Start the batcher task. At most `slots` flushes run at once (each holds one pooled
    /// connection); a batch has at most `max_batch` jobs; up to four batches' worth may queue,
    /// beyond that `submit` waits (backpressure, never a drop).
    pub(super) fn start<F, Fut>(slots: usize, max_batch: usize, flush: F) -> Batcher<I, O>
    where
        F: Fn(Vec<Job<I, O>>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let max_batch = max_batch.max(1);
        let (tx, rx) = mpsc::channel(4 * max_batch);
        tokio::spawn(run(rx, slots.max(1), max_batch, flush));
        Batcher { tx }
    }

    /// Queue one write and wait for its batch's answer.
    pub(super) async fn submit(&self, item: I) -> Result<O, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { item, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run<I, O, F, Fut>(mut rx: mpsc::Receiver<Job<I, O>>, slots: usize, max: usize, flush: F)
where
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(Vec<Job<I, O>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(slots));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Whatever queued up while the slot was awaited joins this batch.
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let work = flush(batch);
        tokio::spawn(async move {
            work.await;
            drop(slot);
        });
    }
}

/// Why a batch was not written: a deadlock with another replica's batch is worth another try.
pub(super) enum Failure {
    Deadlock(StoreError),
    Other(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) {
            Failure::Deadlock(e.into())
        } else {
            Failure::Other(e.into())
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Other(e)
    }
}

impl Failure {
    /// The message each waiter gets (its own error: `StoreError` is not `Clone`).
    pub(super) fn into_message(self) -> String {
        match self {
            Failure::Deadlock(StoreError::Postgres(m))
            | Failure::Other(StoreError::Postgres(m)) => m,
            Failure::Deadlock(e) | Failure::Other(e) => e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[tokio::test]
    async fn jobs_queued_while_the_slot_is_busy_share_the_next_batch_and_each_gets_its_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher: Batcher<u32, u32> = Batcher::start(1, 8, move |jobs: Vec<Job<u32, u32>>| {
            seen.lock().unwrap().push(jobs.len());
            async move {
                // A slow commit: the others queue up meanwhile.
                tokio::time::sleep(Duration::from_millis(50)).await;
                for job in jobs {
                    let doubled = job.item * 2;
                    job.answer(Ok(doubled));
                }
            }
        });
        let batcher = Arc::new(batcher);
        let mut waiting = Vec::new();
        for i in 0..11u32 {
            let b = batcher.clone();
            waiting.push(tokio::spawn(async move { b.submit(i).await }));
            if i == 0 {
                // The first is flushed alone, at once.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        for (i, w) in waiting.into_iter().enumerate() {
            assert_eq!(w.await.unwrap().unwrap(), 2 * i as u32);
        }
        // 1 alone, then the 10 queued meanwhile in batches of at most 8.
        assert_eq!(*sizes.lock().unwrap(), vec![1, 8, 2]);
    }

    #[tokio::test]
    async fn a_job_the_flush_never_answers_is_an_error_not_a_hang() {
        let batcher: Batcher<u32, u32> =
            Batcher::start(1, 8, |jobs: Vec<Job<u32, u32>>| async move { drop(jobs) });
        assert!(matches!(batcher.submit(1).await, Err(StoreError::Closed)));
    }
}
