//! The coordinator: which records go into the next commit, and when it is committed.
//!
//! It is generic over a [`Source`] (Kafka) and a [`Sink`] (the table side: decoders, rows,
//! the table's committer) and knows nothing of Arrow or Parquet. It holds each partition's
//! way to the table's sync point (wait while the table cannot be read, skip what the table
//! holds, seek, then active), the [`Transaction`] of the next commit, the commit triggers
//! (records, bytes, interval), and what happens when a commit does not land: on a conflict or a
//! failure the transaction is dropped whole and its partitions seek back to the table's sync
//! points; while the table cannot be written, consumption pauses and is retried with back-off.
//!
//! Exactly once: each partition's range starts at the table's sync point for it. A commit
//! carries the next offset of every partition it covers and is refused when the table moved
//! meanwhile. The Kafka group offsets are only a mirror for lag tools: a crash after the table
//! commit but before the Kafka commit is harmless, since assignment always seeks to the table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use kafkatable_crds::config::{CommitConfig, StartPosition};

use crate::bad::{Action, BadRecord};
use crate::commit::{CommitOutcome, SyncPoints};
use crate::deadletter::Sent;
use crate::deadletter::table::DeadLetterTable;
use crate::error::{ErrorKind, IngesterError};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::source::{Assignment, Source, SourceRecord};
use crate::txn::Transaction;
use tokio::sync::mpsc::UnboundedReceiver;

/// The first wait after a failed table operation; it doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts while the table cannot be written.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The table side of the pipeline, as the coordinator drives it: records go into a batch,
/// the batch is staged (decoded, written to files) and committed with the transaction's
/// offsets, or discarded.
#[allow(async_fn_in_trait)] // used generically, never as a trait object
pub trait Sink {
    /// What the next commit holds on the table side.
    type Batch;

    /// An empty batch.
    fn batch(&self) -> Self::Batch;
    /// Adds a record of an active partition. An error stops the ingester (the record cannot
    /// be decoded and the policy is to fail).
    fn push<R: SourceRecord>(
        &mut self,
        batch: &mut Self::Batch,
        record: &R,
    ) -> Result<Pushed, IngesterError>;
    /// Fetches what a record pushed with [`Pushed::NeedsLookup`] needs (a registry's schema),
    /// then pushes it; it never asks twice.
    async fn lookup<R: SourceRecord>(
        &mut self,
        batch: &mut Self::Batch,
        record: &R,
    ) -> Result<Pushed, IngesterError>;
    /// Bytes the batch holds in memory.
    fn buffered_bytes(&self, batch: &Self::Batch) -> u64;
    /// Hands what is ready (everything, with `all`) to the table's writer. On error what was
    /// staged is gone, and the transaction must be dropped.
    async fn stage(&mut self, batch: &mut Self::Batch, all: bool) -> Result<(), IngesterError>;
    /// The table's sync points for `partitions`, read fresh.
    async fn sync_points(&mut self, partitions: &[i32]) -> Result<SyncPoints, IngesterError>;
    /// Commits the transaction (staged first) or reports a conflict; unless it commits, its
    /// batch is discarded.
    async fn commit(
        &mut self,
        txn: Transaction<Self::Batch>,
    ) -> Result<CommitOutcome, IngesterError>;
    /// Drops a batch and what it staged.
    async fn discard(&mut self, batch: Self::Batch);
    /// The bad records met since the last call (by push, lookup or stage), each skipped or
    /// its partition stopped: a stopped partition's records from the bad one on are gone from
    /// the batch, and the coordinator must take no more of them.
    fn bad_records(&mut self, batch: &mut Self::Batch) -> Vec<BadRecord>;
}

/// What became of a record pushed into the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// It is in the batch.
    Buffered,
    /// It is in the batch, which has rows ready to stage.
    Ready,
    /// It is not: the sink needs something fetched first ([`Sink::lookup`]).
    NeedsLookup,
}

/// What the run loop does after a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    /// The partition seeks to the offset.
    Seek(i32, i64),
    /// The record waits for the sink's lookup.
    Lookup,
}

