//! The run loop: consume, decode, batch, commit to the table with the offsets, then commit the
//! same offsets to the consumer group.
//!
//! Exactly once: each partition's buffer starts at the table's sync point for it. A commit
//! carries the next offset of every partition it covers and is refused when the table moved
//! meanwhile; then the buffers are dropped and the partitions seek back to the table's sync
//! points. The Kafka group offsets are only a mirror for lag tools: a crash after the table
//! commit but before the Kafka commit is harmless, since assignment always seeks to the table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use kafkatable_crds::IngesterConfig;
use kafkatable_crds::config::StartPosition;
use kafkatable_crds::spec::{ErrorPolicy, Format, SchemaEvolution, WriteMode};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::commit::{CommitOutcome, Committer, PartitionRange, SyncPoints};
use crate::decode::{self, PayloadKind, Pending};
use crate::error::{DecodeError, IngesterError};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::schema;
use crate::source::{Assignment, CALL_TIMEOUT, Context};

/// The first wait after a failed table operation; it doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts while the table cannot be written.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
}

struct PartitionState {
    /// The table's sync point where the buffered records start.
    expected: Option<i64>,
    /// The offset after the last buffered record.
    next: Option<i64>,
    /// The offset of the first record read since the table's sync point (or since assignment
    /// when the table has none): where a rewind goes back to when the table has no sync point.
    first: Option<i64>,
    /// The Kafka timestamp of the newest buffered record (ms since the epoch).
    newest_ms: Option<i64>,
    phase: Phase,
    pending: Pending,
    /// Decoded chunks not yet handed to the table writer.
    chunks: Vec<RecordBatch>,
    /// Rows and Arrow bytes handed to the table writer since the last commit.
    staged_rows: u64,
    staged_bytes: u64,
}

impl PartitionState {
    fn new(
        sync_point: Option<i64>,
        target: Option<i64>,
        kind: PayloadKind,
        schema: Option<&SchemaRef>,
    ) -> Self {
        let mut pending = Pending::default();
        pending.use_schema(kind, schema);
        Self {
            expected: sync_point,
            next: sync_point,
            first: None,
            newest_ms: None,
            phase: Phase::Seeking {
                target,
                sought: false,
            },
            pending,
            chunks: Vec::new(),
            staged_rows: 0,
            staged_bytes: 0,
        }
    }

    fn has_records(&self) -> bool {
        !self.pending.is_empty() || !self.chunks.is_empty() || self.staged_rows > 0
    }
}

/// One ingester.
pub struct Ingester {
    config: IngesterConfig,
    kind: PayloadKind,
    /// Shared with the run loop, which holds a received message (borrowing the consumer)
    /// while it updates the rest of `self`: no copy of each message.
    consumer: Arc<StreamConsumer<Context>>,
    events: UnboundedReceiver<Assignment>,
    committer: Committer,
    partitions: BTreeMap<i32, PartitionState>,
    value_schema: Option<SchemaRef>,
    metrics: Metrics,
    health: Arc<Health>,
    buffered_records: u64,
    buffered_bytes: u64,
    /// Some partition has decoded chunks for the table writer.
    unstaged: bool,
    last_commit: Instant,
    /// Failed table operations in a row (the back-off grows with them).
    failures: u32,
    /// Failed commits in a row that reached the table (reported; an unreachable table is
    /// reported as such instead).
    commit_failures: u32,
    /// While the table cannot be written or read, consumption is paused until then.
    retry_at: Option<Instant>,
    /// Fault injection for tests: the probability of aborting between a table commit and the
    /// Kafka commit (`KAFKATABLE_FAULT_CRASH_AFTER_TABLE_COMMIT`).
    crash_after_table_commit: f64,
}

