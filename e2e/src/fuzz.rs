//! A small mutation fuzzer for the ingester's decoders, on the stable toolchain.
//!
//! Each target takes one input, splits it into up to four records (the first byte says how
//! many), pushes them into a partition's [`Pending`] records of its format and decodes the
//! chunk, the way the sink does. What it checks: no panic and no hang on any input, and for
//! JSON's fast path that every record it accepts, arrow-json (the reference reader) accepts
//! too and decodes to the same values. Inputs grow from a few valid seeds by byte mutations
//! (flips, interesting bytes, insertions, deletions, copies, splices); inputs a decoder takes
//! whole join the corpus, so the mutations reach past the first byte.
//!
//! No coverage guidance (cargo-fuzz would rebuild the ingester's dependency tree with
//! instrumentation on nightly, longer than CI's whole budget): the checks run at a few
//! hundred thousand executions a second in release builds instead.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use kafkatable_ingester::decode::{
    AvroContext, AvroDecoder, BytesDecoder, Decoder, JsonDecoder, JsonSchemaContext,
    JsonSchemaDecoder, Pending, ProtobufContext, ProtobufDecoder, TextDecoder,
};
use kafkatable_ingester::registry::{Schema as RegistrySchema, SchemaKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One execution: whether the input decoded whole.
type Execution = Box<dyn Fn(&[u8]) -> bool>;

/// One decoder under test: its name, seeds, and one execution.
pub struct Target {
    pub name: &'static str,
    seeds: Vec<Vec<u8>>,
    run: Execution,
}

/// What a run of one target did.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub executions: u64,
    /// Inputs decoded whole (not refused).
    pub accepted: u64,
    pub corpus: usize,
    pub seconds: f64,
}

/// A panic or a difference from the reference reader, with the input that made it.
#[derive(Debug)]
pub struct Finding {
    pub target: &'static str,
    pub input: Vec<u8>,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} on input {:02x?}",
            self.target, self.message, self.input
        )
    }
}

/// Every target.
pub fn targets() -> Vec<Target> {
    vec![
        json_flat(),
        json_nested(),
        json_inferred(),
        raw::<TextDecoder>("text"),
        raw::<BytesDecoder>("bytes"),
        avro_bare(),
        avro_wire(),
        protobuf(),
        json_schema(),
    ]
}

/// Runs `target` for `executions` inputs from `seed`. A hang (one execution over `hang`) ends
/// the process, naming the input: a thread that does not return cannot be interrupted.
pub fn fuzz(target: &Target, executions: u64, seed: u64, hang: Duration) -> Result<Run, Finding> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut corpus = target.seeds.clone();
    let mut accepted = 0;
    let watchdog = Watchdog::start(target.name, hang);
    for n in 0..executions {
        let input = if (n as usize) < corpus.len() {
            corpus[n as usize].clone()
        } else {
            let base = &corpus[rng.random_range(0..corpus.len())];
            let other = &corpus[rng.random_range(0..corpus.len())];
            mutate(base, other, &mut rng)
        };
        watchdog.begin(&input);
        let outcome = replay(target, &input);
        watchdog.end();
        if outcome? {
            accepted += 1;
            if corpus.len() < 4096 && input.len() <= 4096 && rng.random_ratio(1, 8) {
                corpus.push(input);
            }
        }
    }
    Ok(Run {
        executions,
        accepted,
        corpus: corpus.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One execution of `target` on `input`: whether it decoded whole, or the panic it made.
pub fn replay(target: &Target, input: &[u8]) -> Result<bool, Finding> {
    std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input))).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "a panic".into());
        Finding {
            target: target.name,
            input: input.to_vec(),
            message,
        }
    })
}

/// Watches the execution in progress from a thread of its own.
struct Watchdog {
    /// Milliseconds since `epoch` when the current execution began; 0 between executions.
    began_ms: Arc<AtomicU64>,
    input: Arc<std::sync::Mutex<Vec<u8>>>,
    epoch: Instant,
}

impl Watchdog {
    fn start(name: &'static str, hang: Duration) -> Self {
        let began_ms = Arc::new(AtomicU64::new(0));
        let input = Arc::new(std::sync::Mutex::new(Vec::new()));
        let epoch = Instant::now();
        let (b, i) = (began_ms.clone(), input.clone());
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let began = b.load(Ordering::Relaxed);
                let now = epoch.elapsed().as_millis() as u64;
                if began > 0 && now.saturating_sub(began) > hang.as_millis() as u64 {
                    let input = i.lock().map(|i| i.clone()).unwrap_or_default();
                    eprintln!(
                        "{name}: an execution ran over {hang:?} (a hang) on input {input:02x?}"
                    );
                    std::process::exit(2);
                }
                if Arc::strong_count(&b) == 1 {
                    return; // the run ended
                }
            }
        });
        Self {
            began_ms,
            input,
            epoch,
        }
    }

    fn begin(&self, input: &[u8]) {
        if let Ok(mut i) = self.input.lock() {
            i.clear();
            i.extend_from_slice(input);
        }
        let now = (self.epoch.elapsed().as_millis() as u64).max(1);
        self.began_ms.store(now, Ordering::Relaxed);
    }

    fn end(&self) {
        self.began_ms.store(0, Ordering::Relaxed);
    }
}