/// Where a partition is on its way to the table's sync point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Assigned while the table could not be read: the partition is paused, its sync point is
    /// asked again after a back-off, and records that still arrive are dropped (`first`
    /// remembers the first, where reading resumes when the table has no sync point).
    Waiting {
        first: Option<i64>,
    },
    /// Records before `target` are already in the table and are skipped; a first record past
    /// it triggers one seek (`sought`).
    Seeking {
        target: Option<i64>,
        sought: bool,
    },
    Active,
    /// Stopped at the bad record at `offset` (`errors.policy: fail`): paused, and records that
    /// still arrive are dropped. Its next offset in the table is `offset` once the records
    /// before it are committed; an assignment or a restart reads it again from there.
    Stopped {
        offset: i64,
    },
}

#[derive(Debug, Clone)]
struct Partition {
    /// The table's sync point as last read or committed.
    sync_point: Option<i64>,
    phase: Phase,
    /// What the dead-letter topic holds past the sync point (sent before a table commit that
    /// did not land, by this member or an earlier holder): those records are not sent again.
    sent: Option<Sent>,
}

/// Fault injection for tests of the exactly-once protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// The probability of aborting the process between a table commit and the Kafka commit.
    pub crash_after_table_commit: f64,
    /// The probability of aborting the process between a partition's dead-letter transaction
    /// and the table commit.
    pub crash_after_dead_letters: f64,
}

/// Dead letters of one partition per commit with a dead-letter topic: listed as offsets of at
/// most 19 digits and a comma each, they fit the group offset's metadata (4,096 bytes by
/// default) with room to spare.
const LETTERS_PER_COMMIT: usize = 160;

/// The coordinator of one ingester.
pub struct Coordinator<S: Source, K: Sink> {
    source: Arc<S>,
    /// The source's assignment changes (a channel of their own: the rebalance callbacks run
    /// inside the source's poll).
    events: UnboundedReceiver<Assignment>,
    sink: K,
    start: StartPosition,
    commit: CommitConfig,
    partitions: BTreeMap<i32, Partition>,
    txn: Transaction<K::Batch>,
    /// The batch has rows for the table's writer.
    unstaged: bool,
    last_commit: Instant,
    /// Failed table operations in a row (the back-off grows with them).
    failures: u32,
    /// Failed commits in a row that reached the table (reported; an unreachable table is
    /// reported as such instead).
    commit_failures: u32,
    /// While the table cannot be written or read, consumption is paused until then.
    retry_at: Option<Instant>,
    /// Failed commits in a row after which the ingester gives up (0: never).
    exit_after: u32,
    metrics: Metrics,
    health: Arc<Health>,
    faults: Faults,
    /// Where dead letters go when it is a table (`errors.deadLetter.table`); otherwise the
    /// source sends them to its dead-letter topic.
    dead_letter_table: Option<DeadLetterTable>,
}

impl<S: Source, K: Sink> Coordinator<S, K> {
    pub fn new(
        source: S,
        events: UnboundedReceiver<Assignment>,
        sink: K,
        start: StartPosition,
        commit: CommitConfig,
        metrics: Metrics,
        health: Arc<Health>,
    ) -> Self {
        health.table(None);
        let txn = Transaction::new(sink.batch());
        Self {
            source: Arc::new(source),
            events,
            sink,
            start,
            commit,
            partitions: BTreeMap::new(),
            txn,
            unstaged: false,
            last_commit: Instant::now(),
            failures: 0,
            commit_failures: 0,
            retry_at: None,
            exit_after: 0,
            metrics,
            health,
            faults: Faults::default(),
            dead_letter_table: None,
        }
    }

    /// Dead letters go to `table` instead of the source's dead-letter topic.
    pub fn with_dead_letter_table(mut self, table: DeadLetterTable) -> Self {
        self.dead_letter_table = Some(table);
        self
    }

    /// Gives up (returns the commit's error) after `failures` failed commits in a row; 0:
    /// never (`errors.commitFailures.exitAfter`).
    pub fn with_exit_after(mut self, failures: u32) -> Self {
        self.exit_after = failures;
        self
    }

    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    fn maybe_crash(&self) {
        let p = self.faults.crash_after_table_commit;
        if p > 0.0 && clock_fraction() < p {
            tracing::warn!(
                "fault injection: aborting between the table commit and the Kafka commit"
            );
            std::process::abort();
        }
    }