impl Ingester {
    pub fn new(
        config: IngesterConfig,
        consumer: StreamConsumer<Context>,
        events: UnboundedReceiver<Assignment>,
        committer: Committer,
        metrics: Metrics,
        health: Arc<Health>,
    ) -> Result<Self, IngesterError> {
        let kind = match config.source.format {
            Format::Json => PayloadKind::Json,
            Format::String => PayloadKind::Text,
            Format::Bytes => PayloadKind::Bytes,
            other => {
                return Err(IngesterError::Unsupported(format!(
                    "spec.source.format {other:?} is not implemented yet"
                )));
            }
        };
        if config.errors.policy != ErrorPolicy::Fail {
            return Err(IngesterError::Unsupported(format!(
                "spec.errors.policy {:?} is not implemented yet (fail is)",
                config.errors.policy
            )));
        }
        if config.table.mode == WriteMode::Upsert {
            return Err(IngesterError::Unsupported(
                "spec.table.mode upsert is not implemented yet (append is)".into(),
            ));
        }
        if config.maintenance.compaction_enabled || config.maintenance.retention_enabled {
            return Err(IngesterError::Unsupported(
                "spec.maintenance compaction and retention are not implemented yet".into(),
            ));
        }
        let value_schema = match kind {
            // An existing table's columns, not a schema inferred again from the first new
            // records (see `crate::schema`).
            PayloadKind::Json if config.table.columns.is_empty() => {
                committer.table_schema().map(|table| {
                    let values = schema::value_columns(&table, &config.table.partition_by);
                    tracing::info!(schema = %values, "decoding against the table's columns");
                    Arc::new(values)
                })
            }
            PayloadKind::Json => Some(Arc::new(columns_schema(&config)?)),
            raw => Some(Arc::new(decode::raw_value_schema(raw))),
        };
        health.table(None);
        Ok(Self {
            config,
            kind,
            consumer: Arc::new(consumer),
            events,
            committer,
            partitions: BTreeMap::new(),
            value_schema,
            metrics,
            health,
            buffered_records: 0,
            buffered_bytes: 0,
            unstaged: false,
            last_commit: Instant::now(),
            failures: 0,
            commit_failures: 0,
            retry_at: None,
            crash_after_table_commit: 0.0,
        })
    }

    /// Aborts the process after a table commit, before the Kafka commit, with this
    /// probability (tests of the exactly-once protocol only).
    pub fn with_crash_after_table_commit(mut self, probability: f64) -> Self {
        self.crash_after_table_commit = probability.clamp(0.0, 1.0);
        self
    }