/// One byte-level change of `base` (or a splice with `other`).
fn mutate(base: &[u8], other: &[u8], rng: &mut StdRng) -> Vec<u8> {
    const INTERESTING: &[u8] = &[
        0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'-', b'e', b'.',
        b'0', b'9', b'n', b'u',
    ];
    let mut out = base.to_vec();
    let rounds = 1 + rng.random_range(0..4);
    for _ in 0..rounds {
        let at = if out.is_empty() {
            0
        } else {
            rng.random_range(0..out.len())
        };
        match rng.random_range(0..7) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.random_range(0..8),
            1 if !out.is_empty() => out[at] = INTERESTING[rng.random_range(0..INTERESTING.len())],
            2 => out.insert(at, INTERESTING[rng.random_range(0..INTERESTING.len())]),
            3 if !out.is_empty() => {
                let end = (at + 1 + rng.random_range(0..8)).min(out.len());
                out.drain(at..end);
            }
            4 if !out.is_empty() => {
                let end = (at + 1 + rng.random_range(0..16)).min(out.len());
                let piece = out[at..end].to_vec();
                let to = rng.random_range(0..=out.len());
                out.splice(to..to, piece);
            }
            5 if !other.is_empty() => {
                let from = rng.random_range(0..other.len());
                let end = (from + 1 + rng.random_range(0..32)).min(other.len());
                out.splice(at..at.min(out.len()), other[from..end].iter().copied());
            }
            _ => out.truncate(at),
        }
    }
    out.truncate(1 << 14);
    out
}

/// The records of one input: its first byte says how many (1 to 4, or a tombstone among
/// them), the rest is cut into that many pieces at `0x1e` bytes.
fn records(input: &[u8]) -> Vec<Option<&[u8]>> {
    let Some((&head, rest)) = input.split_first() else {
        return vec![Some(&[])];
    };
    let count = 1 + usize::from(head & 3);
    let mut out: Vec<Option<&[u8]>> = rest.splitn(count, |b| *b == 0x1e).map(Some).collect();
    if head & 0x80 != 0 {
        out.push(None);
    }
    out
}

/// Pushes the records into `pending` and decodes them against `schema` (None: inferred from
/// them); whether every record made a row.
fn decode<D: Decoder>(mut pending: Pending<D>, input: &[u8], schema: Option<&SchemaRef>) -> bool {
    let records = records(input);
    for (offset, value) in records.iter().enumerate() {
        if pending
            .push(*value, Some(b"k"), offset as i64, Some(0))
            .is_err()
        {
            return false;
        }
    }
    let schema = match schema {
        Some(s) => s.clone(),
        None => match pending.infer("fuzz", 0) {
            Ok(s) => Arc::new(s),
            Err(_) => return false,
        },
    };
    match pending.finish(&schema, None, "fuzz", 0, true) {
        Ok(batch) => {
            assert_eq!(batch.num_rows(), records.len(), "one row per record");
            true
        }
        Err(_) => false,
    }
}

fn field(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, true)
}

fn flat_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("id", DataType::Int64),
        field("n", DataType::Int32),
        field("name", DataType::Utf8),
        field("score", DataType::Float64),
        field("ok", DataType::Boolean),
    ]))
}

const JSON_SEEDS: &[&str] = &[
    r#"{"id":1,"n":2,"name":"a","score":1.5,"ok":true}"#,
    r#"{"id":-9223372036854775808,"name":"\u00e9\n\"q\"","score":-0.0,"ok":false}"#,
    r#"{"name":null,"score":1e300,"n":2147483647}"#,
    r#"{"id":25.0,"score":3}"#,
    "{}",
];

/// JSON's fast path (a flat schema, records decoded as they arrive), checked against
/// arrow-json: what it takes, arrow-json takes with the same values.
fn json_flat() -> Target {
    let schema = flat_schema();
    assert!(
        Pending::<JsonDecoder>::new(&(), Some(&schema))
            .schema()
            .is_some(),
        "the schema takes the fast path"
    );
    Target {
        name: "json-flat",
        seeds: seeds(JSON_SEEDS),
        run: Box::new(move |input| {
            let records = records(input);
            let mut pending = Pending::<JsonDecoder>::new(&(), Some(&schema));
            for (offset, value) in records.iter().enumerate() {
                if pending.push(*value, None, offset as i64, None).is_err() {
                    return false;
                }
            }
            let Ok(ours) = pending.finish(&schema, None, "fuzz", 0, false) else {
                return false;
            };
            let reference = arrow_json(&records, &schema);
            assert_eq!(
                Some(ours.columns()),
                reference.as_ref().map(|b| b.columns()),
                "the fast path and arrow-json decode differently"
            );
            true
        }),
    }
}

