//! The node's writer: group commit of sends. Every send of the node queues
//! here; one task takes what has queued (what arrived while the previous
//! transactions were in flight, waiting up to `--send-batch-wait` for more,
//! at most `--send-batch` sends) whenever fewer than
//! `--send-batches-in-flight` batches are in flight, stores it with one
//! [`Store::append_messages`](crate::store::Store::append_messages) under
//! the store timeout, answers every sender only after the commit, and then
//! publishes one bump per room with the room's newest version.
//!
//! Bounded everywhere: the queue holds [`queue_len`] sends (a send finding
//! it full is refused with 503 at once), and a send that
//! waited in the queue longer than the store timeout is refused without
//! being stored, so a sender waits at most about twice the store timeout.
//! A failed batch stores nothing (the store writes all of it or none) and
//! every one of its senders gets the failure.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chatty_shared::RoomKey;
use chatty_shared::RoomVersion;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Chat;
use crate::error::ApiError;
use crate::metrics::{StoreOp, METRICS};
use crate::store::{Appended, NewMessage, StoreError};

/// Sends the queue holds at least, whatever the batch size: a node's
/// concurrent sends wait here rather than being refused (each at most
/// [`MAX_TEXT_BYTES_LIMIT`](crate::config::MAX_TEXT_BYTES_LIMIT) of text:
/// a few MiB at most).
pub(crate) const MIN_QUEUE: usize = 1024;

/// The queue's length for batches of `max`: [`MIN_QUEUE`], or four
/// batches when that is more.
pub(crate) fn queue_len(max: usize) -> usize {
    MIN_QUEUE.max(max.saturating_mul(4))
}

/// How the writer forms batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Most sends per batch (`--send-batch`).
    pub max: usize,
    /// Longest wait for more sends once one is there (`--send-batch-wait`).
    pub wait: Duration,
    /// A send queued longer than this is refused unstored (the store
    /// timeout).
    pub max_queued: Duration,
    /// Most batches in flight at once (`--send-batches-in-flight`).
    pub in_flight: usize,
}

/// Why a send was not stored (every one a 503 to the guest).
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// The queue is full.
    #[error("the send queue is full")]
    Full,
    /// The send waited in the queue too long and was not stored.
    #[error("the send waited too long in the queue")]
    Expired,
    /// The writer has stopped (the node is going away).
    #[error("the writer has stopped")]
    Stopped,
    /// The batch's store call failed; nothing of it was stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Store(e) => e.into(),
            WriteError::Full | WriteError::Expired | WriteError::Stopped => ApiError::Unavailable,
        }
    }
}

/// Where the writer's batches go: the store (under its timeout), and the
/// rooms they moved.
#[async_trait]
pub(crate) trait Commit: Send + Sync + 'static {
    /// Stores a batch, all or nothing; the answers in the batch's order.
    async fn commit(&self, batch: &[(RoomKey, NewMessage)]) -> Result<Vec<Appended>, StoreError>;
    /// Room `key` is at `version` after a committed batch.
    async fn moved(&self, key: &RoomKey, version: RoomVersion);
}

#[async_trait]
impl Commit for Chat {
    async fn commit(&self, batch: &[(RoomKey, NewMessage)]) -> Result<Vec<Appended>, StoreError> {
        let answers = self
            .store_call(StoreOp::Append, self.store.append_messages(batch))
            .await?;
        let created = answers.iter().filter(|a| a.created).count();
        METRICS.messages_stored.inc_by(created as u64);
        Ok(answers)
    }

    async fn moved(&self, key: &RoomKey, version: RoomVersion) {
        self.room_moved(key, version).await;
    }
}

/// A queued send.
struct Job {
    key: RoomKey,
    msg: NewMessage,
    queued: Instant,
    reply: oneshot::Sender<Result<Appended, WriteError>>,
}

/// The writer's queue; its task is started once with [`Writer::start`].
pub(crate) struct Writer {
    queue: mpsc::Sender<Job>,
    /// The queue's other end until the task takes it.
    unstarted: Mutex<Option<mpsc::Receiver<Job>>>,
    limits: BatchLimits,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Writer {
    pub(crate) fn new(limits: BatchLimits) -> Writer {
        let (queue, rx) = mpsc::channel(queue_len(limits.max));
        Writer {
            queue,
            unstarted: Mutex::new(Some(rx)),
            limits,
        }
    }

    /// Starts the task that commits the queued sends into `to`; it ends
    /// when `to` is gone. `None` when started before.
    pub(crate) fn start<C: Commit>(&self, to: Weak<C>) -> Option<JoinHandle<()>> {
        let rx = self.unstarted.lock().take()?;
        Some(tokio::spawn(run(rx, to, self.limits)))
    }

    /// Queues a send and waits for its batch's commit.
    pub(crate) async fn append(
        &self,
        key: RoomKey,
        msg: NewMessage,
    ) -> Result<Appended, WriteError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            key,
            msg,
            queued: Instant::now(),
            reply,
        };
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => WriteError::Full,
            mpsc::error::TrySendError::Closed(_) => WriteError::Stopped,
        })?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