    fn maybe_crash(&self) {
        if self.crash_after_table_commit <= 0.0 {
            return;
        }
        if clock_fraction() < self.crash_after_table_commit {
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
        let interval = Duration::from_millis(self.config.commit.interval_ms.max(1));
        // The interval is checked on this tick, not per record (reading the clock per record
        // is a measurable share of the consume path); a commit is at most a tick late.
        let mut tick = tokio::time::interval(
            (interval / 10).clamp(Duration::from_millis(10), Duration::from_millis(250)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let consumer = self.consumer.clone();
        loop {
            let ticked = tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("shutting down: committing what is buffered");
                    self.consumer.unsubscribe();
                    self.commit().await?;
                    return Ok(());
                }
                event = self.events.recv() => {
                    if let Some(event) = event {
                        self.on_assignment(event).await?;
                    }
                    false
                }
                message = consumer.recv() => {
                    match message {
                        Ok(m) => {
                            // Apply rebalances that arrived with this poll before the record.
                            while let Ok(event) = self.events.try_recv() {
                                self.on_assignment(event).await?;
                            }
                            self.on_message(&m)?;
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
                self.stage_chunks().await?;
            }
            // While backing off, the next attempt waits for the retry (what the prefetch queue
            // still delivers is little: consumption is paused).
            if self.retry_at.is_none() && self.commit_due(ticked.then_some(interval)) {
                self.observe_buffer();
                self.commit().await?;
                self.observe_buffer();
            }
        }
    }

    fn observe_buffer(&self) {
        let bytes = i64::try_from(self.buffered_bytes).unwrap_or(i64::MAX);
        self.metrics.buffered_bytes.set(bytes);
        if bytes > self.metrics.buffered_bytes_peak.get() {
            self.metrics.buffered_bytes_peak.set(bytes);
        }
    }

    /// Whether the buffer is full, or (with `interval`, on the tick) the interval has passed.
    fn commit_due(&self, interval: Option<Duration>) -> bool {
        self.buffered_records > 0
            && (self.buffered_records >= self.config.commit.max_records
                || self.buffered_bytes >= self.config.commit.max_bytes
                || interval.is_some_and(|i| self.last_commit.elapsed() >= i))
    }

    async fn on_assignment(&mut self, event: Assignment) -> Result<(), IngesterError> {
        match event {
            Assignment::Assigned(partitions) => {
                // A table that does not answer leaves the partitions waiting (paused) rather
                // than blocking the loop, which must keep polling to stay in the group.
                let points = match self.table_sync_points(&partitions).await {
                    Ok(points) => Some(points),
                    Err(e) if !e.is_retryable() => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, ?partitions, "cannot read the sync points of assigned partitions; they wait");
                        None
                    }
                };
                for &p in &partitions {
                    let state = match &points {
                        Some(points) => self.assigned_state(p, points.get(&p).copied()),
                        None => {
                            let mut state = PartitionState::new(
                                None,
                                None,
                                self.kind,
                                self.value_schema.as_ref(),
                            );
                            state.phase = Phase::Waiting { first: None };
                            state
                        }
                    };
                    self.partitions.insert(p, state);
                }
                if points.is_none() {
                    self.back_off();
                }
                // A partition paused before it was revoked must not come back paused.
                if self.retry_at.is_some() {
                    self.pause(&partitions);
                } else {
                    self.resume(&partitions);
                }
                self.report_sync_points();
            }
            Assignment::Revoked(partitions) => {
                // The table writer holds the revoked partitions' rows among the others': commit
                // them all now rather than re-read the others. (The new owner starts from the
                // table's sync points; whichever of us commits second sees them moved.)
                let buffered = partitions.iter().any(|p| {
                    self.partitions
                        .get(p)
                        .is_some_and(PartitionState::has_records)
                });
                if buffered {
                    self.commit().await?;
                }
                for p in partitions {
                    if let Some(state) = self.partitions.remove(&p) {
                        tracing::info!(
                            partition = p,
                            dropped = state.pending.len(),
                            "partition revoked; its buffer is dropped"
                        );
                    }
                }
                self.recount();
                self.report_sync_points();
            }
        }
        self.metrics
            .assigned_partitions
            .set(self.partitions.len() as i64);
        Ok(())
    }

    /// The state of a partition assigned with the table's sync point for it.
    fn assigned_state(&self, p: i32, sync_point: Option<i64>) -> PartitionState {
        let target = match (sync_point, self.config.source.start) {
            (Some(n), _) => Some(n),
            (None, StartPosition::TimestampMillis(ms)) => self.offset_for_time(p, ms),
            (None, _) => None,
        };
        tracing::info!(partition = p, sync_point, target, "partition assigned");
        PartitionState::new(sync_point, target, self.kind, self.value_schema.as_ref())
    }

    /// Held partitions and their sync points, as `/status` and `/readyz` report them: ready
    /// once every held partition knows its sync point.
    fn report_sync_points(&self) {
        let held: Vec<i32> = self.partitions.keys().copied().collect();
        let points: BTreeMap<i32, i64> = self
            .partitions
            .iter()
            .filter_map(|(p, s)| Some((*p, s.expected?)))
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
        self.pause(&all);
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
            let points = match self.table_sync_points(&partitions).await {
                Ok(points) => points,
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "the sync points still cannot be read");
                    self.back_off();
                    return Ok(());
                }
            };
            for (p, first) in waiting {
                let mut state = self.assigned_state(p, points.get(&p).copied());
                // Without a sync point, go back to the first record dropped while waiting
                // (the consumer's position is past it).
                let target = match state.phase {
                    Phase::Seeking { target, .. } => target.or(first),
                    _ => first,
                };
                let sought = target.is_some_and(|t| self.seek(p, t));
                state.phase = Phase::Seeking { target, sought };
                self.partitions.insert(p, state);
            }
            self.report_sync_points();
        }
        self.retry_at = None;
        let all: Vec<i32> = self.partitions.keys().copied().collect();
        self.resume(&all);
        tracing::info!("consumption resumed");
        Ok(())
    }

    fn partition_list(&self, partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for &p in partitions {
            list.add_partition(&self.config.source.topic, p);
        }
        list
    }

    fn pause(&self, partitions: &[i32]) {
        if partitions.is_empty() {
            return;
        }
        if let Err(e) = self.consumer.pause(&self.partition_list(partitions)) {
            tracing::warn!(error = %e, ?partitions, "cannot pause partitions");
        }
    }

    fn resume(&self, partitions: &[i32]) {
        if partitions.is_empty() {
            return;
        }
        if let Err(e) = self.consumer.resume(&self.partition_list(partitions)) {
            tracing::warn!(error = %e, ?partitions, "cannot resume partitions");
        }
    }

    async fn table_sync_points(&mut self, partitions: &[i32]) -> Result<SyncPoints, IngesterError> {
        let result = self.committer.sync_points(partitions).await;
        self.health
            .table(result.as_ref().err().map(ToString::to_string));
        result
    }

    fn offset_for_time(&self, partition: i32, millis: i64) -> Option<i64> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.config.source.topic, partition, Offset::Offset(millis))
            .ok()?;
        let found = self.consumer.offsets_for_times(list, CALL_TIMEOUT).ok()?;
        let offset = found.elements().first().map(|e| e.offset());
        match offset {
            Some(Offset::Offset(n)) => Some(n),
            // No record at or after the time yet: start at the end.
            _ => self
                .consumer
                .fetch_watermarks(&self.config.source.topic, partition, CALL_TIMEOUT)
                .ok()
                .map(|(_, high)| high),
        }
    }

    fn seek(&self, partition: i32, offset: i64) -> bool {
        match self.consumer.seek(
            &self.config.source.topic,
            partition,
            Offset::Offset(offset),
            CALL_TIMEOUT,
        ) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(partition, offset, error = %e, "seek failed; will retry");
                false
            }
        }
    }

    fn on_message(&mut self, m: &impl Message) -> Result<(), IngesterError> {
        let p = m.partition();
        let offset = m.offset();
        let Some(phase) = self.partitions.get(&p).map(|s| s.phase) else {
            return Ok(()); // not (or no longer) ours
        };
        if let Phase::Waiting { first: None } = phase {
            if let Some(s) = self.partitions.get_mut(&p) {
                s.phase = Phase::Waiting {
                    first: Some(offset),
                };
            }
            return Ok(());
        }
        if let Phase::Waiting { .. } = phase {
            return Ok(());
        }
        if let Phase::Seeking { target, sought } = phase {
            match target {
                Some(t) if offset < t => {
                    self.metrics.records_already_committed.inc();
                    return Ok(());
                }
                Some(t) if offset > t && !sought => {
                    let done = self.seek(p, t);
                    if let Some(s) = self.partitions.get_mut(&p) {
                        s.phase = Phase::Seeking {
                            target,
                            sought: done,
                        };
                    }
                    return Ok(());
                }
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
            if let Some(s) = self.partitions.get_mut(&p) {
                s.phase = Phase::Active;
            }
        }
        let payload_len = m.payload().map_or(0, <[u8]>::len);
        let timestamp = m.timestamp().to_millis();
        let kind = self.kind;
        let Some(state) = self.partitions.get_mut(&p) else {
            return Ok(());
        };
        if let Err(refused) = state
            .pending
            .push(kind, m.payload(), m.key(), offset, timestamp)
        {
            self.on_refused(p, m, refused)?;
        }
        let Some(state) = self.partitions.get_mut(&p) else {
            return Ok(());
        };
        state.next = Some(offset + 1);
        state.first.get_or_insert(offset);
        if timestamp.is_some() {
            state.newest_ms = state.newest_ms.max(timestamp);
        }
        self.metrics.records_consumed.inc();
        self.metrics.bytes_consumed.inc_by(payload_len as u64);
        self.buffered_records += 1;
        self.buffered_bytes += payload_len as u64;
        if state.pending.is_full() {
            self.decode_partition(p)?;
        }
        Ok(())
    }

    /// A record the partition's decoder refused. Records with new fields widen the schema
    /// (with `schemaEvolution: addColumns`); anything else stops the ingester.
    fn on_refused(
        &mut self,
        p: i32,
        m: &impl Message,
        refused: decode::Refused,
    ) -> Result<(), IngesterError> {
        let error = refused.into_error(&self.config.source.topic, p);
        if !decode::is_unknown_field(&error)
            || self.config.table.schema_evolution != SchemaEvolution::AddColumns
        {
            return Err(self.decode_failed(error));
        }
        // Close the chunk so far, which moves the partition to the newest schema, and try again;
        // when that lacks the fields too, the record waits for the chunk path, which widens it.
        self.decode_partition(p)?;
        let kind = self.kind;
        let timestamp = m.timestamp().to_millis();
        let Some(state) = self.partitions.get_mut(&p) else {
            return Ok(());
        };
        let push =
            |pending: &mut Pending| pending.push(kind, m.payload(), m.key(), m.offset(), timestamp);
        if push(&mut state.pending).is_err() {
            state.pending.use_schema(kind, None);
            if let Err(refused) = push(&mut state.pending) {
                let error = refused.into_error(&self.config.source.topic, p);
                return Err(self.decode_failed(error));
            }
        }
        Ok(())
    }

    /// Decodes a partition's pending records into an Arrow chunk; from then on its records
    /// are decoded against the newest schema (see [`decode::decode`]).
    fn decode_partition(&mut self, p: i32) -> Result<(), IngesterError> {
        let Some(state) = self.partitions.get_mut(&p) else {
            return Ok(());
        };
        if state.pending.is_empty() {
            state
                .pending
                .use_schema(self.kind, self.value_schema.as_ref());
            return Ok(());
        }
        // The payload bytes this chunk's Arrow columns replace in the buffer.
        let payload_bytes = state.pending.payload_bytes() as u64;
        let (schema, inferred) = match &self.value_schema {
            Some(s) => (s.clone(), false),
            None => {
                let inferred = Arc::new(decode::infer_json_schema(
                    &state.pending,
                    &self.config.source.topic,
                    p,
                )?);
                tracing::info!(schema = %inferred, "inferred the table schema from the first records");
                self.value_schema = Some(inferred.clone());
                (inferred, true)
            }
        };
        let topic = self.config.source.topic.clone();
        let metadata = self.config.table.metadata_columns;
        let batch = match decode::decode(
            self.kind,
            &mut state.pending,
            &schema,
            &topic,
            p,
            metadata,
        ) {
            Ok(batch) => batch,
            Err(e)
                if decode::is_unknown_field(&e)
                    && self.config.table.schema_evolution == SchemaEvolution::AddColumns =>
            {
                let inferred = decode::infer_json_schema(&state.pending, &topic, p)?;
                let table = self.committer.table_schema();
                let widened = Arc::new(schema::widen(&schema, &inferred, table.as_deref()));
                tracing::info!(schema = %widened, "records carry new fields: adding them as nullable columns");
                self.value_schema = Some(widened.clone());
                decode::decode(self.kind, &mut state.pending, &widened, &topic, p, metadata)
                    .map_err(|e| self.decode_failed(e))?
            }
            Err(e) => return Err(self.decode_failed(e)),
        };
        // Cloning a batch clones Arcs; the original names the record when the event time is bad.
        let batch = match crate::partition::add_columns(batch.clone(), &self.config.table) {
            Ok(with_partitions) => with_partitions,
            Err(bad) => {
                let offset = bad
                    .row
                    .and_then(|row| {
                        let offsets = batch.column_by_name(decode::OFFSET_COLUMN)?;
                        offsets
                            .as_primitive_opt::<arrow::datatypes::Int64Type>()
                            .map(|o| o.value(row))
                    })
                    .unwrap_or(-1);
                let reason = bad.reason;
                return Err(self.decode_failed(DecodeError::Record {
                    topic,
                    partition: p,
                    offset,
                    reason,
                }));
            }
        };
        self.buffered_bytes = self.buffered_bytes.saturating_sub(payload_bytes)
            + batch.get_array_memory_size() as u64;
        if let Some(state) = self.partitions.get_mut(&p) {
            state.chunks.push(batch);
            self.unstaged = true;
        }
        if inferred {
            // With the schema known, the other partitions decode as records arrive too.
            let others: Vec<i32> = self
                .partitions
                .keys()
                .copied()
                .filter(|q| *q != p)
                .collect();
            for q in others {
                self.decode_partition(q)?;
            }
        }
        Ok(())
    }

    fn decode_failed(&self, e: DecodeError) -> IngesterError {
        self.metrics.decode_errors.inc();
        tracing::error!(error = %e, "cannot decode a record; stopping (errors.policy: fail), nothing at or after it is committed");
        IngesterError::Decode(e)
    }

    /// Hands the decoded chunks of every partition to the table writer, which encodes them now
    /// (instead of holding Arrow until the commit). A writer that fails drops what it staged:
    /// the partitions go back to the table's sync points.
    async fn stage_chunks(&mut self) -> Result<(), IngesterError> {
        self.unstaged = false;
        let mut batches = Vec::new();
        for state in self.partitions.values_mut() {
            for chunk in state.chunks.drain(..) {
                state.staged_rows += chunk.num_rows() as u64;
                state.staged_bytes += chunk.get_array_memory_size() as u64;
                batches.push(chunk);
            }
        }
        if batches.is_empty() {
            return Ok(());
        }
        let staged = self.committer.stage(batches).await;
        self.recount();
        if let Err(IngesterError::Decode(bad)) = staged {
            // A value that would change on its way into the table.
            return Err(self.decode_failed(bad));
        }
        if let Err(e) = staged {
            let ranges = self.ranges();
            self.commit_failed(e, &ranges).await?;
            self.recount();
        }
        Ok(())
    }

    /// The offsets each partition with buffered records would commit.
    fn ranges(&self) -> Vec<PartitionRange> {
        self.partitions
            .iter()
            .filter(|(_, state)| state.has_records())
            .filter_map(|(&partition, state)| {
                Some(PartitionRange {
                    partition,
                    expected: state.expected,
                    next: state.next?,
                })
            })
            .collect()
    }

    /// Writes and commits everything buffered, then mirrors the offsets to the consumer group.
    async fn commit(&mut self) -> Result<(), IngesterError> {
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        for &p in &partitions {
            self.decode_partition(p)?;
        }
        self.stage_chunks().await?;
        let ranges = self.ranges();
        if ranges.is_empty() {
            self.last_commit = Instant::now();
            return Ok(());
        }
        let newest_ms = ranges
            .iter()
            .filter_map(|r| self.partitions.get(&r.partition)?.newest_ms)
            .max();
        let rows: u64 = self.partitions.values().map(|s| s.staged_rows).sum();
        let bytes: u64 = self.partitions.values().map(|s| s.staged_bytes).sum();
        let started = Instant::now();
        let span = tracing::info_span!("commit", partitions = ranges.len(), rows);
        let outcome = {
            let _enter = span.enter();
            self.committer.commit(&ranges).await
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
                self.metrics.rows_committed.inc_by(rows);
                self.metrics.batch_rows.observe(rows as f64);
                self.metrics.batch_bytes.observe(bytes as f64);
                let mut offsets = TopicPartitionList::new();
                for r in &ranges {
                    if let Some(state) = self.partitions.get_mut(&r.partition) {
                        state.expected = Some(r.next);
                        state.first = None;
                        state.staged_rows = 0;
                        state.staged_bytes = 0;
                    }
                    self.metrics
                        .committed_offset
                        .with_label_values(&[&r.partition.to_string()])
                        .set(r.next);
                    if let Err(e) = offsets.add_partition_offset(
                        &self.config.source.topic,
                        r.partition,
                        Offset::Offset(r.next),
                    ) {
                        tracing::warn!(error = %e, "cannot record a group offset");
                    }
                }
                tracing::info!(
                    version,
                    rows,
                    partitions = ranges.len(),
                    "committed to the table"
                );
                self.maybe_crash();
                if let Err(e) = self.consumer.commit(&offsets, CommitMode::Async) {
                    // The table holds the truth; the group offsets only mirror it for lag tools.
                    tracing::warn!(error = %e, "cannot commit offsets to the consumer group");
                }
            }
            Ok(CommitOutcome::Conflict { partitions }) => {
                self.metrics.commit_conflicts.inc();
                tracing::info!(
                    ?partitions,
                    "another ingester committed these partitions first; re-reading the table"
                );
                self.rewind(&ranges).await?;
            }
            Err(e) => self.commit_failed(e, &ranges).await?,
        }
        self.recount();
        Ok(())
    }

    /// A failed commit (or staging): report it, read the ranges again from the table's sync
    /// points, and pause consumption for a back-off, so that an outage of the table or the
    /// catalog holds no more than what was buffered, and the ingester carries on once it ends.
    /// What no retry can mend (a refused table feature, a bad record) stops the ingester.
    async fn commit_failed(
        &mut self,
        e: IngesterError,
        ranges: &[PartitionRange],
    ) -> Result<(), IngesterError> {
        if !e.is_retryable() {
            return Err(e);
        }
        self.metrics.commit_failures.inc();
        tracing::warn!(error = %e, "table commit failed; the records will be read again");
        self.rewind(ranges).await?;
        // Reported after the rewind, whose reads may succeed while commits do not.
        self.health.table(Some(e.to_string()));
        // A table that cannot even be read is reported as unreachable, not as failing commits.
        if !matches!(e, IngesterError::TableUnreachable { .. }) {
            self.commit_failures += 1;
        }
        let failures = self.commit_failures;
        self.health.update(|r| r.commit_failures = failures);
        self.back_off();
        Ok(())
    }

    /// Drops what is buffered for the ranges' partitions and seeks them to the table's sync
    /// points.
    async fn rewind(&mut self, ranges: &[PartitionRange]) -> Result<(), IngesterError> {
        let partitions: Vec<i32> = ranges.iter().map(|r| r.partition).collect();
        let points = match self.table_sync_points(&partitions).await {
            Ok(points) => points,
            // The table is unreachable: keep the old sync points; the next commit re-checks.
            Err(_) => ranges
                .iter()
                .filter_map(|r| r.expected.map(|e| (r.partition, e)))
                .collect(),
        };
        for r in ranges {
            let sync_point = points.get(&r.partition).copied();
            // Without a sync point in the table, go back to the first record that was dropped:
            // the consumer's position is past it.
            let first = self.partitions.get(&r.partition).and_then(|s| s.first);
            let target = sync_point.or(first);
            if let Some(state) = self.partitions.get_mut(&r.partition) {
                *state =
                    PartitionState::new(sync_point, target, self.kind, self.value_schema.as_ref());
            }
            if let Some(offset) = target {
                let done = self.seek(r.partition, offset);
                if let Some(state) = self.partitions.get_mut(&r.partition) {
                    state.phase = Phase::Seeking {
                        target,
                        sought: done,
                    };
                }
            }
        }
        Ok(())
    }

    fn recount(&mut self) {
        self.buffered_records = self
            .partitions
            .values()
            .map(|s| {
                s.pending.len() as u64
                    + s.chunks.iter().map(|c| c.num_rows() as u64).sum::<u64>()
                    + s.staged_rows
            })
            .sum();
        self.buffered_bytes = self
            .partitions
            .values()
            .map(|s| {
                s.pending.payload_bytes() as u64
                    + s.chunks
                        .iter()
                        .map(|c| c.get_array_memory_size() as u64)
                        .sum::<u64>()
            })
            .sum::<u64>()
            + self.committer.staged_bytes() as u64;
    }
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