/// The records as arrow-json decodes them in strict mode (a tombstone is a row of nulls). A
/// value framed by the Confluent wire format (magic byte 0 and a 4-byte schema id; no JSON text
/// starts with byte 0) is its JSON after the frame, as the ingester reads it.
fn arrow_json(records: &[Option<&[u8]>], schema: &SchemaRef) -> Option<RecordBatch> {
    let mut rows = Vec::new();
    for value in records {
        let value = match value.unwrap_or(b"{}") {
            framed if framed.len() > 5 && framed[0] == 0 => &framed[5..],
            plain => plain,
        };
        let mut one = arrow::json::ReaderBuilder::new(schema.clone())
            .with_strict_mode(true)
            .build_decoder()
            .ok()?;
        one.decode(value).ok()?;
        let batch = one.flush().ok()??;
        if batch.num_rows() != 1 {
            return None;
        }
        rows.push(batch);
    }
    arrow::compute::concat_batches(schema, &rows).ok()
}

fn seeds(texts: &[&str]) -> Vec<Vec<u8>> {
    texts
        .iter()
        .map(|t| {
            let mut seed = vec![0u8];
            seed.extend_from_slice(t.as_bytes());
            seed
        })
        .collect()
}

/// JSON's chunk path (nested columns: arrow-json after the exactness checks).
fn json_nested() -> Target {
    let item = Arc::new(Field::new("element", DataType::Utf8, true));
    let schema = Arc::new(Schema::new(vec![
        field("id", DataType::Int64),
        field("tags", DataType::List(item)),
        field(
            "geo",
            DataType::Struct(
                vec![
                    field("lat", DataType::Float64),
                    field("lon", DataType::Float64),
                ]
                .into(),
            ),
        ),
    ]));
    Target {
        name: "json-nested",
        seeds: seeds(&[
            r#"{"id":1,"tags":["a","b"],"geo":{"lat":1.5,"lon":-2}}"#,
            r#"{"id":2,"tags":[],"geo":null}"#,
            r#"{"tags":null}"#,
        ]),
        run: Box::new(move |input| {
            decode(Pending::<JsonDecoder>::new(&(), None), input, Some(&schema))
        }),
    }
}

/// JSON without a schema: inferred from the records, then decoded against it.
fn json_inferred() -> Target {
    Target {
        name: "json-inferred",
        seeds: seeds(JSON_SEEDS),
        run: Box::new(|input| decode(Pending::<JsonDecoder>::new(&(), None), input, None)),
    }
}

fn raw<D: Decoder<Context = ()> + 'static>(name: &'static str) -> Target {
    let schema = Arc::new(D::fixed_schema().unwrap_or_else(Schema::empty));
    Target {
        name,
        seeds: vec![b"\x01hello\x1e\xc3\xa9".to_vec(), b"\x80\xff\xfe".to_vec()],
        run: Box::new(move |input| {
            decode(Pending::<D>::new(&(), Some(&schema)), input, Some(&schema))
        }),
    }
}