/// The writer's loop, until the queue or `to` is gone: while fewer than
/// `limits.in_flight` batches are in flight, the next batch is what has
/// queued meanwhile.
async fn run<C: Commit>(mut rx: mpsc::Receiver<Job>, to: Weak<C>, limits: BatchLimits) {
    let slots = Arc::new(Semaphore::new(limits.in_flight.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut jobs = Vec::with_capacity(limits.max);
        jobs.push(first);
        gather(&mut rx, &mut jobs, limits).await;
        let Some(to) = to.upgrade() else { return };
        tokio::spawn(async move {
            commit(&*to, jobs, limits).await;
            drop(slot);
        });
    }
}

/// Adds what has queued to `jobs`, then waits up to `limits.wait` for more,
/// never beyond `limits.max`.
async fn gather(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>, limits: BatchLimits) {
    while jobs.len() < limits.max {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    if limits.wait.is_zero() {
        return;
    }
    let until = Instant::now() + limits.wait;
    while jobs.len() < limits.max {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(job)) => jobs.push(job),
            Ok(None) | Err(_) => break,
        }
    }
}

/// Stores one batch and answers its senders, then publishes each room's
/// newest version once.
async fn commit<C: Commit + ?Sized>(to: &C, jobs: Vec<Job>, limits: BatchLimits) {
    let now = Instant::now();
    let mut batch = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        if now.duration_since(job.queued) > limits.max_queued {
            let _ = job.reply.send(Err(WriteError::Expired));
            continue;
        }
        batch.push((job.key, job.msg));
        replies.push(job.reply);
    }
    if batch.is_empty() {
        return;
    }
    METRICS.send_batch_size.observe(batch.len() as f64);
    let answers = match to.commit(&batch).await {
        Ok(answers) if answers.len() == batch.len() => answers,
        Ok(answers) => {
            tracing::error!(
                sends = batch.len(),
                answers = answers.len(),
                "the store answered a batch with a different number of answers"
            );
            for reply in replies {
                let _ = reply.send(Err(WriteError::Store(StoreError::Server(
                    "a batch's answers did not match its sends".into(),
                ))));
            }
            return;
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(WriteError::Store(e.clone())));
            }
            return;
        }
    };
    let mut newest: BTreeMap<RoomKey, RoomVersion> = BTreeMap::new();
    for ((key, _), answer) in batch.into_iter().zip(&answers) {
        if answer.created {
            let v = newest.entry(key).or_insert(answer.version);
            if answer.version.seq > v.seq {
                *v = answer.version;
            }
        }
    }
    for (reply, answer) in replies.into_iter().zip(answers) {
        // A sender that went away (its client hung up) finds its message
        // stored when it retries with the same client id.
        let _ = reply.send(Ok(answer));
    }
    for (key, version) in &newest {
        to.moved(key, *version).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::store::conformance::message;
    use crate::store::{SqliteStore, Store};

    /// The embedded store behind a switch that fails every batch, recording
    /// batch sizes and the rooms moved.
    struct Recorder {
        store: Arc<SqliteStore>,
        failing: AtomicBool,
        sizes: Mutex<Vec<usize>>,
        moved: Mutex<Vec<(RoomKey, RoomVersion)>>,
        /// Held by the first batch until let go, so that the next sends queue.
        gate: tokio::sync::Mutex<()>,
        batches: AtomicUsize,
    }

    #[async_trait]
    impl Commit for Recorder {
        async fn commit(
            &self,
            batch: &[(RoomKey, NewMessage)],
        ) -> Result<Vec<Appended>, StoreError> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            let _gate = self.gate.lock().await;
            self.sizes.lock().push(batch.len());
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Connection("cut".into()));
            }
            self.store.append_messages(batch).await
        }

        async fn moved(&self, key: &RoomKey, version: RoomVersion) {
            self.moved.lock().push((key.clone(), version));
        }
    }

    fn recorder() -> (tempfile::TempDir, Arc<Recorder>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("chatty.db")).unwrap();
        let r = Recorder {
            store,
            failing: AtomicBool::new(false),
            sizes: Mutex::new(Vec::new()),
            moved: Mutex::new(Vec::new()),
            gate: tokio::sync::Mutex::new(()),
            batches: AtomicUsize::new(0),
        };
        (dir, Arc::new(r))
    }

    /// A writer committing into `to`, its task started.
    fn started<C: Commit>(to: &Arc<C>, limits: BatchLimits) -> Writer {
        let w = Writer::new(limits);
        w.start(Arc::downgrade(to));
        w
    }

    fn limits(max: usize) -> BatchLimits {
        BatchLimits {
            max,
            wait: Duration::ZERO,
            max_queued: Duration::from_secs(30),
            in_flight: 1,
        }
    }

    fn key(room: &str) -> RoomKey {
        RoomKey::new("demo", room).unwrap()
    }

    /// Yields until `done`, for at most 10 s.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !done() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "waited too long for {what}"
            );
            tokio::task::yield_now().await;
        }
    }

    /// Holds the store while `n` sends (`room`, client id) queue behind a
    /// first one, then lets go; returns every answer, the first one's first.
    async fn queued_behind_one(
        r: &Arc<Recorder>,
        w: &Arc<Writer>,
        sends: Vec<(RoomKey, String)>,
    ) -> Vec<Result<Appended, WriteError>> {
        let gate = r.gate.lock().await;
        let first = {
            let w = w.clone();
            tokio::spawn(async move { w.append(key("lobby"), message("m0", "first", "x")).await })
        };
        until("the first batch", || r.batches.load(Ordering::SeqCst) > 0).await;
        let mut rest = Vec::new();
        for (k, client) in sends {
            let w = w.clone();
            rest.push(tokio::spawn(async move {
                w.append(k, message("m1", &client, "x")).await
            }));
        }
        // Every send is queued before the store is let go.
        until("the sends queued", || {
            w.queue.capacity() + rest.len() <= w.queue.max_capacity()
        })
        .await;
        drop(gate);
        let mut out = vec![first.await.unwrap()];
        for t in rest {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn sends_queued_meanwhile_share_one_batch_in_order() {
        let (_dir, r) = recorder();
        let w = Arc::new(started(&r, limits(64)));
        let sends = (0..10)
            .map(|i| {
                (
                    key(if i % 2 == 0 { "lobby" } else { "hall" }),
                    format!("c{i}"),
                )
            })
            .collect();
        let answers = queued_behind_one(&r, &w, sends).await;
        assert_eq!(*r.sizes.lock(), [1, 10]);
        let seqs: Vec<(u64, bool)> = answers
            .iter()
            .map(|a| {
                let a = a.as_ref().unwrap();
                (a.event.seq, a.created)
            })
            .collect();
        // lobby: the first, then c0, c2 …; hall: c1, c3 … in the order sent.
        let lobby = [1, 2, 3, 4, 5, 6];
        let hall = [1, 2, 3, 4, 5];
        let mut expect = vec![(lobby[0], true)];
        for i in 0..10 {
            let seq = if i % 2 == 0 {
                lobby[i / 2 + 1]
            } else {
                hall[i / 2]
            };
            expect.push((seq, true));
        }
        assert_eq!(seqs, expect);
        // One bump per room per batch, with the room's newest version.
        let moved: Vec<(String, u64)> = r
            .moved
            .lock()
            .iter()
            .map(|(k, v)| (k.room().to_owned(), v.seq))
            .collect();
        assert_eq!(
            moved,
            [("lobby".into(), 1), ("hall".into(), 5), ("lobby".into(), 6)]
        );
    }

    #[tokio::test]
    async fn a_second_batch_goes_while_the_first_is_in_flight_when_allowed() {
        let (_dir, r) = recorder();
        let w = Arc::new(started(
            &r,
            BatchLimits {
                in_flight: 2,
                ..limits(64)
            },
        ));
        let gate = r.gate.lock().await;
        let mut sends = Vec::new();
        for i in 0..5 {
            let w = w.clone();
            sends.push(tokio::spawn(async move {
                w.append(key("lobby"), message("m1", &format!("c{i}"), "x"))
                    .await
            }));
            until("the send's batch", || {
                r.batches.load(Ordering::SeqCst) > i.min(1)
            })
            .await;
        }
        // Two batches in flight (the first send, then the next one alone);
        // the other three wait for a slot.
        assert_eq!(r.batches.load(Ordering::SeqCst), 2);
        drop(gate);
        let mut seqs = Vec::new();
        for s in sends {
            seqs.push(s.await.unwrap().unwrap().event.seq);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(r.sizes.lock().iter().sum::<usize>(), 5);
        assert_eq!(r.batches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn batches_stop_at_the_limit() {
        let (_dir, r) = recorder();
        let w = Arc::new(started(&r, limits(4)));
        let sends = (0..10).map(|i| (key("lobby"), format!("c{i}"))).collect();
        let answers = queued_behind_one(&r, &w, sends).await;
        assert_eq!(*r.sizes.lock(), [1, 4, 4, 2]);
        let seqs: Vec<u64> = answers
            .iter()
            .map(|a| a.as_ref().unwrap().event.seq)
            .collect();
        assert_eq!(seqs, (1..=11).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_retry_in_the_same_batch_gets_the_original() {
        let (_dir, r) = recorder();
        let w = Arc::new(started(&r, limits(64)));
        let sends = vec![
            (key("lobby"), "c1".to_owned()),
            (key("lobby"), "c1".to_owned()),
            (key("lobby"), "first".to_owned()),
        ];
        let answers = queued_behind_one(&r, &w, sends).await;
        let got: Vec<(u64, bool)> = answers
            .iter()
            .map(|a| {
                let a = a.as_ref().unwrap();
                (a.event.seq, a.created)
            })
            .collect();
        // "first" from m1 is not m0's "first": a new message.
        assert_eq!(got, [(1, true), (2, true), (2, false), (3, true)]);
    }

    #[tokio::test]
    async fn a_failed_batch_answers_every_sender_and_stores_nothing() {
        let (_dir, r) = recorder();
        let w = Arc::new(started(&r, limits(64)));
        r.failing.store(true, Ordering::SeqCst);
        let sends = (0..5).map(|i| (key("hall"), format!("c{i}"))).collect();
        let answers = queued_behind_one(&r, &w, sends).await;
        assert_eq!(answers.len(), 6);
        for a in answers {
            assert!(matches!(
                a,
                Err(WriteError::Store(StoreError::Connection(_)))
            ));
        }
        assert!(r.moved.lock().is_empty());
        r.failing.store(false, Ordering::SeqCst);
        assert_eq!(r.store.room_version(&key("hall")).await.unwrap().seq, 0);
        let a = w
            .append(key("hall"), message("m1", "c0", "again"))
            .await
            .unwrap();
        assert_eq!((a.event.seq, a.created), (1, true));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let (_dir, r) = recorder();
        let w = Arc::new(Writer::new(limits(64)));
        assert_eq!(w.queue.max_capacity(), queue_len(64));
        assert_eq!((queue_len(1), queue_len(1024)), (MIN_QUEUE, 4096));
        // Not started: nothing drains the queue.
        let mut waiting = Vec::new();
        for i in 0..queue_len(64) {
            let w = w.clone();
            waiting.push(tokio::spawn(async move {
                w.append(key("lobby"), message("m1", &format!("c{i}"), "x"))
                    .await
            }));
        }
        until("a full queue", || w.queue.capacity() == 0).await;
        let refused = w.append(key("lobby"), message("m1", "late", "x")).await;
        assert!(matches!(refused, Err(WriteError::Full)));
        assert!(matches!(
            ApiError::from(WriteError::Full),
            ApiError::Unavailable
        ));
        w.start(Arc::downgrade(&r));
        for t in waiting {
            assert!(t.await.unwrap().unwrap().created);
        }
    }

    #[tokio::test]
    async fn a_send_queued_too_long_is_refused_unstored() {
        let (_dir, r) = recorder();
        let w = Arc::new(Writer::new(BatchLimits {
            max_queued: Duration::from_millis(20),
            ..limits(8)
        }));
        let stale = {
            let w = w.clone();
            tokio::spawn(async move { w.append(key("lobby"), message("m1", "c1", "x")).await })
        };
        tokio::time::sleep(Duration::from_millis(60)).await;
        w.start(Arc::downgrade(&r));
        assert!(matches!(stale.await.unwrap(), Err(WriteError::Expired)));
        assert_eq!(r.store.room_version(&key("lobby")).await.unwrap().seq, 0);
    }

    #[tokio::test]
    async fn the_writer_waits_for_more_sends_when_told() {
        let (_dir, r) = recorder();
        let w = Arc::new(started(
            &r,
            BatchLimits {
                wait: Duration::from_millis(200),
                ..limits(3)
            },
        ));
        let mut sends = Vec::new();
        for i in 0..3 {
            let w = w.clone();
            sends.push(tokio::spawn(async move {
                w.append(key("lobby"), message("m1", &format!("c{i}"), "x"))
                    .await
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for s in sends {
            s.await.unwrap().unwrap();
        }
        assert_eq!(*r.sizes.lock(), [3], "one batch, closed when full");
    }
}