/// The value schema of explicitly declared columns.
fn columns_schema(config: &IngesterConfig) -> Result<Schema, IngesterError> {
    config
        .table
        .columns
        .iter()
        .map(|c| column_type(&c.type_).map(|t| Field::new(&c.name, t, c.nullable)))
        .collect::<Option<Vec<_>>>()
        .map(Schema::new)
        .ok_or_else(|| IngesterError::Unsupported("a column type in spec.table.columns".into()))
}

/// Maps a column type of the spec to Arrow.
pub fn column_type(name: &str) -> Option<DataType> {
    if let Some(inner) = name.strip_prefix("list<").and_then(|r| r.strip_suffix('>')) {
        return Some(DataType::List(Arc::new(Field::new(
            "element",
            column_type(inner)?,
            true,
        ))));
    }
    if let Some(args) = name
        .strip_prefix("decimal(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (p, s) = args.split_once(',')?;
        return Some(DataType::Decimal128(
            p.trim().parse().ok()?,
            s.trim().parse().ok()?,
        ));
    }
    Some(match name {
        "boolean" => DataType::Boolean,
        "int" => DataType::Int32,
        "long" => DataType::Int64,
        "float" => DataType::Float32,
        "double" => DataType::Float64,
        "string" => DataType::Utf8,
        "binary" => DataType::Binary,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_types_map_to_arrow() {
        assert_eq!(column_type("long"), Some(DataType::Int64));
        assert_eq!(
            column_type("decimal(10,2)"),
            Some(DataType::Decimal128(10, 2))
        );
        assert!(matches!(
            column_type("list<string>"),
            Some(DataType::List(_))
        ));
        assert_eq!(column_type("uuid"), None);
    }
}