const AVRO_SCHEMA: &str = r#"{"type":"record","name":"Order","fields":[
    {"name":"id","type":"long"},
    {"name":"name","type":"string"},
    {"name":"qty","type":["null","int"],"default":null},
    {"name":"tags","type":{"type":"array","items":"string"}},
    {"name":"attrs","type":{"type":"map","values":"long"}},
    {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B"]}},
    {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
    {"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"ok","type":"boolean"},
    {"name":"score","type":"double"}]}"#;

/// Avro's binary encoding of a zigzag varint.
fn long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn text(s: &[u8], out: &mut Vec<u8>) {
    long(s.len() as i64, out);
    out.extend_from_slice(s);
}

/// A valid Order body.
fn avro_order(id: i64) -> Vec<u8> {
    let mut b = Vec::new();
    long(id, &mut b);
    text(b"name", &mut b);
    long(1, &mut b); // union branch int
    long(7, &mut b);
    long(2, &mut b); // two tags
    text(b"x", &mut b);
    text(b"y", &mut b);
    long(0, &mut b);
    long(1, &mut b); // one attr
    text(b"k", &mut b);
    long(-3, &mut b);
    long(0, &mut b);
    long(1, &mut b); // enum B
    text(&[0x01, 0x2c], &mut b); // 3.00
    long(1_700_000_000_000_000, &mut b);
    b.push(1);
    b.extend_from_slice(&2.5f64.to_le_bytes());
    b
}

fn avro_bare() -> Target {
    let context =
        AvroContext::given(AVRO_SCHEMA).unwrap_or_else(|e| panic!("the fuzz schema: {e}"));
    let schema = avro_arrow(&context);
    let mut seed = vec![1u8];
    seed.extend(avro_order(1));
    seed.push(0x1e);
    seed.extend(avro_order(-5));
    Target {
        name: "avro",
        seeds: vec![seed],
        run: Box::new(move |input| {
            decode(
                Pending::<AvroDecoder>::new(&context, schema.as_ref()),
                input,
                schema.as_ref(),
            )
        }),
    }
}

/// The value columns of the given Avro schema (None: to be inferred).
fn avro_arrow(context: &Arc<AvroContext>) -> Option<SchemaRef> {
    let registered = RegistrySchema {
        kind: SchemaKind::Avro,
        text: AVRO_SCHEMA.into(),
        references: Vec::new(),
    };
    AvroDecoder::registered(context, 0, &registered, None)
        .ok()
        .flatten()
        .map(Arc::new)
}

/// Avro in the Confluent wire format, of two registry schemas (ids 1 and 2).
fn avro_wire() -> Target {
    let context = AvroContext::new(None);
    for id in [1, 2] {
        context
            .insert(id, AVRO_SCHEMA)
            .unwrap_or_else(|e| panic!("the fuzz schema: {e}"));
    }
    let mut seed = vec![1u8, 0, 0, 0, 0, 1];
    seed.extend(avro_order(3));
    seed.extend([0x1e, 0, 0, 0, 0, 2]);
    seed.extend(avro_order(4));
    Target {
        name: "avro-wire",
        seeds: vec![seed],
        run: Box::new(move |input| {
            decode(Pending::<AvroDecoder>::new(&context, None), input, None)
        }),
    }
}

const PROTO: &str = r#"
syntax = "proto3";
package fuzz;
message Order {
    int64 id = 1;
    string name = 2;
    repeated int32 qty = 3;
    map<string, int64> attrs = 4;
    Inner inner = 5;
    double score = 6;
    bool ok = 7;
    sint32 delta = 8;
    fixed64 f = 9;
    oneof pick { string a = 10; int32 b = 11; }
    message Inner { string note = 1; repeated string more = 2; }
}
"#;

fn protobuf() -> Target {
    let context = ProtobufContext::given(PROTO, Some("fuzz.Order"))
        .unwrap_or_else(|e| panic!("the fuzz schema: {e}"));
    let registered = RegistrySchema {
        kind: SchemaKind::Protobuf,
        text: PROTO.into(),
        references: Vec::new(),
    };
    let schema = ProtobufDecoder::registered(&context, 0, &registered, Some("fuzz.Order"))
        .ok()
        .flatten()
        .map(Arc::new);
    // id 7, name "ab", packed qty [1, 2], attrs {"k": 5}, inner {note "n"}, score, ok.
    let mut body = vec![0x08, 0x07, 0x12, 0x02, b'a', b'b', 0x1a, 0x02, 0x01, 0x02];
    body.extend([
        0x22, 0x05, 0x0a, 0x01, b'k', 0x10, 0x05, 0x2a, 0x03, 0x0a, 0x01, b'n',
    ]);
    body.push(0x31);
    body.extend(1.25f64.to_le_bytes());
    body.extend([0x38, 0x01, 0x40, 0x03, 0x52, 0x01, b'z']);
    let mut seed = vec![0u8];
    seed.extend(&body);
    Target {
        name: "protobuf",
        seeds: vec![seed],
        run: Box::new(move |input| {
            decode(
                Pending::<ProtobufDecoder>::new(&context, schema.as_ref()),
                input,
                schema.as_ref(),
            )
        }),
    }
}

const JSON_SCHEMA: &str = r#"{"type":"object","properties":{
    "id":{"type":"integer"},"name":{"type":"string"},"score":{"type":"number"},
    "tags":{"type":"array","items":{"type":"string"}},
    "geo":{"type":"object","properties":{"lat":{"type":"number"}}}},
    "required":["id"]}"#;

fn json_schema() -> Target {
    let context = JsonSchemaContext::new(None);
    let registered = RegistrySchema {
        kind: SchemaKind::Json,
        text: JSON_SCHEMA.into(),
        references: Vec::new(),
    };
    context
        .insert(1, &registered)
        .unwrap_or_else(|e| panic!("the fuzz schema: {e}"));
    let mut seed = vec![0u8, 0, 0, 0, 0, 1];
    seed.extend(br#"{"id":1,"name":"a","score":2.5,"tags":["x"],"geo":{"lat":1}}"#);
    Target {
        name: "json-schema",
        seeds: vec![seed],
        run: Box::new(move |input| {
            decode(
                Pending::<JsonSchemaDecoder>::new(&context, None),
                input,
                None,
            )
        }),
    }
}
