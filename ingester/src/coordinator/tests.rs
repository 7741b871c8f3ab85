//! The coordinator against an in-memory topic and table, for the interleavings that chaos tests
//! only sample: revocation during a commit, a conflict right after a schema change, a seek that
//! fails, a crash between the table commit and the Kafka commit, a partition reassigned back
//! while its old commit is in flight. Time is tokio's paused clock: intervals and back-offs
//! pass as soon as nothing else can run.
//!
//! Every test ends with the same check: the table holds each offset of every partition exactly
//! once, and its sync points are the ends of the logs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::*;
use crate::deadletter::Sent;

/// A topic shared by the members of one group: per partition its records, and the group's
/// committed offsets.
#[derive(Default)]
struct Topic {
    logs: BTreeMap<i32, Vec<Vec<u8>>>,
    group: BTreeMap<i32, i64>,
    /// The dead-letter topic's committed records (partition, offset), and the progress the
    /// dead-letter transactions committed with the group's offsets (a plain offset commit
    /// replaces it, as Kafka's does).
    dead: Vec<(i32, i64)>,
    progress: BTreeMap<i32, Sent>,
    /// Each partition's dead-letter producer epoch: taking a transactional id fences the
    /// earlier holder.
    epochs: BTreeMap<i32, u64>,
}

#[derive(Default)]
struct Member {
    /// Assigned partitions and the position of each.
    positions: BTreeMap<i32, i64>,
    paused: BTreeSet<i32>,
    /// The next seeks that fail.
    failing_seeks: u32,
    seeks: Vec<(i32, i64)>,
    /// Offset commits to the group are lost (the process died right after the table commit).
    lose_offset_commits: bool,
    /// The partition served last (records are served round robin).
    last: i32,
    /// The epoch of this member's dead-letter producer of each partition.
    epochs: BTreeMap<i32, u64>,
}

/// One member's view of the topic.
#[derive(Clone)]
struct MemSource {
    topic: Arc<Mutex<Topic>>,
    member: Arc<Mutex<Member>>,
    /// The rebalance events, as the coordinator receives them.
    events: tokio::sync::mpsc::UnboundedSender<Assignment>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemSource {
    fn new(topic: &Arc<Mutex<Topic>>) -> (Self, UnboundedReceiver<Assignment>) {
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        let source = Self {
            topic: topic.clone(),
            member: Arc::default(),
            events,
        };
        (source, rx)
    }

    /// The group assigns `partitions` to this member: the rebalance event, and positions at
    /// the group's committed offsets (earliest without one).
    fn assign(&self, partitions: &[i32]) {
        let group = lock(&self.topic).group.clone();
        let mut m = lock(&self.member);
        for &p in partitions {
            m.positions.insert(p, group.get(&p).copied().unwrap_or(0));
        }
        drop(m);
        let _ = self.events.send(Assignment::Assigned(partitions.to_vec()));
    }

    /// The group takes `partitions` away. The event comes first, as librdkafka's callback
    /// does; the positions go when the coordinator has seen it (here: right away, since
    /// records of revoked partitions are ignored by the coordinator anyway).
    fn revoke(&self, partitions: &[i32]) {
        let mut m = lock(&self.member);
        for p in partitions {
            m.positions.remove(p);
            m.paused.remove(p);
        }
        drop(m);
        let _ = self.events.send(Assignment::Revoked(partitions.to_vec()));
    }
}

#[derive(Debug)]
struct MemRecord {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
}

impl SourceRecord for MemRecord {
    fn partition(&self) -> i32 {
        self.partition
    }
    fn offset(&self) -> i64 {
        self.offset
    }
    fn key(&self) -> Option<&[u8]> {
        None
    }
    fn payload(&self) -> Option<&[u8]> {
        Some(&self.payload)
    }
    fn timestamp_ms(&self) -> Option<i64> {
        None
    }
}

/// How long a test waits for one step of another member (virtual time).
const MINUTE: Duration = Duration::from_secs(60);

/// How often an idle in-memory source looks again (virtual time).
const POLL: Duration = Duration::from_millis(1);

impl Source for MemSource {
    type Record<'a> = MemRecord;
    type Error = String;