    /// Runs until `shutdown` completes (then commits what it holds and leaves the group) or an
    /// error stops it.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), IngesterError> {
        tokio::pin!(shutdown);
        let interval = Duration::from_millis(self.commit.interval_ms.max(1));
        // The interval is checked on this tick, not per record (reading the clock per record
        // is a measurable share of the consume path); a commit is at most a tick late.
        let mut tick = tokio::time::interval(
            (interval / 10).clamp(Duration::from_millis(10), Duration::from_millis(250)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Records borrow the source while the rest of `self` changes.
        let source = self.source.clone();
        loop {
            let ticked = tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("shutting down: committing what is buffered");
                    source.leave();
                    self.commit_now().await?;
                    return Ok(());
                }
                event = self.events.recv() => {
                    if let Some(event) = event {
                        self.on_assignment(event).await?;
                    }
                    false
                }
                record = source.recv() => {
                    match record {
                        Ok(record) => {
                            // Apply rebalances that arrived with this poll before the record.
                            while let Ok(event) = self.events.try_recv() {
                                self.on_assignment(event).await?;
                            }
                            match self.on_record(&record)? {
                                Next::Continue => {}
                                Next::Seek(partition, offset) => self.seek(partition, offset).await,
                                Next::Lookup => self.lookup(&record).await?,
                            }
                        }
                        Err(e) => {
                            self.metrics.kafka_errors.inc();
                            tracing::warn!(error = %e, "consume error");
                        }
                    }
                    false
                }
                _ = tick.tick() => true,
            };
            if ticked && self.retry_at.is_some_and(|at| Instant::now() >= at) {
                self.retry().await?;
            }
            if self.unstaged {
                self.stage().await?;
            }
            // While backing off, the next attempt waits for the retry (what the prefetch queue
            // still delivers is little: consumption is paused).
            if self.retry_at.is_none() && self.commit_due(ticked.then_some(interval)) {
                self.observe_buffer();
                self.commit_now().await?;
                self.observe_buffer();
            }
        }
    }

    fn observe_buffer(&self) {
        let bytes = i64::try_from(self.txn.bytes()).unwrap_or(i64::MAX);
        self.metrics.buffered_bytes.set(bytes);
        if bytes > self.metrics.buffered_bytes_peak.get() {
            self.metrics.buffered_bytes_peak.set(bytes);
        }
    }

    /// Whether the transaction is full, or (with `interval`, on the tick) the interval passed.
    fn commit_due(&self, interval: Option<Duration>) -> bool {
        self.txn.records() > 0
            && (self.txn.records() >= self.commit.max_records
                || self.txn.bytes() >= self.commit.max_bytes
                || self.letters_full()
                || interval.is_some_and(|i| self.last_commit.elapsed() >= i))
    }

    /// Whether a partition's dead letters fill what the group offset's metadata can list
    /// (with a dead-letter topic, see [`Sent::fits`]): the commit goes now, before the broker
    /// would refuse the list.
    fn letters_full(&self) -> bool {
        self.dead_letter_table.is_none()
            && self.txn.letters().iter().any(|(p, letters)| {
                let carried = self
                    .partitions
                    .get(p)
                    .and_then(|s| s.sent.as_ref())
                    .map_or(0, |s| s.offsets.len());
                carried + letters.len() >= LETTERS_PER_COMMIT
            })
    }

    async fn on_assignment(&mut self, event: Assignment) -> Result<(), IngesterError> {
        match event {
            Assignment::Assigned(partitions) => {
                // A table that does not answer leaves the partitions waiting (paused) rather
                // than blocking the loop, which must keep polling to stay in the group.
                let points = match self.take_over(&partitions).await {
                    Ok(points) => Some(points),
                    Err(e) if !e.is_retryable() => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, ?partitions, "cannot read the sync points of assigned partitions; they wait");
                        None
                    }
                };
                for &p in &partitions {
                    let state = match &points {
                        Some((points, sent)) => {
                            self.assigned(p, points.get(&p).copied(), sent.get(&p).cloned())
                                .await
                        }
                        None => Partition {
                            sync_point: None,
                            phase: Phase::Waiting { first: None },
                            sent: None,
                        },
                    };
                    // The group's offset is past records whose dead letters were sent (and
                    // may be at the end of the log, where no record comes to trigger a seek).
                    let eager = match (&state.sent, state.phase) {
                        (Some(_), Phase::Seeking { target, .. }) => target,
                        _ => None,
                    };
                    self.partitions.insert(p, state);
                    if let Some(offset) = eager {
                        self.seek(p, offset).await;
                    }
                }
                if points.is_none() {
                    self.back_off();
                }
                // A partition paused before it was revoked must not come back paused.
                if self.retry_at.is_some() {
                    self.source.pause(&partitions);
                } else {
                    self.source.resume(&partitions);
                }
                self.report_sync_points();
            }
            Assignment::Revoked(partitions) => {
                // The batch holds the revoked partitions' rows among the others': commit them
                // all now rather than read the others again. (The new owner starts from the
                // table's sync points; whichever of us commits second sees them moved.)
                if partitions.iter().any(|&p| self.txn.holds(p)) {
                    self.commit_now().await?;
                }
                for &p in &partitions {
                    if self.partitions.remove(&p).is_some() {
                        tracing::info!(partition = p, "partition revoked");
                    }
                }
                self.health
                    .update(|r| r.stopped.retain(|s| !partitions.contains(&s.partition)));
                self.source.release(&partitions);
                if let Some(table) = &mut self.dead_letter_table {
                    table.release(&partitions);
                }
                self.report_sync_points();
            }
        }
        self.metrics
            .assigned_partitions
            .set(self.partitions.len() as i64);
        Ok(())
    }

    /// A partition assigned with the table's sync point for it, and what the dead-letter topic
    /// holds past it.
    async fn assigned(&self, p: i32, sync_point: Option<i64>, sent: Option<Sent>) -> Partition {
        // Dead letters went out for records the table does not hold yet: the group's offset
        // may be past them, so they are read from where those were decided.
        let decided_from = sent.as_ref().and_then(|s| s.from);
        let target = match (sync_point, decided_from, self.start) {
            (Some(n), _, _) => Some(n),
            (None, Some(from), _) => Some(from),
            (None, None, StartPosition::TimestampMillis(ms)) => {
                self.source.offset_for_time(p, ms).await
            }
            (None, None, _) => None,
        };
        tracing::info!(partition = p, sync_point, target, "partition assigned");
        Partition {
            sync_point,
            phase: Phase::Seeking {
                target,
                sought: false,
            },
            sent,
        }
    }

    /// Held partitions and their sync points, as `/status` and `/readyz` report them: ready
    /// once every held partition knows its sync point.
    fn report_sync_points(&self) {
        let held: Vec<i32> = self.partitions.keys().copied().collect();
        let points: BTreeMap<i32, i64> = self
            .partitions
            .iter()
            .filter_map(|(p, s)| Some((*p, s.sync_point?)))
            .collect();
        let waiting = self
            .partitions
            .values()
            .any(|s| matches!(s.phase, Phase::Waiting { .. }));
        self.health
            .assigned
            .store(!held.is_empty() && !waiting, Ordering::Relaxed);
        self.health.update(|r| {
            r.partitions = held;
            r.sync_points = points;
        });
    }

    /// Pauses consumption until the next attempt, which waits longer after each failure in a
    /// row (with jitter, so that the pods of a table do not retry in step).
    fn back_off(&mut self) {
        self.failures += 1;
        self.metrics.table_retries.inc();
        let doubled = FIRST_BACKOFF.saturating_mul(1 << (self.failures.clamp(1, 16) - 1));
        let delay = jitter(doubled.min(MAX_BACKOFF));
        tracing::warn!(attempt = self.failures, retry_in = ?delay, "the table cannot be written or read; consumption paused");
        self.retry_at = Some(Instant::now() + delay);
        let all: Vec<i32> = self.partitions.keys().copied().collect();
        self.source.pause(&all);
    }

    /// After a back-off: reads the sync points of waiting partitions (backing off again when
    /// the table still does not answer) and resumes consumption.
    async fn retry(&mut self) -> Result<(), IngesterError> {
        let waiting: Vec<(i32, Option<i64>)> = self
            .partitions
            .iter()
            .filter_map(|(p, s)| match s.phase {
                Phase::Waiting { first } => Some((*p, first)),
                _ => None,
            })
            .collect();
        if !waiting.is_empty() {
            let partitions: Vec<i32> = waiting.iter().map(|(p, _)| *p).collect();
            let (points, sent) = match self.take_over(&partitions).await {
                Ok(points) => points,
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "the sync points still cannot be read");
                    self.back_off();
                    return Ok(());
                }
            };
            for (p, first) in waiting {
                let mut state = self
                    .assigned(p, points.get(&p).copied(), sent.get(&p).cloned())
                    .await;
                // Without a sync point, go back to the first record dropped while waiting
                // (the consumer's position is past it).
                let target = match state.phase {
                    Phase::Seeking { target, .. } => target.or(first),
                    _ => first,
                };
                let sought = match target {
                    Some(t) => self.try_seek(p, t).await,
                    None => false,
                };
                state.phase = Phase::Seeking { target, sought };
                self.partitions.insert(p, state);
            }
            self.report_sync_points();
        }
        self.retry_at = None;
        let running: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, s)| !matches!(s.phase, Phase::Stopped { .. }))
            .map(|(p, _)| *p)
            .collect();
        self.source.resume(&running);
        tracing::info!("consumption resumed");
        Ok(())
    }

    /// The table's sync points of partitions newly held, and what the dead-letter topic holds
    /// past them (their earlier holders fenced first).
    async fn take_over(
        &mut self,
        partitions: &[i32],
    ) -> Result<(SyncPoints, BTreeMap<i32, Sent>), IngesterError> {
        let points = self.table_sync_points(partitions).await?;
        let with: Vec<(i32, Option<i64>)> = partitions
            .iter()
            .map(|p| (*p, points.get(p).copied()))
            .collect();
        let sent = match &mut self.dead_letter_table {
            Some(table) => table.fence(&with).await?,
            None => self.source.fence(&with).await?,
        };
        Ok((points, sent))
    }

    async fn table_sync_points(&mut self, partitions: &[i32]) -> Result<SyncPoints, IngesterError> {
        let result = self.sink.sync_points(partitions).await;
        self.health
            .table(result.as_ref().err().map(ToString::to_string));
        result
    }

    async fn try_seek(&self, partition: i32, offset: i64) -> bool {
        match self.source.seek(partition, offset).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(partition, offset, error = %e, "seek failed; will retry");
                false
            }
        }
    }

    /// Seeks a partition that is on its way to `offset`, and records whether that worked.
    async fn seek(&mut self, partition: i32, offset: i64) {
        let done = self.try_seek(partition, offset).await;
        if let Some(state) = self.partitions.get_mut(&partition)
            && let Phase::Seeking { target, .. } = state.phase
        {
            state.phase = Phase::Seeking {
                target,
                sought: done,
            };
        }
    }

    /// Takes a record into the transaction, or skips it on the partition's way to its sync
    /// point (or asks for a seek there).
    fn on_record(&mut self, r: &S::Record<'_>) -> Result<Next, IngesterError> {
        let p = r.partition();
        let offset = r.offset();
        let Some(state) = self.partitions.get_mut(&p) else {
            return Ok(Next::Continue); // not (or no longer) ours
        };
        match state.phase {
            Phase::Active => {}
            Phase::Waiting { first: None } => {
                state.phase = Phase::Waiting {
                    first: Some(offset),
                };
                return Ok(Next::Continue);
            }
            Phase::Waiting { .. } | Phase::Stopped { .. } => return Ok(Next::Continue),
            Phase::Seeking { target, sought } => {
                match target {
                    Some(t) if offset < t => {
                        self.metrics.records_already_committed.inc();
                        return Ok(Next::Continue);
                    }
                    Some(t) if offset > t && !sought => return Ok(Next::Seek(p, t)),
                    Some(t) if offset > t => {
                        tracing::warn!(
                            partition = p,
                            from = t,
                            to = offset,
                            "records before this offset are no longer in the topic (retention) or were control records"
                        );
                    }
                    _ => {}
                }
                state.phase = Phase::Active;
            }
        }
        let sync_point = state.sync_point;
        let pushed = self.sink.push(self.txn.batch_mut(), r)?;
        if pushed == Pushed::NeedsLookup {
            return Ok(Next::Lookup);
        }
        self.met_bad_records();
        self.taken(r, pushed, sync_point);
        Ok(Next::Continue)
    }

    /// Applies the bad records the sink met: a skipped one is counted with the transaction;
    /// a stop pauses its partition and ends its range before the bad record.
    fn met_bad_records(&mut self) {
        let bad = self.sink.bad_records(self.txn.batch_mut());
        if bad.is_empty() {
            return;
        }
        let now_ms = jiff::Timestamp::now().as_millisecond();
        for b in bad {
            let report = kafkatable_crds::report::BadRecordReport {
                partition: b.partition,
                offset: b.offset,
                reason: b.error.to_string(),
                at_ms: now_ms,
            };
            match b.action {
                Action::Skipped => self.txn.skip(),
                Action::Stopped => self.stop(b.partition, b.offset, &report),
                Action::DeadLettered => {
                    let sent = self
                        .partitions
                        .get(&b.partition)
                        .and_then(|s| s.sent.as_ref())
                        .is_some_and(|s| s.offsets.contains(&b.offset));
                    self.txn.dead_letter(b.letter.filter(|_| !sent));
                }
            }
            self.health.update(|r| r.last_bad_record = Some(report));
        }
    }

    /// Stops partition `p` at the bad record at `offset`.
    fn stop(&mut self, p: i32, offset: i64, report: &kafkatable_crds::report::BadRecordReport) {
        let Some(state) = self.partitions.get_mut(&p) else {
            return;
        };
        if let Phase::Stopped { offset: at } = state.phase
            && at <= offset
        {
            return;
        }
        state.phase = Phase::Stopped { offset };
        let sync_point = state.sync_point;
        self.source.pause(&[p]);
        let held = self.txn.truncate(p, offset);
        // Without a sync point in the table (nothing committed yet for it), the consumer
        // group's offset is where a restart reads from: at the bad record, not past it.
        if !held && sync_point.is_none() {
            self.source.commit_offsets(&[(p, offset)]);
        }
        self.metrics
            .bad_records
            .with_label_values(&[Action::Stopped.as_str()])
            .inc();
        self.health.update(|r| {
            r.stopped.retain(|s| s.partition != p);
            r.stopped.push(report.clone());
            r.stopped.sort_by_key(|s| s.partition);
        });
    }

    /// Whether a record of `p` would be dropped (its partition stopped).
    fn stopped(&self, p: i32) -> bool {
        self.partitions
            .get(&p)
            .is_some_and(|s| matches!(s.phase, Phase::Stopped { .. }))
    }

    /// A record that waited for the sink's lookup (its partition is active: nothing ran
    /// between its push and this).
    async fn lookup(&mut self, r: &S::Record<'_>) -> Result<(), IngesterError> {
        let pushed = self.sink.lookup(self.txn.batch_mut(), r).await?;
        self.met_bad_records();
        let sync_point = self
            .partitions
            .get(&r.partition())
            .and_then(|s| s.sync_point);
        self.taken(r, pushed, sync_point);
        Ok(())
    }

    /// Counts a record the sink took into the transaction (not when its partition stopped at it
    /// or before it).
    fn taken(&mut self, r: &S::Record<'_>, pushed: Pushed, sync_point: Option<i64>) {
        let p = r.partition();
        if self.stopped(p) {
            return;
        }
        let payload_bytes = r.payload().map_or(0, <[u8]>::len);
        self.unstaged |= pushed == Pushed::Ready;
        self.txn
            .add(p, sync_point, r.offset(), payload_bytes, r.timestamp_ms());
        self.metrics.records_consumed.inc();
        self.metrics.bytes_consumed.inc_by(payload_bytes as u64);
    }

    /// Hands the rows that are ready to the table's writer, which encodes them now (instead of
    /// holding Arrow until the commit). A writer that fails drops what it staged: the
    /// partitions go back to the table's sync points.
    async fn stage(&mut self) -> Result<(), IngesterError> {
        self.unstaged = false;
        let staged = self.sink.stage(self.txn.batch_mut(), false).await;
        self.met_bad_records();
        let bytes = self.sink.buffered_bytes(self.txn.batch());
        self.txn.set_bytes(bytes);
        if let Err(e) = staged {
            self.stage_failed(e).await?;
        }
        Ok(())
    }

    /// Commits the transaction, then mirrors its offsets to the consumer group.
    async fn commit_now(&mut self) -> Result<(), IngesterError> {
        self.unstaged = false;
        self.last_commit = Instant::now();
        if self.txn.is_empty() {
            return Ok(());
        }
        // Everything decoded first: a bad record met now still ends its partition's range.
        let staged = self.sink.stage(self.txn.batch_mut(), true).await;
        self.met_bad_records();
        if let Err(e) = staged {
            return self.stage_failed(e).await;
        }
        if self.txn.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.send_dead_letters().await {
            return self.stage_failed(e).await;
        }
        let txn = std::mem::replace(&mut self.txn, Transaction::new(self.sink.batch()));
        let skipped = txn.skipped();
        let dead_lettered = txn.dead_lettered();
        let ranges = txn.ranges();
        let rewinds = rewinds(&txn);
        let newest_ms = txn.newest_ms();
        let rows = txn.records();
        let bytes = txn.bytes();
        let started = Instant::now();
        let span = tracing::info_span!("commit", partitions = ranges.len(), rows);
        let outcome = {
            let _enter = span.enter();
            self.sink.commit(txn).await
        };
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.last_commit = Instant::now();
        match outcome {
            Ok(CommitOutcome::Committed {
                version,
                snapshot_id,
            }) => {
                self.failures = 0;
                self.commit_failures = 0;
                self.health.table(None);
                let now_ms = jiff::Timestamp::now().as_millisecond();
                self.health.update(|r| {
                    r.commit_failures = 0;
                    r.table_version = Some(version);
                    r.snapshot_id = snapshot_id;
                    r.last_commit_ms = Some(now_ms);
                    r.newest_record_ms = r.newest_record_ms.max(newest_ms);
                    for range in &ranges {
                        r.sync_points.insert(range.partition, range.next);
                    }
                });
                self.metrics.commits.inc();
                self.metrics
                    .rows_committed
                    .inc_by(rows.saturating_sub(skipped));
                if skipped > 0 {
                    self.metrics
                        .bad_records
                        .with_label_values(&[Action::Skipped.as_str()])
                        .inc_by(skipped);
                    self.health.update(|r| r.skipped_records += skipped);
                }
                if skipped + dead_lettered > 0 {
                    self.health.bad_records(skipped + dead_lettered);
                }
                if dead_lettered > 0 {
                    self.metrics
                        .bad_records
                        .with_label_values(&[Action::DeadLettered.as_str()])
                        .inc_by(dead_lettered);
                    self.health
                        .update(|r| r.dead_lettered_records += dead_lettered);
                }
                self.metrics.batch_rows.observe(rows as f64);
                self.metrics.batch_bytes.observe(bytes as f64);
                let mut offsets = Vec::with_capacity(ranges.len());
                for r in &ranges {
                    if let Some(state) = self.partitions.get_mut(&r.partition) {
                        state.sync_point = Some(r.next);
                        // The group's offset says how far dead letters are decided: while that
                        // is past the table, mirroring the table would erase it.
                        if state.sent.as_ref().is_some_and(|s| s.until > r.next) {
                            continue;
                        }
                        state.sent = None;
                    }
                    self.metrics
                        .committed_offset
                        .with_label_values(&[&r.partition.to_string()])
                        .set(r.next);
                    offsets.push((r.partition, r.next));
                }
                tracing::info!(
                    version,
                    rows,
                    partitions = ranges.len(),
                    "committed to the table"
                );
                self.maybe_crash();
                self.source.commit_offsets(&offsets);
            }
            Ok(CommitOutcome::Conflict { partitions }) => {
                self.metrics.commit_conflicts.inc();
                tracing::info!(
                    ?partitions,
                    "another ingester committed these partitions first; re-reading the table"
                );
                self.rewind(&rewinds).await;
            }
            // The sink dropped the batch.
            Err(e) => self.failed(e, &rewinds).await?,
        }
        Ok(())
    }

    /// Sends the transaction's dead letters, one transaction per partition, each with the
    /// partition's progress: how far its records are decided, and which of them the
    /// dead-letter topic holds past the table's sync point.
    async fn send_dead_letters(&mut self) -> Result<(), IngesterError> {
        let letters = self.txn.letters().clone();
        for (p, letters) in letters {
            let Some(range) = self.txn.ranges().into_iter().find(|r| r.partition == p) else {
                continue;
            };
            let Some(state) = self.partitions.get(&p) else {
                continue;
            };
            let first = self.txn.first(p).unwrap_or(range.next);
            let mut sent = state.sent.clone().unwrap_or(Sent {
                from: Some(range.expected.unwrap_or(first)),
                ..Sent::default()
            });
            sent.until = sent.until.max(range.next);
            sent.offsets.extend(letters.iter().map(|l| l.offset));
            match &mut self.dead_letter_table {
                Some(table) => table.send(p, &letters, &sent).await?,
                None => self.source.dead_letters(p, &letters, &sent).await?,
            }
            tracing::info!(
                partition = p,
                records = letters.len(),
                until = sent.until,
                "dead letters sent"
            );
            if let Some(state) = self.partitions.get_mut(&p) {
                state.sent = Some(sent);
            }
            let chance = self.faults.crash_after_dead_letters;
            if chance > 0.0 && clock_fraction() < chance {
                tracing::warn!(
                    "fault injection: aborting between the dead letters and the table commit"
                );
                std::process::abort();
            }
        }
        Ok(())
    }

    /// A failed staging: the transaction is dropped and its partitions rewound.
    async fn stage_failed(&mut self, e: IngesterError) -> Result<(), IngesterError> {
        let txn = std::mem::replace(&mut self.txn, Transaction::new(self.sink.batch()));
        let rewinds = rewinds(&txn);
        self.sink.discard(txn.into_batch()).await;
        self.failed(e, &rewinds).await
    }

    /// A failed commit (or staging): report it, read the ranges again from the table's sync
    /// points, and pause consumption for a back-off, so that an outage of the table or the
    /// catalog holds no more than what was buffered, and the ingester carries on once it ends.
    /// What no retry can mend (a refused table feature, a bad record) stops the ingester.
    async fn failed(&mut self, e: IngesterError, ranges: &[Rewind]) -> Result<(), IngesterError> {
        if !e.is_retryable() {
            return Err(e);
        }
        self.metrics.commit_failures.inc();
        tracing::warn!(error = %e, "table commit failed; the records will be read again");
        self.rewind(ranges).await;
        // Reported after the rewind, whose reads may succeed while commits do not.
        self.health.table(Some(e.to_string()));
        // A table that cannot even be read is reported as unreachable, not as failing commits.
        if e.kind() != ErrorKind::TableUnreachable {
            self.commit_failures += 1;
        }
        let failures = self.commit_failures;
        self.health.update(|r| r.commit_failures = failures);
        if self.exit_after > 0 && failures >= self.exit_after {
            tracing::error!(
                failures,
                "table commits failed {failures} times in a row (spec.errors.commitFailures.exitAfter); giving up"
            );
            return Err(e);
        }
        self.back_off();
        Ok(())
    }

    /// Seeks the partitions of a dropped transaction back to the table's sync points.
    async fn rewind(&mut self, ranges: &[Rewind]) {
        let partitions: Vec<i32> = ranges.iter().map(|r| r.partition).collect();
        let points = match self.table_sync_points(&partitions).await {
            Ok(points) => points,
            // The table is unreachable: keep the old sync points; the next commit re-checks.
            Err(_) => ranges
                .iter()
                .filter_map(|r| r.expected.map(|expected| (r.partition, expected)))
                .collect(),
        };
        for &Rewind {
            partition: p,
            first,
            ..
        } in ranges
        {
            let Some(state) = self.partitions.get_mut(&p) else {
                continue; // revoked meanwhile
            };
            // A partition stopped after these records reads them again, to stop again at the
            // bad one.
            let was_stopped = matches!(state.phase, Phase::Stopped { .. });
            let sync_point = points.get(&p).copied();
            // Without a sync point in the table, go back to the first record that was dropped:
            // the consumer's position is past it.
            let target = sync_point.or(first);
            state.sync_point = sync_point;
            state.phase = Phase::Seeking {
                target,
                sought: false,
            };
            if let Some(offset) = target {
                self.seek(p, offset).await;
            }
            if was_stopped {
                self.health
                    .update(|r| r.stopped.retain(|s| s.partition != p));
                if self.retry_at.is_none() {
                    self.source.resume(&[p]);
                }
            }
        }
        self.report_sync_points();
    }
}

/// A partition of a dropped transaction, to be read again.
#[derive(Debug, Clone, Copy)]
struct Rewind {
    partition: i32,
    /// The table's sync point the range started from.
    expected: Option<i64>,
    /// The first offset of the dropped range.
    first: Option<i64>,
}

fn rewinds<B>(txn: &Transaction<B>) -> Vec<Rewind> {
    txn.ranges()
        .iter()
        .map(|r| Rewind {
            partition: r.partition,
            expected: r.expected,
            first: txn.first(r.partition),
        })
        .collect()
}

/// `delay` give or take a fifth (enough to keep the pods of a table from retrying in step).
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.8 + 0.4 * clock_fraction())
}

/// A number in [0, 1) from the clock's nanoseconds: random enough for jitter and fault
/// injection, without a random number generator.
fn clock_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

#[cfg(test)]
mod tests;