    async fn recv(&self) -> Result<MemRecord, String> {
        loop {
            {
                let topic = lock(&self.topic);
                let mut m = lock(&self.member);
                let last = m.last;
                let ready: Vec<i32> = m
                    .positions
                    .iter()
                    .filter(|(p, pos)| {
                        !m.paused.contains(p)
                            && topic
                                .logs
                                .get(p)
                                .is_some_and(|log| (**pos as usize) < log.len())
                    })
                    .map(|(p, _)| *p)
                    .collect();
                let next = ready.iter().find(|p| **p > last).or(ready.first()).copied();
                if let Some(p) = next {
                    let offset = m.positions[&p];
                    m.positions.insert(p, offset + 1);
                    m.last = p;
                    let payload = topic.logs[&p][offset as usize].clone();
                    return Ok(MemRecord {
                        partition: p,
                        offset,
                        payload,
                    });
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn seek(&self, partition: i32, offset: i64) -> Result<(), String> {
        let mut m = lock(&self.member);
        m.seeks.push((partition, offset));
        if m.failing_seeks > 0 {
            m.failing_seeks -= 1;
            return Err(format!("seek of partition {partition} failed"));
        }
        if let Some(pos) = m.positions.get_mut(&partition) {
            *pos = offset;
        }
        Ok(())
    }

    async fn offset_for_time(&self, _: i32, _: i64) -> Option<i64> {
        None
    }

    fn pause(&self, partitions: &[i32]) {
        let mut m = lock(&self.member);
        for p in partitions {
            if m.positions.contains_key(p) {
                m.paused.insert(*p);
            }
        }
    }

    fn resume(&self, partitions: &[i32]) {
        let mut m = lock(&self.member);
        for p in partitions {
            m.paused.remove(p);
        }
    }

    fn commit_offsets(&self, offsets: &[(i32, i64)]) {
        if lock(&self.member).lose_offset_commits {
            return;
        }
        let mut topic = lock(&self.topic);
        topic.group.extend(offsets.iter().copied());
        for (p, _) in offsets {
            topic.progress.remove(p);
        }
    }

    fn leave(&self) {}

    async fn fence(
        &self,
        partitions: &[(i32, Option<i64>)],
    ) -> Result<BTreeMap<i32, Sent>, IngesterError> {
        let mut topic = lock(&self.topic);
        let mut m = lock(&self.member);
        let mut sent = BTreeMap::new();
        for &(p, sync_point) in partitions {
            let epoch = topic.epochs.entry(p).or_default();
            *epoch += 1;
            m.epochs.insert(p, *epoch);
            if let Some(progress) = topic.progress.get(&p) {
                let parsed = Sent::parse(progress.until, &progress.metadata(), sync_point);
                if let Some(s) = parsed {
                    sent.insert(p, s);
                }
            }
        }
        Ok(sent)
    }

    async fn dead_letters(
        &self,
        partition: i32,
        letters: &[crate::bad::DeadLetter],
        sent: &Sent,
    ) -> Result<(), IngesterError> {
        let mut topic = lock(&self.topic);
        let mine = lock(&self.member).epochs.get(&partition).copied();
        if mine != topic.epochs.get(&partition).copied() {
            return Err(IngesterError::DeadLetters {
                topic: "dlq".into(),
                action: "commit",
                reason: "fenced".into(),
            });
        }
        // The broker's offset.metadata.max.bytes (default 4,096).
        if sent.metadata().len() > 4096 {
            return Err(IngesterError::DeadLetters {
                topic: "dlq".into(),
                action: "commit",
                reason: "OFFSET_METADATA_TOO_LARGE".into(),
            });
        }
        topic
            .dead
            .extend(letters.iter().map(|l| (l.partition, l.offset)));
        topic.progress.insert(partition, sent.clone());
        topic.group.insert(partition, sent.until);
        Ok(())
    }
}

/// Something that happens while a commit is in flight (another member commits, the group
/// rebalances), run before the commit's fence.
type Hook = Box<dyn FnOnce(&mut Table) + Send>;

/// An in-memory table: the rows (partition, offset, payload) and sync points of its commits.
#[derive(Default)]
struct Table {
    rows: Vec<(i32, i64, Vec<u8>)>,
    sync_points: SyncPoints,
    version: i64,
    /// The fields of the table's schema (a record `+name` adds one).
    fields: BTreeSet<String>,
    hooks: VecDeque<Hook>,
    /// The next commits fail with a retryable error after their fence.
    failing_commits: u32,
}

impl Table {
    /// Another writer commits `partition`'s records from its sync point up to `next`.
    fn commit_as_another_writer(&mut self, topic: &Topic, partition: i32, next: i64) {
        let from = self.sync_points.get(&partition).copied().unwrap_or(0);
        for offset in from..next {
            let payload = topic.logs[&partition][offset as usize].clone();
            self.rows.push((partition, offset, payload));
        }
        self.sync_points.insert(partition, next);
        self.version += 1;
    }
}

/// The table side, in memory: a batch is the records themselves.
struct MemSink {
    table: Arc<Mutex<Table>>,
    /// What a record `?<name>` needs looked up before it can be pushed (a registry's schema,
    /// say): the names looked up so far, and how often each.
    looked_up: Arc<Mutex<BTreeMap<String, u32>>>,
    /// What becomes of a bad record (a payload `!...`).
    action: Action,
}

/// The name a record `?<name>` needs looked up.
fn lookup_name(payload: &[u8]) -> Option<String> {
    let name = payload.strip_prefix(b"?")?;
    Some(String::from_utf8_lossy(name).into_owned())
}

#[derive(Default)]
struct MemBatch {
    records: Vec<(i32, i64, Vec<u8>)>,
    /// Fields the batch's records add to the table (committed when staged, before the data,
    /// as Delta's schema change is).
    new_fields: BTreeSet<String>,
    bad: Vec<BadRecord>,
}

impl Sink for MemSink {
    type Batch = MemBatch;

    fn batch(&self) -> MemBatch {
        MemBatch::default()
    }

    fn push<R: SourceRecord>(
        &mut self,
        batch: &mut MemBatch,
        record: &R,
    ) -> Result<Pushed, IngesterError> {
        let payload = record.payload().unwrap_or_default().to_vec();
        if lookup_name(&payload).is_some_and(|name| !lock(&self.looked_up).contains_key(&name)) {
            return Ok(Pushed::NeedsLookup);
        }
        if payload.starts_with(b"!") {
            batch.bad.push(BadRecord {
                partition: record.partition(),
                offset: record.offset(),
                error: crate::error::DecodeError::Record {
                    topic: "mem".into(),
                    partition: record.partition(),
                    offset: record.offset(),
                    reason: "a bad record".into(),
                },
                action: self.action,
                letter: (self.action == Action::DeadLettered).then(|| crate::bad::DeadLetter {
                    partition: record.partition(),
                    offset: record.offset(),
                    value: Some(payload.clone()),
                    ..Default::default()
                }),
            });
            return Ok(Pushed::Buffered);
        }
        if let Some(field) = payload.strip_prefix(b"+") {
            batch
                .new_fields
                .insert(String::from_utf8_lossy(field).into_owned());
        }
        batch
            .records
            .push((record.partition(), record.offset(), payload));
        Ok(if batch.new_fields.is_empty() {
            Pushed::Buffered
        } else {
            Pushed::Ready
        })
    }

    async fn lookup<R: SourceRecord>(
        &mut self,
        batch: &mut MemBatch,
        record: &R,
    ) -> Result<Pushed, IngesterError> {
        let payload = record.payload().unwrap_or_default();
        if let Some(name) = lookup_name(payload) {
            // A lookup takes a while; the paused clock moves on while it waits.
            tokio::time::sleep(Duration::from_millis(50)).await;
            *lock(&self.looked_up).entry(name).or_default() += 1;
        }
        let pushed = self.push(batch, record)?;
        assert_ne!(pushed, Pushed::NeedsLookup, "a sink never asks twice");
        Ok(pushed)
    }

    fn buffered_bytes(&self, batch: &MemBatch) -> u64 {
        batch.records.iter().map(|r| r.2.len() as u64).sum()
    }

    async fn stage(&mut self, batch: &mut MemBatch, _all: bool) -> Result<(), IngesterError> {
        let mut table = lock(&self.table);
        let new: Vec<String> = batch
            .new_fields
            .iter()
            .filter(|f| !table.fields.contains(*f))
            .cloned()
            .collect();
        if !new.is_empty() {
            table.fields.extend(new);
            table.version += 1;
        }
        Ok(())
    }

    async fn sync_points(&mut self, partitions: &[i32]) -> Result<SyncPoints, IngesterError> {
        let table = lock(&self.table);
        Ok(table
            .sync_points
            .iter()
            .filter(|(p, _)| partitions.is_empty() || partitions.contains(p))
            .map(|(p, n)| (*p, *n))
            .collect())
    }

    async fn commit(&mut self, txn: Transaction<MemBatch>) -> Result<CommitOutcome, IngesterError> {
        let ranges = txn.ranges();
        let mut batch = txn.into_batch();
        self.stage(&mut batch, true).await?;
        let mut table = lock(&self.table);
        if let Some(hook) = table.hooks.pop_front() {
            hook(&mut table);
        }
        let moved = crate::commit::moved(&ranges, &table.sync_points);
        if !moved.is_empty() {
            return Ok(CommitOutcome::Conflict { partitions: moved });
        }
        if table.failing_commits > 0 {
            table.failing_commits -= 1;
            return Err(IngesterError::table("mem", "commit", "the store is down"));
        }
        table.rows.extend(batch.records);
        for r in &ranges {
            table.sync_points.insert(r.partition, r.next);
        }
        table.version += 1;
        Ok(CommitOutcome::Committed {
            version: table.version,
            snapshot_id: None,
        })
    }

    async fn discard(&mut self, _batch: MemBatch) {}

    fn bad_records(&mut self, batch: &mut MemBatch) -> Vec<BadRecord> {
        std::mem::take(&mut batch.bad)
    }
}

struct Harness {
    topic: Arc<Mutex<Topic>>,
    table: Arc<Mutex<Table>>,
    /// The sinks' lookups, by name.
    looked_up: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Harness {
    /// `partitions` partitions of `records` records each (`p<partition>-<offset>`).
    fn new(partitions: i32, records: i64) -> Self {
        let mut topic = Topic::default();
        for p in 0..partitions {
            topic.logs.insert(
                p,
                (0..records)
                    .map(|o| format!("p{p}-{o}").into_bytes())
                    .collect(),
            );
        }
        Self {
            topic: Arc::new(Mutex::new(topic)),
            table: Arc::default(),
            looked_up: Arc::default(),
        }
    }

    /// A member with commits of at most `max_records` records (and at least every second).
    fn member(&self, max_records: u64) -> (MemSource, Coordinator<MemSource, MemSink>) {
        self.member_with(max_records, Action::Stopped, Arc::default())
    }

    /// A member whose bad records meet `action`, reporting into `health`.
    fn member_with(
        &self,
        max_records: u64,
        action: Action,
        health: Arc<Health>,
    ) -> (MemSource, Coordinator<MemSource, MemSink>) {
        let (source, events) = MemSource::new(&self.topic);
        let commit = CommitConfig {
            interval_ms: 1000,
            max_records,
            max_bytes: u64::MAX,
            target_file_size: 1 << 20,
        };
        let sink = MemSink {
            table: self.table.clone(),
            looked_up: self.looked_up.clone(),
            action,
        };
        let coordinator = Coordinator::new(
            source.clone(),
            events,
            sink,
            StartPosition::Earliest,
            commit,
            Metrics::new().expect("metrics"),
            health,
        );
        (source, coordinator)
    }

    fn produce(&self, partition: i32, payloads: &[&str]) {
        let mut topic = lock(&self.topic);
        let log = topic.logs.entry(partition).or_default();
        log.extend(payloads.iter().map(|p| p.as_bytes().to_vec()));
    }

    fn hook(&self, hook: impl FnOnce(&mut Table) + Send + 'static) {
        lock(&self.table).hooks.push_back(Box::new(hook));
    }

    /// Waits until `done` holds for the table, or fails saying `what` did not happen `within`
    /// (virtual time). Virtual time stands still while a coordinator is busy (a commit that
    /// conflicts forever, say): there is a deadline in real time too.
    async fn until(&self, what: &str, within: Duration, done: impl Fn(&Table) -> bool) {
        let deadline = Instant::now() + within;
        let real_deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done(&lock(&self.table)) {
            assert!(
                Instant::now() < deadline && std::time::Instant::now() < real_deadline,
                "{what} never happened: the table holds {:?}",
                lock(&self.table).sync_points
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the table's sync points are the ends of the logs.
    async fn caught_up(&self) {
        let ends: SyncPoints = lock(&self.topic)
            .logs
            .iter()
            .map(|(p, log)| (*p, log.len() as i64))
            .collect();
        let what = format!("catching up with {ends:?}");
        let within = Duration::from_secs(600);
        self.until(&what, within, |table| table.sync_points == ends)
            .await;
    }

    /// Every offset of every partition exactly once, each with its own payload.
    fn assert_exactly_once(&self) {
        let topic = lock(&self.topic);
        let table = lock(&self.table);
        let mut seen: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for (p, offset, payload) in &table.rows {
            assert_eq!(
                payload, &topic.logs[p][*offset as usize],
                "partition {p} offset {offset} holds another record's payload"
            );
            seen.entry(*p).or_default().push(*offset);
        }
        for (p, log) in &topic.logs {
            let mut offsets = seen.remove(p).unwrap_or_default();
            offsets.sort_unstable();
            let expected: Vec<i64> = (0..log.len() as i64).collect();
            assert_eq!(offsets, expected, "partition {p}: offsets in the table");
        }
    }
}

fn spawn(
    coordinator: Coordinator<MemSource, MemSink>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), IngesterError>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(coordinator.run(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

async fn stop(
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), IngesterError>>,
) {
    let _ = stop.send(());
    task.await
        .expect("the coordinator task")
        .expect("the coordinator's result");
}

#[tokio::test(start_paused = true)]
async fn one_member_commits_every_record_once() {
    let h = Harness::new(3, 250);
    let (source, coordinator) = h.member(100);
    source.assign(&[0, 1, 2]);
    let (tx, task) = spawn(coordinator);
    h.caught_up().await;
    stop(tx, task).await;
    h.assert_exactly_once();
    // Commits at 100 records: more than one commit, and the group offsets mirror the table.
    assert!(lock(&h.table).version > 3);
    assert_eq!(lock(&h.topic).group, lock(&h.table).sync_points);
}

/// Partition 1 moves to another member while a commit holding its records is in flight, and
/// the new owner commits first: the commit is refused, every partition of it is read again
/// from the table, and the revoked partition is not read again by the old owner.
#[tokio::test(start_paused = true)]
async fn revocation_during_a_commit_that_then_conflicts() {
    let h = Harness::new(2, 300);
    let (a, coordinator_a) = h.member(100);
    a.assign(&[0, 1]);
    let topic = h.topic.clone();
    let a_hook = a.clone();
    h.hook(move |table| {
        // The group moves partition 1 to member B, which commits it up to 150 first.
        a_hook.revoke(&[1]);
        table.commit_as_another_writer(&lock(&topic), 1, 150);
    });
    let (tx_a, task_a) = spawn(coordinator_a);
    // Member B takes partition 1 once the group has taken it from A.
    h.until("A's first commit", MINUTE, |table| table.hooks.is_empty())
        .await;
    let (b, coordinator_b) = h.member(100);
    b.assign(&[1]);
    let (tx_b, task_b) = spawn(coordinator_b);
    h.caught_up().await;
    stop(tx_a, task_a).await;
    stop(tx_b, task_b).await;
    h.assert_exactly_once();
    // A read partition 0 again from the table's sync point after the conflict.
    assert!(lock(&a.member).seeks.iter().any(|&(p, _)| p == 0));
    assert!(!lock(&a.member).positions.contains_key(&1));
}

/// A revocation that arrives while a commit is in flight which then lands: the revoked
/// partition's records are in the table once, and its new owner continues after them.
#[tokio::test(start_paused = true)]
async fn revocation_during_a_commit_that_lands() {
    let h = Harness::new(2, 300);
    let (a, coordinator_a) = h.member(100);
    a.assign(&[0, 1]);
    let a_hook = a.clone();
    h.hook(move |_| a_hook.revoke(&[1]));
    let (tx_a, task_a) = spawn(coordinator_a);
    let (b, coordinator_b) = h.member(100);
    let (tx_b, task_b) = spawn(coordinator_b);
    // B is assigned partition 1 once A has committed it (the group waits for A's revocation).
    h.until("A committing partition 1", MINUTE, |table| {
        table.sync_points.contains_key(&1)
    })
    .await;
    b.assign(&[1]);
    h.caught_up().await;
    stop(tx_a, task_a).await;
    stop(tx_b, task_b).await;
    h.assert_exactly_once();
}

/// The batch's new field is committed to the table's schema (a table version of its own) and
/// right after that another writer commits partition 0: the data commit is refused, and the
/// records, the one with the new field among them, are read again and committed once.
#[tokio::test(start_paused = true)]
async fn a_conflict_right_after_a_schema_change() {
    let h = Harness::new(2, 50);
    h.produce(0, &["+color"]);
    h.produce(1, &["+size"]);
    let (a, coordinator) = h.member(1000);
    a.assign(&[0, 1]);
    let topic = h.topic.clone();
    h.hook(move |table| {
        // The schema change landed first (staging), then another writer took partition 0.
        assert!(
            table.fields.contains("color"),
            "the schema change was not committed first"
        );
        table.commit_as_another_writer(&lock(&topic), 0, 20);
    });
    let (tx, task) = spawn(coordinator);
    h.caught_up().await;
    stop(tx, task).await;
    h.assert_exactly_once();
    let table = lock(&h.table);
    assert_eq!(
        table.fields,
        BTreeSet::from(["color".to_string(), "size".to_string()])
    );
}

/// After a conflict the seeks back to the table's sync points fail twice: records past the
/// sync point that still arrive from the old position are never taken as the next ones.
#[tokio::test(start_paused = true)]
async fn a_seek_that_fails_is_tried_again_and_nothing_past_the_gap_is_committed() {
    let h = Harness::new(1, 400);
    let (a, coordinator) = h.member(100);
    a.assign(&[0]);
    let topic = h.topic.clone();
    let a_hook = a.clone();
    h.hook(move |table| {
        // Another writer commits up to 60; the seeks back there fail twice.
        table.commit_as_another_writer(&lock(&topic), 0, 60);
        lock(&a_hook.member).failing_seeks = 2;
    });
    let (tx, task) = spawn(coordinator);
    h.caught_up().await;
    stop(tx, task).await;
    h.assert_exactly_once();
    let seeks = lock(&a.member).seeks.clone();
    assert!(
        seeks.iter().filter(|s| **s == (0, 60)).count() >= 3,
        "seeks: {seeks:?}"
    );
}

/// A member dies after each table commit, before its Kafka commit: the group offsets stay
/// behind the table, and the next member skips what the table holds.
#[tokio::test(start_paused = true)]
async fn a_crash_between_the_table_commit_and_the_kafka_commit() {
    let h = Harness::new(2, 200);
    let (a, coordinator_a) = h.member(50);
    lock(&a.member).lose_offset_commits = true;
    a.assign(&[0, 1]);
    let (_tx_a, task_a) = spawn(coordinator_a);
    h.until("A committing 100 rows", MINUTE, |table| {
        table.rows.len() >= 100
    })
    .await;
    // The crash: no shutdown commit, no group offsets.
    task_a.abort();
    assert!(lock(&h.topic).group.is_empty());
    let committed = lock(&h.table).rows.len();
    // More records, so that B has something to commit wherever A stopped.
    for p in 0..2 {
        h.produce(p, &["late-1", "late-2", "late-3"]);
    }
    let (b, coordinator_b) = h.member(50);
    b.assign(&[0, 1]);
    let skipped = coordinator_b.metrics.records_already_committed.clone();
    let (tx_b, task_b) = spawn(coordinator_b);
    h.caught_up().await;
    stop(tx_b, task_b).await;
    h.assert_exactly_once();
    // B started at the group's (missing) offsets and either skipped or sought past what A
    // had committed.
    let sought = lock(&b.member).seeks.len() as u64;
    assert!(
        skipped.get() + sought > 0,
        "B neither skipped nor sought over {committed} committed rows"
    );
}

/// Partition 0 is revoked and assigned back while a commit holding it is in flight, and in
/// between another member committed some of it: the old commit is refused, and the member
/// reads the partition from the table's new sync point.
#[tokio::test(start_paused = true)]
async fn a_partition_reassigned_back_while_its_old_commit_is_in_flight() {
    let h = Harness::new(1, 300);
    let (a, coordinator) = h.member(100);
    a.assign(&[0]);
    let topic = h.topic.clone();
    let a_hook = a.clone();
    h.hook(move |table| {
        a_hook.revoke(&[0]);
        table.commit_as_another_writer(&lock(&topic), 0, 140);
        a_hook.assign(&[0]);
    });
    let (tx, task) = spawn(coordinator);
    h.caught_up().await;
    stop(tx, task).await;
    h.assert_exactly_once();
}

/// Commits that fail (the store is down) pause consumption and retry after a back-off; what
/// was buffered is read again, nothing is lost or doubled.
#[tokio::test(start_paused = true)]
async fn failed_commits_back_off_and_lose_nothing() {
    let h = Harness::new(2, 300);
    lock(&h.table).failing_commits = 3;
    let (a, coordinator) = h.member(100);
    a.assign(&[0, 1]);
    let retries = coordinator.metrics.table_retries.clone();
    let (tx, task) = spawn(coordinator);
    h.caught_up().await;
    stop(tx, task).await;
    h.assert_exactly_once();
    assert_eq!(retries.get(), 3);
}

/// Records whose decoding needs something fetched first (a registry's schema) wait for the
/// sink's lookup in line: each is taken once, in offset order, and a name is fetched once.
#[tokio::test(start_paused = true)]
async fn a_record_that_needs_a_lookup_waits_for_it_in_line() {
    let h = Harness::new(2, 40);
    h.produce(0, &["?s1", "x", "?s1", "?s2", "y"]);
    h.produce(1, &["?s2", "z", "?s3"]);
    h.produce(0, &["after"]);
    let (a, coordinator) = h.member(15);
    a.assign(&[0, 1]);
    let (tx, task) = spawn(coordinator);
    h.caught_up().await;
    stop(tx, task).await;
    h.assert_exactly_once();
    let table = lock(&h.table);
    for p in 0..2 {
        let offsets: Vec<i64> = table
            .rows
            .iter()
            .filter(|r| r.0 == p)
            .map(|r| r.1)
            .collect();
        assert!(
            offsets.is_sorted(),
            "partition {p}: a record that waited for its lookup moved: {offsets:?}"
        );
    }
    let looked_up = lock(&h.looked_up).clone();
    let expected: BTreeMap<String, u32> = [("s1", 1), ("s2", 1), ("s3", 1)]
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    assert_eq!(looked_up, expected, "each name is looked up once");
}

/// The offsets of `partition` in the table, in order.
fn offsets_of(table: &Table, partition: i32) -> Vec<i64> {
    let mut offsets: Vec<i64> = table
        .rows
        .iter()
        .filter(|r| r.0 == partition)
        .map(|r| r.1)
        .collect();
    offsets.sort_unstable();
    offsets
}

/// A bad record with `errors.policy: fail` used to end the process, and the good records
/// buffered for every partition waited behind it. Now only its partition stops: the records
/// before it are committed, nothing at or after it, the other partitions keep flowing, the
/// report names it, and a restart stops there again, until a policy that skips it passes it.
#[tokio::test(start_paused = true)]
async fn a_bad_record_stops_only_its_partition_until_a_policy_passes_it() {
    let h = Harness::new(3, 20);
    h.produce(1, &["!bad", "after-1", "after-2"]);
    let health = Arc::new(Health::default());
    let (a, coordinator) = h.member_with(7, Action::Stopped, health.clone());
    a.assign(&[0, 1, 2]);
    let (tx, task) = spawn(coordinator);
    h.produce(0, &["more-0"]);
    h.until(
        "partitions 0 and 2 at their ends, 1 at its bad record",
        Duration::from_secs(60),
        |t| {
            t.sync_points.get(&0) == Some(&21)
                && t.sync_points.get(&2) == Some(&20)
                && t.sync_points.get(&1) == Some(&20)
        },
    )
    .await;
    // Partition 2 keeps flowing after the stop.
    h.produce(2, &["late-2"]);
    h.until("partition 2 past the stop", Duration::from_secs(60), |t| {
        t.sync_points.get(&2) == Some(&21)
    })
    .await;
    let report = health.report();
    assert_eq!(report.stopped.len(), 1, "{report:?}");
    assert_eq!(
        (report.stopped[0].partition, report.stopped[0].offset),
        (1, 20)
    );
    assert!(report.stopped[0].reason.contains("offset 20"), "{report:?}");
    assert_eq!(report.last_bad_record.as_ref().map(|b| b.offset), Some(20));
    stop(tx, task).await;
    {
        let table = lock(&h.table);
        assert_eq!(offsets_of(&table, 1), (0..20).collect::<Vec<_>>());
        assert_eq!(
            lock(&h.topic).group.get(&1),
            Some(&20),
            "the group mirrors the stop"
        );
    }

    // A restart reads partition 1 from its sync point and stops at the bad record again.
    let health = Arc::new(Health::default());
    let (b, coordinator) = h.member_with(7, Action::Stopped, health.clone());
    b.assign(&[0, 1, 2]);
    let (tx, task) = spawn(coordinator);
    h.until(
        "the restarted member stops again",
        Duration::from_secs(60),
        |_| !health.report().stopped.is_empty(),
    )
    .await;
    assert_eq!(health.report().stopped[0].offset, 20);
    stop(tx, task).await;
    assert_eq!(lock(&h.table).sync_points.get(&1), Some(&20));

    // With the policy changed to skip, the partition goes on past it.
    let health = Arc::new(Health::default());
    let (c, coordinator) = h.member_with(7, Action::Skipped, health.clone());
    c.assign(&[0, 1, 2]);
    let (tx, task) = spawn(coordinator);
    h.caught_up().await;
    stop(tx, task).await;
    let table = lock(&h.table);
    let mut expected: Vec<i64> = (0..20).collect();
    expected.extend([21, 22]);
    assert_eq!(
        offsets_of(&table, 1),
        expected,
        "all but the bad record, once each"
    );
    assert_eq!(health.report().skipped_records, 1);
    assert!(health.report().stopped.is_empty());
}

/// Skipped records are left out and counted once the commit past them lands; a commit that
/// fails and is read again does not count them twice.
#[tokio::test(start_paused = true)]
async fn skipped_records_are_counted_once_their_commit_lands() {
    let h = Harness::new(2, 30);
    h.produce(0, &["!a", "x", "!b"]);
    h.produce(1, &["!c"]);
    lock(&h.table).failing_commits = 2;
    let health = Arc::new(Health::default());
    let (a, coordinator) = h.member_with(100, Action::Skipped, health.clone());
    a.assign(&[0, 1]);
    let (tx, task) = spawn(coordinator);
    h.caught_up().await;
    stop(tx, task).await;
    let table = lock(&h.table);
    let mut expected: Vec<i64> = (0..30).collect();
    expected.push(31);
    assert_eq!(offsets_of(&table, 0), expected);
    assert_eq!(offsets_of(&table, 1), (0..30).collect::<Vec<_>>());
    assert_eq!(table.sync_points.get(&0), Some(&33));
    assert_eq!(health.report().skipped_records, 3);
}

/// `errors.commitFailures.exitAfter`: the ingester gives up after that many failed commits in a
/// row, and nothing of what it buffered is in the table.
#[tokio::test(start_paused = true)]
async fn the_ingester_gives_up_after_its_budget_of_failed_commits() {
    let h = Harness::new(1, 30);
    lock(&h.table).failing_commits = 10;
    let (a, coordinator) = h.member(10);
    a.assign(&[0]);
    let (_tx, task) = spawn(coordinator.with_exit_after(3));
    let result = tokio::time::timeout(Duration::from_secs(600), task)
        .await
        .expect("the coordinator gives up")
        .expect("the coordinator task");
    let e = result.expect_err("three failed commits in a row");
    assert!(e.to_string().contains("the store is down"), "{e}");
    assert_eq!(lock(&h.table).failing_commits, 7);
    assert!(lock(&h.table).rows.is_empty());
}

/// Dead letters are sent before the table commit, with the partition's progress in the
/// group's offsets: a crash between the two (here: a commit that fails, and a member that gives
/// up after one) leaves them in the dead-letter topic, and the next holder sends none of them
/// again while the table takes the good records once.
#[tokio::test(start_paused = true)]
async fn dead_letters_are_sent_once_through_a_crash_before_the_table_commit() {
    let h = Harness::new(2, 20);
    h.produce(0, &["!a", "x", "!b"]);
    h.produce(1, &["!c"]);
    lock(&h.table).failing_commits = 1;
    let (a, coordinator) = h.member_with(100, Action::DeadLettered, Arc::default());
    a.assign(&[0, 1]);
    let (_tx, task) = spawn(coordinator.with_exit_after(1));
    let gave_up = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the member gives up")
        .expect("the task");
    assert!(gave_up.is_err(), "the table commit failed");
    {
        let topic = lock(&h.topic);
        assert_eq!(
            topic.dead,
            vec![(0, 20), (0, 22), (1, 20)],
            "sent before the table commit"
        );
        assert!(lock(&h.table).rows.is_empty());
    }

    let health = Arc::new(Health::default());
    let (b, coordinator) = h.member_with(100, Action::DeadLettered, health.clone());
    b.assign(&[0, 1]);
    let (tx, task) = spawn(coordinator);
    h.caught_up().await;
    stop(tx, task).await;
    let topic = lock(&h.topic);
    assert_eq!(
        topic.dead,
        vec![(0, 20), (0, 22), (1, 20)],
        "none sent twice"
    );
    let table = lock(&h.table);
    let mut expected: Vec<i64> = (0..20).collect();
    expected.push(21);
    assert_eq!(offsets_of(&table, 0), expected);
    assert_eq!(offsets_of(&table, 1), (0..20).collect::<Vec<_>>());
    assert_eq!(health.report().dead_lettered_records, 3);
    assert_eq!(
        topic.group.get(&0),
        Some(&23),
        "the group mirrors the table again"
    );
}

/// The offsets a commit's dead letters list must fit a group offset's metadata: many bad
/// records among good ones make several commits instead of one the broker would refuse.
#[tokio::test(start_paused = true)]
async fn many_scattered_dead_letters_commit_in_pieces_that_fit_the_group_metadata() {
    let h = Harness::new(1, 0);
    let values: Vec<String> = (0..3000)
        .map(|i| {
            if i % 2 == 0 {
                format!("!{i}")
            } else {
                format!("{i}")
            }
        })
        .collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    h.produce(0, &values);
    let (a, coordinator) = h.member_with(1_000_000, Action::DeadLettered, Arc::default());
    a.assign(&[0]);
    let failures = coordinator.metrics.commit_failures.clone();
    let (tx, task) = spawn(coordinator);
    h.caught_up().await;
    stop(tx, task).await;
    let dead: Vec<i64> = lock(&h.topic).dead.iter().map(|(_, o)| *o).collect();
    assert_eq!(
        dead,
        (0..3000).step_by(2).collect::<Vec<i64>>(),
        "each once"
    );
    assert_eq!(
        offsets_of(&lock(&h.table), 0),
        (1..3000).step_by(2).collect::<Vec<i64>>()
    );
    assert_eq!(failures.get(), 0, "no transaction the broker would refuse");
}

/// A member whose partition moved on (its dead-letter producer fenced by the new holder)
/// cannot send dead letters for it: its transaction is refused and its records read again, and
/// every bad record is in the dead-letter topic once.
#[tokio::test(start_paused = true)]
async fn a_fenced_member_sends_no_dead_letters() {
    let h = Harness::new(1, 10);
    h.produce(0, &["!a"]);
    let (a, coordinator) = h.member_with(100, Action::DeadLettered, Arc::default());
    a.assign(&[0]);
    let failures = coordinator.metrics.commit_failures.clone();
    let (tx, task) = spawn(coordinator);
    // Another member takes the partition's transactional id after A took it.
    while !lock(&a.member).epochs.contains_key(&0) {
        tokio::time::sleep(POLL).await;
    }
    let (b, coordinator_b) = h.member_with(100, Action::DeadLettered, Arc::default());
    b.fence(&[(0, None)]).await.expect("fence");
    while failures.get() == 0 {
        tokio::time::sleep(POLL).await;
    }
    assert!(
        lock(&h.topic).dead.is_empty(),
        "the fenced member sent nothing"
    );
    a.revoke(&[0]);
    stop(tx, task).await;
    b.assign(&[0]);
    let (tx, task) = spawn(coordinator_b);
    h.caught_up().await;
    stop(tx, task).await;
    assert_eq!(lock(&h.topic).dead, vec![(0, 10)]);
    assert_eq!(offsets_of(&lock(&h.table), 0), (0..10).collect::<Vec<_>>());
}
