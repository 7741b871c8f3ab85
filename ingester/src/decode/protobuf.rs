//! Protobuf values in the Confluent wire format (magic byte 0, the 4-byte schema id, the
//! message-index path of the message type within the schema, the message), decoded into Arrow
//! column builders as they arrive.
//!
//! A registry holds a Protobuf schema as `.proto` text (Confluent's Java serializers) or as a
//! base64 `FileDescriptorProto` (its Python serializer); both are compiled into descriptors
//! (protox, with the well-known types and the schemas it references), and each message is read
//! straight from the wire into the column builders of its type, guided by the descriptor
//! ([`wire`]; no message objects in between): checked whole first, then appended. A chunk may hold records of
//! several writer schemas or message types: each decodes into its own run, conformed to the
//! value schema and interleaved back into offset order, as for Avro.
//!
//! Type mapping: `double`, `float`, `bool`, `string` and `bytes` as themselves; `int32`,
//! `sint32`, `sfixed32` as int; `int64`, `sint64`, `sfixed64` and `uint32`, `fixed32` as long;
//! `uint64`, `fixed64` as decimal(20, 0) (every value fits); enums as their value names; messages
//! as structs; repeated fields as lists; maps as maps; `google.protobuf.Timestamp` as a UTC
//! timestamp in microseconds (a value with nanoseconds below that is refused, never truncated);
//! the wrappers (`google.protobuf.Int64Value`, ...) as a nullable column of their type;
//! `google.protobuf.Duration` as its struct of seconds and nanos. A field is nullable when
//! Protobuf tracks its presence (a message, a `optional` or `oneof` member, proto2 `optional`);
//! other proto3 scalars are never null (absent means the default, as Protobuf reads them).
//! `google.protobuf.Struct` / `Value` / `ListValue`, messages without fields and recursive
//! messages have no column type: refused when the schema is first read, naming the field.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Decimal128Builder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, ListArray, MapArray, RecordBatch, StringBuilder, StructArray,
    TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use base64::Engine as _;
use prost_reflect::{
    DescriptorPool, EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, Value,
};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

mod wire;

use super::writers::{self, Row, at, child};
use super::{Bad, Decoder, Refusal};
use crate::registry::{self, Registry, SchemaKind};

/// References nested deeper than this are taken for a cycle.
const MAX_DEPTH: usize = 32;
/// What `uint64` and `fixed64` go into: every value fits.
const UINT64_DECIMAL: DataType = DataType::Decimal128(20, 0);

/// A writer's message type: its descriptor and the Arrow schema its values decode to.
struct Writer {
    id: u32,
    /// The message-index path of the type within the schema.
    path: Vec<i32>,
    message: MessageDescriptor,
    arrow: SchemaRef,
}

/// A message type of a schema: the schema id and the message-index path.
type MessageKey = (u32, Vec<i32>);

/// What the Protobuf decoders of every partition share: the registry client, the schemas read
/// from it (compiled), and the message types used so far.
pub struct ProtobufContext {
    registry: Option<Arc<Registry>>,
    files: Mutex<HashMap<u32, FileDescriptor>>,
    writers: Mutex<HashMap<MessageKey, Arc<Writer>>>,
    /// Values are bare messages of the schema given with the KafkaTable, of the message type
    /// at this index path ([`ProtobufContext::given`]).
    given: Option<Vec<i32>>,
}

/// The id the schema given with the KafkaTable goes by: its values carry none. (Registry ids
/// start at 1.)
const GIVEN_ID: u32 = 0;

/// How messages name the schema `id`.
fn schema_name(id: u32) -> String {
    if id == GIVEN_ID {
        "the Protobuf schema of spec.source.schema".into()
    } else {
        format!("Protobuf schema id {id}")
    }
}

impl ProtobufContext {
    pub fn new(registry: Option<Arc<Registry>>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            files: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
            given: None,
        })
    }

    /// The context of values written without a registry: bare messages of type `message` (the
    /// file's first message when None) of `proto`, the `.proto` file given with the KafkaTable.
    pub fn given(proto: &str, message: Option<&str>) -> Result<Arc<Self>, String> {
        let schema = registry::Schema {
            kind: SchemaKind::Protobuf,
            text: proto.to_string(),
            references: Vec::new(),
        };
        let file = compile(GIVEN_ID, &schema)?;
        let path = match message {
            None if file.messages().next().is_some() => vec![0],
            None => return Err("the file declares no message".into()),
            Some(name) => message_path(&file, name)
                .ok_or_else(|| format!("the file has no message {name}"))?,
        };
        let context = Self {
            registry: None,
            files: Mutex::new(HashMap::from([(GIVEN_ID, file)])),
            writers: Mutex::new(HashMap::new()),
            given: Some(path),
        };
        Ok(Arc::new(context))
    }

    /// Makes `schema` (with its references) the writer schema of id `id`.
    pub fn insert(&self, id: u32, schema: &registry::Schema) -> Result<(), String> {
        let file = compile(id, schema).map_err(|e| format!("Protobuf schema id {id}: {e}"))?;
        lock(&self.files).insert(id, file);
        Ok(())
    }

    /// The message type at `path` of schema `id`: None when the schema is not known yet.
    fn writer(&self, id: u32, path: &[i32]) -> Option<Result<Arc<Writer>, String>> {
        if let Some(writer) = lock(&self.writers).get(&(id, path.to_vec())) {
            return Some(Ok(writer.clone()));
        }
        let file = lock(&self.files).get(&id)?.clone();
        Some(self.new_writer(id, &file, path))
    }

    fn new_writer(
        &self,
        id: u32,
        file: &FileDescriptor,
        path: &[i32],
    ) -> Result<Arc<Writer>, String> {
        let message = message_at(file, path).ok_or_else(|| {
            format!("Protobuf schema id {id} has no message at index path {path:?}")
        })?;
        let arrow = Arc::new(message_schema(&message).map_err(|e| {
            format!(
                "message {} of {}: {e}",
                message.full_name(),
                schema_name(id)
            )
        })?);
        let writer = Arc::new(Writer {
            id,
            path: path.to_vec(),
            message,
            arrow,
        });
        lock(&self.writers).insert((id, path.to_vec()), writer.clone());
        Ok(writer)
    }

    /// Another writer schema whose field has the table's `column` type (see
    /// [`super::compatible_other`]).
    fn compatible_other(&self, id: u32, column: &Field, used: &[u32]) -> Option<u32> {
        let writers = lock(&self.writers);
        let known = writers.values().map(|w| (w.id, w.arrow.as_ref()));
        super::compatible_other(known, id, column, used)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The files of a schema and its references, by import name, for the compiler.
struct Sources(HashMap<String, File>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| protox::Error::file_not_found(name))
    }
}

/// One schema file: `.proto` text, or a base64 `FileDescriptorProto`.
fn source_file(name: &str, text: &str) -> Result<File, String> {
    match File::from_source(name, text) {
        Ok(file) => Ok(file),
        Err(parse) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| {
                    format!("{name} is neither .proto text ({parse}) nor a base64 descriptor")
                })?;
            File::decode_file_descriptor_proto(bytes.as_slice()).map_err(|e| {
                format!("{name}: a base64 value that is not a FileDescriptorProto: {e}")
            })
        }
    }
}

/// Adds the files `schema` references, by their import names, nested references included.
fn add_references(
    schema: &registry::Schema,
    sources: &mut HashMap<String, File>,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("its references nest deeper than 32 (a cycle?)".into());
    }
    for reference in &schema.references {
        let file = source_file(&reference.name, &reference.schema.text).map_err(|e| {
            format!(
                "reference {} ({} version {}): {e}",
                reference.name, reference.subject, reference.version
            )
        })?;
        sources.insert(reference.name.clone(), file);
        add_references(&reference.schema, sources, depth + 1)?;
    }
    Ok(())
}

/// The schema's file compiled with its imports: references and the well-known types.
fn compile(id: u32, schema: &registry::Schema) -> Result<FileDescriptor, String> {
    let mut sources = HashMap::new();
    add_references(schema, &mut sources, 0)?;
    let main = source_file(&format!("kafkatable-schema-{id}.proto"), &schema.text)?;
    // A descriptor names itself; text gets the name above.
    let name = main.name().to_string();
    sources.insert(name.clone(), main);
    let mut resolver = ChainFileResolver::new();
    resolver.add(Sources(sources));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.open_file(&name).map_err(|e| e.to_string())?;
    let pool: DescriptorPool = compiler.descriptor_pool();
    pool.get_file_by_name(&name)
        .ok_or_else(|| format!("{name} is not in the compiled schema"))
}

/// The Confluent message-index path of the message named `full_name` (nested ones too).
fn message_path(file: &FileDescriptor, full_name: &str) -> Option<Vec<i32>> {
    fn within(
        messages: impl Iterator<Item = MessageDescriptor>,
        full_name: &str,
        path: &mut Vec<i32>,
    ) -> bool {
        for (i, message) in messages.enumerate() {
            path.push(i32::try_from(i).unwrap_or(i32::MAX));
            if message.full_name() == full_name || within(message.child_messages(), full_name, path)
            {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = Vec::new();
    within(file.messages(), full_name, &mut path).then_some(path)
}

/// The message at a Confluent message-index path: the top-level message at the first index,
/// then nested messages.
fn message_at(file: &FileDescriptor, path: &[i32]) -> Option<MessageDescriptor> {
    let (first, rest) = path.split_first()?;
    let mut message = file.messages().nth(usize::try_from(*first).ok()?)?;
    for index in rest {
        let nested = message
            .child_messages()
            .nth(usize::try_from(*index).ok()?)?;
        message = nested;
    }
    Some(message)
}

/// The value columns of a message type.
fn message_schema(message: &MessageDescriptor) -> Result<Schema, String> {
    let fields = message_fields(message, "", &[])?;
    Ok(Schema::new(fields))
}

/// The columns of a message's fields; `outer` are the messages it is nested in, to find a
/// message that contains itself.
fn message_fields(
    message: &MessageDescriptor,
    path: &str,
    outer: &[&str],
) -> Result<Fields, String> {
    if outer.contains(&message.full_name()) {
        return Err(format!(
            "field {path}: message {} contains itself, and a recursive message has no column type",
            message.full_name()
        ));
    }
    let outer: Vec<&str> = outer.iter().copied().chain([message.full_name()]).collect();
    if message.fields().len() == 0 {
        return Err(format!(
            "{}: message {} has no fields, and a struct column needs one",
            at(path),
            message.full_name()
        ));
    }
    message
        .fields()
        .map(|field| {
            let path = child(path, field.name());
            let (data_type, nullable) = field_type(&field, &path, &outer)?;
            Ok(Field::new(field.name(), data_type, nullable))
        })
        .collect()
}

/// A field's column type, and whether it may be null.
fn field_type(
    field: &FieldDescriptor,
    path: &str,
    outer: &[&str],
) -> Result<(DataType, bool), String> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Err(format!("field {path}: a map without an entry message"));
        };
        let (key, _) = kind_type(&entry.map_entry_key_field().kind(), path, outer)?;
        let value_field = entry.map_entry_value_field();
        let (value, _) = kind_type(&value_field.kind(), &child(path, "value"), outer)?;
        let value_nullable = matches!(value_field.kind(), Kind::Message(_));
        return Ok((
            DataType::Map(map_entries(key, value, value_nullable), false),
            false,
        ));
    }
    let (data_type, wrapper) = kind_type(&field.kind(), path, outer)?;
    if field.is_list() {
        return Ok((
            DataType::List(Arc::new(Field::new("item", data_type, wrapper))),
            false,
        ));
    }
    Ok((data_type, field.supports_presence() || wrapper))
}

fn map_entries(key: DataType, value: DataType, value_nullable: bool) -> FieldRef {
    Arc::new(Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", key, false),
            Field::new("value", value, value_nullable),
        ])),
        false,
    ))
}

/// The column type of a Protobuf type, and whether it is a wrapper (nullable by nature).
fn kind_type(kind: &Kind, path: &str, outer: &[&str]) -> Result<(DataType, bool), String> {
    Ok(match kind {
        Kind::Double => (DataType::Float64, false),
        Kind::Float => (DataType::Float32, false),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => (DataType::Int32, false),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint32 | Kind::Fixed32 => {
            (DataType::Int64, false)
        }
        Kind::Uint64 | Kind::Fixed64 => (UINT64_DECIMAL, false),
        Kind::Bool => (DataType::Boolean, false),
        Kind::String => (DataType::Utf8, false),
        Kind::Bytes => (DataType::Binary, false),
        Kind::Enum(_) => (DataType::Utf8, false),
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp" => (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            "google.protobuf.Struct" | "google.protobuf.Value" | "google.protobuf.ListValue" => {
                return Err(format!(
                    "field {path}: {} (a dynamic JSON value) has no column type",
                    message.full_name()
                ));
            }
            name if is_wrapper(name) => {
                let inner = message
                    .get_field(1)
                    .ok_or_else(|| format!("field {path}: {name} without a value field"))?;
                (kind_type(&inner.kind(), path, outer)?.0, true)
            }
            _ => (
                DataType::Struct(message_fields(message, path, outer)?),
                false,
            ),
        },
    })
}

fn is_wrapper(name: &str) -> bool {
    matches!(
        name,
        "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// One column's values as they are decoded.
enum Column {
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    UInt64(Decimal128Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Enum(StringBuilder, EnumDescriptor),
    Timestamp(TimestampMicrosecondBuilder),
    /// A wrapper message: its value (of the kind given), or null.
    Wrapper(Box<Column>, Kind),
    Struct(Box<MessageColumns>),
    List {
        item: Box<Column>,
        field: FieldRef,
        offsets: Vec<i32>,
    },
    /// A map: its entries (each a message of a key and a value) in key order.
    Map {
        entry: Box<MessageColumns>,
        entries: FieldRef,
        offsets: Vec<i32>,
    },
}

/// One field of a message type: how it is read, its column, and what one record holds of it.
struct FieldColumn {
    field: FieldDescriptor,
    kind: Kind,
    /// The descriptor's answers, kept (they are looked up in the pool each time).
    map: bool,
    list: bool,
    column: Column,
    /// The value of a field that is absent and whose presence Protobuf does not track.
    default: Option<Value>,
    /// Where the record's occurrences are (a singular field keeps its last, a message all of
    /// them, merged), and how many items a repeated field got.
    seen: Seen,
}

#[derive(Default)]
struct Seen {
    present: bool,
    scalar: u64,
    bytes: (usize, usize),
    messages: Vec<(usize, usize)>,
    items: usize,
    /// A map's entries, where they are, with their keys.
    entries: Vec<(EntryKey, (usize, usize))>,
}

/// A map entry's key, for the key order.
#[derive(Clone, Copy)]
enum EntryKey {
    Number(i128),
    /// The key's bytes, where they are.
    Text(usize, usize),
}

impl EntryKey {
    /// The key order (text keys by their bytes in `b`).
    fn cmp(self, other: Self, b: &[u8]) -> std::cmp::Ordering {
        match (self, other) {
            (Self::Number(x), Self::Number(y)) => x.cmp(&y),
            (Self::Text(s, e), Self::Text(t, f)) => b.get(s..e).cmp(&b.get(t..f)),
            (Self::Number(_), Self::Text(..)) => std::cmp::Ordering::Less,
            (Self::Text(..), Self::Number(_)) => std::cmp::Ordering::Greater,
        }
    }
}

/// The columns of one message type's fields, and (nested) which rows are null.
struct MessageColumns {
    fields: Vec<FieldColumn>,
    /// The fields' numbers, sorted, with their place in `fields`.
    numbers: Vec<(u32, usize)>,
    /// Whether every field is a singular scalar, string or bytes (see [`MessageColumns::record`]).
    flat: bool,
    arrow: Fields,
    valid: Vec<bool>,
}

impl MessageColumns {
    fn new(message: &MessageDescriptor, arrow: &Fields) -> Self {
        let fields: Vec<FieldColumn> = message
            .fields()
            .zip(arrow.iter())
            .map(|(field, column)| {
                let kind = field.kind();
                let default = (!field.is_list() && !field.is_map() && !field.supports_presence())
                    .then(|| field.default_value());
                FieldColumn {
                    column: Column::for_field(&field, column.data_type()),
                    map: field.is_map(),
                    list: field.is_list(),
                    kind,
                    default,
                    seen: Seen::default(),
                    field,
                }
            })
            .collect();
        let mut numbers: Vec<(u32, usize)> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.field.number(), i))
            .collect();
        numbers.sort_unstable();
        let flat = fields
            .iter()
            .all(|f| !f.list && !f.map && !matches!(f.kind, Kind::Message(_)));
        Self {
            fields,
            numbers,
            flat,
            arrow: arrow.clone(),
            valid: Vec::new(),
        }
    }

    /// Reads one message (its occurrences at `ranges` of `b`, merged) from the wire: checks
    /// everything its columns could not take exactly, or (with `append`) appends it.
    fn read(&mut self, b: &[u8], ranges: &[(usize, usize)], append: bool) -> Result<(), Misfit> {
        self.walk(b, ranges, append)?;
        self.end(b, append)
    }

    /// Ends the record walked: each field's value checked or (with `append`) appended.
    fn end(&mut self, b: &[u8], append: bool) -> Result<(), Misfit> {
        for f in &mut self.fields {
            f.end(b, append).map_err(|e| e.within(f.field.name()))?;
        }
        if append {
            self.valid.push(true);
        }
        Ok(())
    }

    /// Walks the message's occurrences, keeping what each field needs to end the record.
    fn walk(&mut self, b: &[u8], ranges: &[(usize, usize)], append: bool) -> Result<(), Misfit> {
        for f in &mut self.fields {
            f.seen.present = false;
            f.seen.messages.clear();
            f.seen.items = 0;
            f.seen.entries.clear();
        }
        for &(start, end) in ranges {
            let mut r = wire::Reader::new(b, start, end);
            while !r.done() {
                let tag = r.varint().map_err(Misfit::malformed)?;
                let (number, wire_type) = ((tag >> 3) as u32, (tag & 7) as u8);
                let found = self
                    .numbers
                    .binary_search_by_key(&number, |(n, _)| *n)
                    .ok()
                    .and_then(|i| self.numbers.get(i))
                    .map(|(_, i)| *i);
                let Some(f) = found.and_then(|i| self.fields.get_mut(i)) else {
                    // A field this type does not declare (a newer writer's): skipped.
                    r.skip(wire_type).map_err(Misfit::malformed)?;
                    continue;
                };
                f.occurrence(&mut r, wire_type, b, append)
                    .map_err(|e| e.within(f.field.name()))?;
            }
        }
        Ok(())
    }

    /// Reads one record's message (at `ranges` of `b`): checked whole, then appended. A message
    /// of scalars only (no repeated, map or message fields) is walked once, its values checked
    /// and then appended; any other is walked twice, checking and then appending.
    fn record(&mut self, b: &[u8], ranges: &[(usize, usize)]) -> Result<(), Misfit> {
        self.read(b, ranges, false)?;
        // A flat message's walk appends nothing: what it kept serves the appending end too.
        if !self.flat {
            self.walk(b, ranges, true)?;
        }
        self.end(b, true)
    }

    fn append_null(&mut self) {
        for f in &mut self.fields {
            f.column.append_null();
        }
        self.valid.push(false);
    }

    fn finish_columns(&mut self) -> Vec<ArrayRef> {
        self.valid.clear();
        self.fields.iter_mut().map(|f| f.column.finish()).collect()
    }

    fn finish_struct(&mut self) -> ArrayRef {
        let nulls = NullBuffer::from(std::mem::take(&mut self.valid));
        let columns = self.fields.iter_mut().map(|f| f.column.finish()).collect();
        Arc::new(StructArray::new(self.arrow.clone(), columns, Some(nulls)))
    }
}

impl FieldColumn {
    /// One occurrence of the field, read from `r`.
    fn occurrence(
        &mut self,
        r: &mut wire::Reader<'_>,
        wire_type: u8,
        b: &[u8],
        append: bool,
    ) -> Result<(), Misfit> {
        let expected = wire::wire_type(&self.kind);
        let wrong = || {
            Misfit::malformed(format!(
                "wire type {wire_type} for a {:?} field",
                self.field.kind()
            ))
        };
        if self.map {
            if wire_type != 2 {
                return Err(wrong());
            }
            let range = r.delimited().map_err(Misfit::malformed)?;
            let key = entry_key(b, range, &self.field)?;
            self.seen.entries.push((key, range));
            return Ok(());
        }
        if self.list {
            let Column::List { item, .. } = &mut self.column else {
                return Err(wrong());
            };
            // Scalars may come packed: several values in one length-delimited run.
            if wire_type == 2 && expected != 2 {
                let (start, end) = r.delimited().map_err(Misfit::malformed)?;
                let mut packed = wire::Reader::new(b, start, end);
                while !packed.done() {
                    let raw = packed.scalar(expected).map_err(Misfit::malformed)?;
                    item.value(&self.kind, Raw::Int(raw), b, append)?;
                    self.seen.items += 1;
                }
                return Ok(());
            }
            if wire_type != expected {
                return Err(wrong());
            }
            let raw = read_raw(r, expected)?;
            let ranges = [raw.1];
            let raw = match raw.0 {
                Some(n) => Raw::Int(n),
                None if matches!(self.kind, Kind::Message(_)) => Raw::Message(&ranges),
                None => Raw::Bytes(raw.1),
            };
            item.value(&self.kind, raw, b, append)?;
            self.seen.items += 1;
            return Ok(());
        }
        if wire_type != expected {
            return Err(wrong());
        }
        let (scalar, range) = read_raw(r, expected)?;
        self.seen.present = true;
        match scalar {
            Some(n) => self.seen.scalar = n,
            None if matches!(self.kind, Kind::Message(_)) => self.seen.messages.push(range),
            None => self.seen.bytes = range,
        }
        Ok(())
    }

    /// The record's value of the field, after all its occurrences.
    fn end(&mut self, b: &[u8], append: bool) -> Result<(), Misfit> {
        let seen = &mut self.seen;
        match &mut self.column {
            Column::List { offsets, .. } => {
                if append {
                    push_offset(offsets, seen.items);
                }
                Ok(())
            }
            Column::Map { entry, offsets, .. } => {
                // In key order, the last of equal keys: the same map gives the same row.
                // (A stable sort: equal keys stay in their order, the last one wins.)
                seen.entries.sort_by(|(x, _), (y, _)| x.cmp(*y, b));
                let mut kept = 0;
                for i in 0..seen.entries.len() {
                    let (key, range) = seen.entries[i];
                    if seen
                        .entries
                        .get(i + 1)
                        .is_some_and(|(next, _)| next.cmp(key, b).is_eq())
                    {
                        continue;
                    }
                    entry.read(b, &[range], append)?;
                    kept += 1;
                }
                if append {
                    push_offset(offsets, kept);
                }
                Ok(())
            }
            column if seen.present => {
                let raw = if matches!(self.kind, Kind::Message(_)) {
                    Raw::Message(&seen.messages)
                } else if wire::wire_type(&self.kind) == 2 {
                    Raw::Bytes(seen.bytes)
                } else {
                    Raw::Int(seen.scalar)
                };
                column.value(&self.kind, raw, b, append)
            }
            column => {
                if append {
                    match &self.default {
                        Some(default) => column.append(default),
                        None => column.append_null(),
                    }
                }
                Ok(())
            }
        }
    }
}

/// A map entry's key (field 1 of the entry, the last occurrence; absent: the default).
fn entry_key(
    b: &[u8],
    (start, end): (usize, usize),
    map: &FieldDescriptor,
) -> Result<EntryKey, Misfit> {
    let Kind::Message(entry) = map.kind() else {
        return Err(Misfit::malformed("a map without an entry message".into()));
    };
    let key_field = entry.map_entry_key_field();
    let kind = key_field.kind();
    let expected = wire::wire_type(&kind);
    let mut key = match expected {
        2 => EntryKey::Text(start, start),
        _ => EntryKey::Number(0),
    };
    let mut r = wire::Reader::new(b, start, end);
    while !r.done() {
        let tag = r.varint().map_err(Misfit::malformed)?;
        let (number, wire_type) = ((tag >> 3) as u32, (tag & 7) as u8);
        if number != 1 || wire_type != expected {
            r.skip(wire_type).map_err(Misfit::malformed)?;
            continue;
        }
        key = match read_raw(&mut r, expected)? {
            (Some(n), _) => EntryKey::Number(match wire::scalar_value(&kind, n) {
                Some(Value::I32(v)) => i128::from(v),
                Some(Value::I64(v)) => i128::from(v),
                Some(Value::U32(v)) => i128::from(v),
                Some(Value::U64(v)) => i128::from(v),
                Some(Value::Bool(v)) => i128::from(v),
                _ => 0,
            }),
            (None, (s, e)) => EntryKey::Text(s, e),
        };
    }
    Ok(key)
}

/// One value of the wire type `expected`: a number (varints and fixed), or where the
/// length-delimited bytes are.
fn read_raw(
    r: &mut wire::Reader<'_>,
    expected: u8,
) -> Result<(Option<u64>, (usize, usize)), Misfit> {
    match expected {
        2 => Ok((None, r.delimited().map_err(Misfit::malformed)?)),
        _ => Ok((Some(r.scalar(expected).map_err(Misfit::malformed)?), (0, 0))),
    }
}

/// A field value as read from the wire.
enum Raw<'a> {
    /// A varint or fixed-width number, as its bits.
    Int(u64),
    /// A string's or bytes' place in the record.
    Bytes((usize, usize)),
    /// A message's occurrences (merged when more than one).
    Message(&'a [(usize, usize)]),
}

/// Why a record's message does not go into its columns.
#[derive(Debug)]
struct Misfit {
    /// Not a message of the type at all (else: a value without an exact column value).
    malformed: bool,
    /// The field it concerns, by its path.
    field: Option<String>,
    reason: String,
}

impl Misfit {
    fn malformed(reason: String) -> Self {
        Self {
            malformed: true,
            field: None,
            reason,
        }
    }

    fn value(reason: String) -> Self {
        Self {
            malformed: false,
            field: None,
            reason,
        }
    }

    /// Said of field `name` of the message (its path grows outwards).
    fn within(mut self, name: &str) -> Self {
        self.field = Some(match self.field {
            Some(inner) => format!("{name}.{inner}"),
            None => name.to_string(),
        });
        self
    }
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field {field}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl Column {
    fn for_field(field: &FieldDescriptor, data_type: &DataType) -> Self {
        if field.is_map() {
            let (DataType::Map(entries, _), Kind::Message(entry)) = (data_type, field.kind())
            else {
                unreachable!("a map field has a map type")
            };
            let DataType::Struct(kv) = entries.data_type() else {
                unreachable!("map entries are a struct")
            };
            return Self::Map {
                entry: Box::new(MessageColumns::new(&entry, kv)),
                entries: entries.clone(),
                offsets: vec![0],
            };
        }
        if field.is_list() {
            let DataType::List(item) = data_type else {
                unreachable!("a repeated field has a list type")
            };
            return Self::List {
                item: Box::new(Self::for_kind(&field.kind(), item.data_type())),
                field: item.clone(),
                offsets: vec![0],
            };
        }
        Self::for_kind(&field.kind(), data_type)
    }

    fn for_kind(kind: &Kind, data_type: &DataType) -> Self {
        match kind {
            Kind::Double => Self::Float64(Float64Builder::new()),
            Kind::Float => Self::Float32(Float32Builder::new()),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Self::Int32(Int32Builder::new()),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint32 | Kind::Fixed32 => {
                Self::Int64(Int64Builder::new())
            }
            Kind::Uint64 | Kind::Fixed64 => {
                Self::UInt64(Decimal128Builder::new().with_data_type(UINT64_DECIMAL))
            }
            Kind::Bool => Self::Bool(BooleanBuilder::new()),
            Kind::String => Self::Utf8(StringBuilder::new()),
            Kind::Bytes => Self::Binary(BinaryBuilder::new()),
            Kind::Enum(e) => Self::Enum(StringBuilder::new(), e.clone()),
            Kind::Message(message) => match message.full_name() {
                "google.protobuf.Timestamp" => {
                    Self::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
                }
                name if is_wrapper(name) => {
                    let inner = message.get_field(1).map(|f| f.kind()).unwrap_or(Kind::Bool);
                    Self::Wrapper(Box::new(Self::for_kind(&inner, data_type)), inner)
                }
                _ => {
                    let DataType::Struct(fields) = data_type else {
                        unreachable!("a message has a struct type")
                    };
                    Self::Struct(Box::new(MessageColumns::new(message, fields)))
                }
            },
        }
    }

    /// One value of a field of `kind` read from the wire: checked (everything a column could
    /// not take exactly is refused: text that is not UTF-8, an enum number without a name, a
    /// timestamp finer than microseconds or out of range) or, with `append`, appended.
    fn value(&mut self, kind: &Kind, raw: Raw<'_>, b: &[u8], append: bool) -> Result<(), Misfit> {
        let bytes = |(s, e): (usize, usize)| b.get(s..e).unwrap_or_default();
        match (self, raw) {
            (Self::Utf8(builder), Raw::Bytes(range)) => {
                let text = std::str::from_utf8(bytes(range))
                    .map_err(|e| Misfit::malformed(format!("a string that is not UTF-8: {e}")))?;
                if append {
                    builder.append_value(text);
                }
                Ok(())
            }
            (Self::Binary(builder), Raw::Bytes(range)) => {
                if append {
                    builder.append_value(bytes(range));
                }
                Ok(())
            }
            (Self::Timestamp(builder), Raw::Message(ranges)) => {
                let micros = timestamp_micros(b, ranges)?;
                if append {
                    builder.append_value(micros);
                }
                Ok(())
            }
            (Self::Wrapper(inner, inner_kind), Raw::Message(ranges)) => {
                // The wrapped value (field 1, the last occurrence); absent: the default.
                let expected = wire::wire_type(inner_kind);
                let mut last = None;
                for &(start, end) in ranges {
                    let mut r = wire::Reader::new(b, start, end);
                    while !r.done() {
                        let tag = r.varint().map_err(Misfit::malformed)?;
                        let (number, wire_type) = ((tag >> 3) as u32, (tag & 7) as u8);
                        if number == 1 && wire_type == expected {
                            last = Some(read_raw(&mut r, expected)?);
                        } else {
                            r.skip(wire_type).map_err(Misfit::malformed)?;
                        }
                    }
                }
                let inner_kind = inner_kind.clone();
                match last {
                    Some((Some(n), _)) => inner.value(&inner_kind, Raw::Int(n), b, append),
                    Some((None, range)) => inner.value(&inner_kind, Raw::Bytes(range), b, append),
                    None => {
                        if append {
                            inner.append(&Value::default_value(&inner_kind));
                        }
                        Ok(())
                    }
                }
            }
            (Self::Struct(columns), Raw::Message(ranges)) => columns.read(b, ranges, append),
            (column, Raw::Int(n)) => {
                let value = wire::scalar_value(kind, n)
                    .ok_or_else(|| Misfit::malformed(format!("a number for a {kind:?} field")))?;
                if let (Self::Enum(_, e), Value::EnumNumber(n)) = (&*column, &value)
                    && e.get_value(*n).is_none()
                {
                    return Err(Misfit::value(format!(
                        "{n} is not a value of enum {}",
                        e.full_name()
                    )));
                }
                if append {
                    column.append(&value);
                }
                Ok(())
            }
            _ => Err(Misfit::malformed(format!(
                "a value of another wire type than a {kind:?} field's"
            ))),
        }
    }

    /// Appends a scalar or enum value (a default, or one read from the wire).
    fn append(&mut self, value: &Value) {
        match (self, value) {
            (Self::Bool(b), Value::Bool(v)) => b.append_value(*v),
            (Self::Int32(b), Value::I32(v)) => b.append_value(*v),
            (Self::Int64(b), Value::I64(v)) => b.append_value(*v),
            (Self::Int64(b), Value::U32(v)) => b.append_value(i64::from(*v)),
            (Self::UInt64(b), Value::U64(v)) => b.append_value(i128::from(*v)),
            (Self::Float32(b), Value::F32(v)) => b.append_value(*v),
            (Self::Float64(b), Value::F64(v)) => b.append_value(*v),
            (Self::Utf8(b), Value::String(v)) => b.append_value(v),
            (Self::Binary(b), Value::Bytes(v)) => b.append_value(v),
            (Self::Enum(b, e), Value::EnumNumber(n)) => match e.get_value(*n) {
                Some(v) => b.append_value(v.name()),
                None => b.append_null(),
            },
            (column, _) => column.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::UInt64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Utf8(b) | Self::Enum(b, _) => b.append_null(),
            Self::Binary(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
            Self::Wrapper(inner, _) => inner.append_null(),
            Self::Struct(columns) => columns.append_null(),
            // Under a null struct: an empty list or map (these columns are never null).
            Self::List { offsets, .. } | Self::Map { offsets, .. } => push_offset(offsets, 0),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::UInt64(b) => Arc::new(b.finish()),
            Self::Float32(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Utf8(b) | Self::Enum(b, _) => Arc::new(b.finish()),
            Self::Binary(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
            Self::Wrapper(inner, _) => inner.finish(),
            Self::Struct(columns) => columns.finish_struct(),
            Self::List {
                item,
                field,
                offsets,
            } => {
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                Arc::new(ListArray::new(field.clone(), offsets, item.finish(), None))
            }
            Self::Map {
                entry,
                entries,
                offsets,
            } => {
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let DataType::Struct(kv) = entries.data_type() else {
                    unreachable!("map entries are a struct")
                };
                let pairs = StructArray::new(kv.clone(), entry.finish_columns(), None);
                Arc::new(MapArray::new(entries.clone(), offsets, pairs, None, false))
            }
        }
    }
}

fn push_offset(offsets: &mut Vec<i32>, added: usize) {
    let last = offsets.last().copied().unwrap_or(0);
    offsets.push(last + i32::try_from(added).unwrap_or(i32::MAX));
}

/// A `google.protobuf.Timestamp` (its occurrences at `ranges` of `b`) in microseconds, when it
/// is a whole number of them.
fn timestamp_micros(b: &[u8], ranges: &[(usize, usize)]) -> Result<i64, Misfit> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    for &(start, end) in ranges {
        let mut r = wire::Reader::new(b, start, end);
        while !r.done() {
            let tag = r.varint().map_err(Misfit::malformed)?;
            match ((tag >> 3) as u32, (tag & 7) as u8) {
                (1, 0) => seconds = r.varint().map_err(Misfit::malformed)? as i64,
                (2, 0) => nanos = r.varint().map_err(Misfit::malformed)? as i32,
                (_, wire_type) => r.skip(wire_type).map_err(Misfit::malformed)?,
            }
        }
    }
    if nanos % 1000 != 0 {
        return Err(Misfit::value(format!(
            "timestamp {seconds}.{nanos:09} s has nanoseconds, and the column holds microseconds"
        )));
    }
    seconds
        .checked_mul(1_000_000)
        .and_then(|us| us.checked_add(i64::from(nanos / 1000)))
        .ok_or_else(|| {
            Misfit::value(format!(
                "timestamp {seconds} s is out of the column's range"
            ))
        })
}

/// The records of one message type of one writer schema in the chunk being made.
struct Run {
    writer: Arc<Writer>,
    columns: MessageColumns,
    /// Records appended to `columns` since they were last finished.
    rows: usize,
    /// What was finished into a batch but not yet taken (a chunk that failed stays).
    batch: Option<RecordBatch>,
    /// The first field of this writer that the value schema lacks: its records are refused
    /// until the schema has it.
    unknown: Option<String>,
}

impl Run {
    fn new(writer: Arc<Writer>, target: Option<&SchemaRef>) -> Self {
        let columns = MessageColumns::new(&writer.message, writer.arrow.fields());
        let mut run = Self {
            writer,
            columns,
            rows: 0,
            batch: None,
            unknown: None,
        };
        run.check_against(target);
        run
    }

    fn check_against(&mut self, target: Option<&SchemaRef>) {
        self.unknown = target.and_then(|t| super::unknown_field(&self.writer.arrow, t));
    }

    /// The run's records as one batch, kept until [`Run::taken`].
    fn batch(&mut self) -> Result<RecordBatch, String> {
        if self.rows > 0 || self.batch.is_none() {
            let columns = self.columns.finish_columns();
            let fresh = RecordBatch::try_new(self.writer.arrow.clone(), columns)
                .map_err(|e| format!("{}: {e}", schema_name(self.writer.id)))?;
            self.rows = 0;
            let merged = match self.batch.take() {
                Some(earlier) => {
                    arrow::compute::concat_batches(&self.writer.arrow, [&earlier, &fresh])
                        .map_err(|e| e.to_string())?
                }
                None => fresh,
            };
            self.batch = Some(merged);
        }
        Ok(self
            .batch
            .clone()
            .unwrap_or_else(|| RecordBatch::new_empty(self.writer.arrow.clone())))
    }

    fn taken(&mut self) {
        self.batch = None;
    }
}

/// One partition's Protobuf records on their way to Arrow.
pub struct ProtobufDecoder {
    context: Arc<ProtobufContext>,
    target: Option<SchemaRef>,
    runs: Vec<Run>,
    rows: Vec<Row>,
}

impl Decoder for ProtobufDecoder {
    type Context = Arc<ProtobufContext>;

    fn new(context: &Arc<ProtobufContext>) -> Self {
        Self {
            context: context.clone(),
            target: None,
            runs: Vec::new(),
            rows: Vec::new(),
        }
    }

    fn use_schema(&mut self, schema: Option<&SchemaRef>) {
        self.target = schema.cloned();
        for run in &mut self.runs {
            run.check_against(schema);
        }
    }

    fn push(&mut self, value: Option<&[u8]>) -> Result<(), Refusal> {
        let Some(value) = value else {
            self.rows.push(Row::Tombstone);
            return Ok(());
        };
        // The index path: the schema's first message (a single 0 byte) almost always.
        let read;
        let (id, path, body): (u32, &[i32], &[u8]) = match &self.context.given {
            Some(path) => (GIVEN_ID, path, value),
            None => {
                let (id, rest) =
                    registry::split_wire(value).map_err(|e| Refusal::Invalid(e.to_string()))?;
                match rest.split_first() {
                    Some((0, body)) => (id, &[0], body),
                    _ => {
                        let (path, body) = registry::protobuf_indexes(rest).map_err(|e| {
                            Refusal::Invalid(format!("Protobuf schema id {id}: {e}"))
                        })?;
                        read = path;
                        (id, &read, body)
                    }
                }
            }
        };
        let run = match self
            .runs
            .iter()
            .position(|r| r.writer.id == id && r.writer.path == path)
        {
            Some(run) => run,
            None => {
                let writer = self
                    .context
                    .writer(id, path)
                    .ok_or(Refusal::NeedsLookup)??;
                self.runs.push(Run::new(writer, self.target.as_ref()));
                self.runs.len() - 1
            }
        };
        let run_state = &mut self.runs[run];
        if let Some(field) = &run_state.unknown {
            return Err(Refusal::UnknownField(field.clone()));
        }
        // Checked whole first, so that a record refused leaves nothing in the columns.
        let start = value.len() - body.len();
        let whole = [(start, value.len())];
        let writer = &run_state.writer;
        let refused = |e: Misfit| {
            let (message, schema) = (writer.message.full_name(), schema_name(id));
            Refusal::Invalid(match e.malformed {
                true => format!("not a {message} of {schema}: {e}"),
                false => format!("{e} (message {message} of {schema})"),
            })
        };
        run_state.columns.record(value, &whole).map_err(refused)?;
        let row = run_state.rows + run_state.batch.as_ref().map_or(0, RecordBatch::num_rows);
        run_state.rows += 1;
        self.rows.push(Row::Value { run, row });
        Ok(())
    }

    fn needs_lookup(&self, value: &[u8]) -> bool {
        self.context.given.is_none()
            && registry::split_wire(value)
                .is_ok_and(|(id, _)| !lock(&self.context.files).contains_key(&id))
    }

    async fn lookup(&mut self, value: &[u8]) -> Result<(), Refusal> {
        let registry = self.context.registry.as_deref();
        let (id, schema) =
            writers::fetch(registry, value, SchemaKind::Protobuf, "Protobuf").await?;
        self.context.insert(id, &schema).map_err(Refusal::Invalid)
    }

    fn registered(
        context: &Arc<ProtobufContext>,
        id: u32,
        schema: &registry::Schema,
        record: Option<&str>,
    ) -> Result<Option<Schema>, String> {
        context.insert(id, schema)?;
        let file = lock(&context.files)
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("Protobuf schema id {id} did not compile"))?;
        let path = match record {
            Some(name) => message_path(&file, name)
                .ok_or_else(|| format!("Protobuf schema id {id} has no message {name}"))?,
            None => vec![0],
        };
        let writer = context.writer(id, &path).ok_or_else(|| {
            format!("Protobuf schema id {id} has no message at index path {path:?}")
        })??;
        Ok(Some(writer.arrow.as_ref().clone()))
    }

    fn infer(&self) -> Result<Schema, Bad> {
        writers::widened(
            self.runs.iter().map(|r| r.writer.arrow.as_ref()),
            "Protobuf",
        )
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<Vec<ArrayRef>, Bad> {
        let used: Vec<u32> = self.runs.iter().map(|r| r.writer.id).collect();
        let mut conformed = Vec::with_capacity(self.runs.len());
        for (i, run) in self.runs.iter_mut().enumerate() {
            let bad = |reason| Bad::Record {
                index: writers::first_row(&self.rows, i),
                reason,
            };
            let batch = run.batch().map_err(|e| bad(Refusal::Invalid(e)))?;
            let id = run.writer.id;
            writers::check(&run.writer.arrow, id, "Protobuf", schema, |column| {
                self.context.compatible_other(id, column, &used)
            })
            .map_err(bad)?;
            conformed.push(writers::conform(&batch, id, "Protobuf", schema).map_err(bad)?);
        }
        let columns = writers::assemble(conformed, &self.rows, schema)?;
        for run in &mut self.runs {
            run.taken();
        }
        self.rows.clear();
        Ok(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Pending;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Decimal128Type, Int32Type, Int64Type, TimestampMicrosecondType};
    use prost::Message as _;
    use prost_reflect::DynamicMessage;

    const V1: &str = r#"
        syntax = "proto3";
        package shop;
        import "google/protobuf/timestamp.proto";
        import "google/protobuf/wrappers.proto";
        message Order {
            int64 id = 1;
            string name = 2;
            google.protobuf.Timestamp at = 3;
            Kind kind = 4;
            repeated string tags = 5;
            map<string, int64> attrs = 6;
            Address address = 7;
            optional string note = 8;
            google.protobuf.Int32Value rank = 9;
            uint64 big = 10;
            sint32 small = 11;
            bytes blob = 12;
            message Address { string street = 1; int32 zip = 2; }
        }
        enum Kind { NEW = 0; PAID = 1; }
    "#;

    fn schema(text: &str) -> registry::Schema {
        registry::Schema {
            kind: SchemaKind::Protobuf,
            text: text.to_string(),
            references: Vec::new(),
        }
    }

    fn context() -> Arc<ProtobufContext> {
        let context = ProtobufContext::new(None);
        context.insert(1, &schema(V1)).expect("v1 compiles");
        context
    }

    fn order_type(context: &ProtobufContext) -> MessageDescriptor {
        let file = lock(&context.files).get(&1).cloned().expect("v1");
        message_at(&file, &[0]).expect("Order")
    }

    /// An Order in the wire format (index path [0], written as the single byte 0).
    fn order(context: &ProtobufContext, fill: impl FnOnce(&mut DynamicMessage)) -> Vec<u8> {
        let mut message = DynamicMessage::new(order_type(context));
        fill(&mut message);
        let mut out = vec![0, 0, 0, 0, 1, 0];
        out.extend_from_slice(&message.encode_to_vec());
        out
    }

    fn set(message: &mut DynamicMessage, name: &str, value: Value) {
        message.set_field_by_name(name, value);
    }

    fn timestamp(context: &ProtobufContext, seconds: i64, nanos: i32) -> Value {
        let at = order_type(context).get_field_by_name("at").expect("at");
        let Kind::Message(ts) = at.kind() else {
            panic!("at is a message")
        };
        let mut m = DynamicMessage::new(ts);
        m.set_field_by_name("seconds", Value::I64(seconds));
        m.set_field_by_name("nanos", Value::I32(nanos));
        Value::Message(m)
    }

    #[test]
    fn a_schema_given_in_the_spec_decodes_bare_messages_of_the_named_type() {
        let given = ProtobufContext::given(V1, Some("shop.Order.Address")).expect("compiles");
        let file = lock(&given.files)
            .get(&GIVEN_ID)
            .cloned()
            .expect("the given file");
        let path = given.given.clone().expect("a given message type");
        let address = message_at(&file, &path).expect("Order.Address");
        assert_eq!(address.full_name(), "shop.Order.Address");
        let mut message = DynamicMessage::new(address);
        message.set_field_by_name("street", Value::String("s1".into()));
        message.set_field_by_name("zip", Value::I32(10115));
        let mut p = Pending::<ProtobufDecoder>::new(&given, None);
        p.push(Some(&message.encode_to_vec()), None, 0, None)
            .expect("a bare Address, no wire-format prefix");
        let schema = Arc::new(p.infer("t", 0).expect("the Address columns"));
        assert_eq!(schema.fields().len(), 2);
        let batch = p.finish(&schema, None, "t", 0, false).expect("decoded");
        assert_eq!(batch.column(0).as_string::<i32>().value(0), "s1");
        assert_eq!(batch.column(1).as_primitive::<Int32Type>().value(0), 10115);

        let first = ProtobufContext::given(V1, None).expect("the first message");
        assert_eq!(first.given.as_deref(), Some(&[0][..]));
        let missing = ProtobufContext::given(V1, Some("shop.Missing")).err();
        assert!(missing.is_some_and(|e| e.contains("shop.Missing")));
        let broken = ProtobufContext::given("syntax = \"proto3\"; message {", None).err();
        assert!(
            broken.is_some(),
            "a file that does not compile is refused at start"
        );
    }

    /// What Protobuf parsers do with the wire, byte by byte: a singular field's last
    /// occurrence wins, a message field occurring twice is merged, repeated scalars may come
    /// packed or not, a map keeps the last of equal keys (in key order here), a field the type
    /// does not declare is skipped, an absent proto3 scalar is its default.
    #[test]
    fn the_wire_is_read_as_protobuf_parsers_read_it() {
        let context = ProtobufContext::given(
            r#"syntax = "proto3"; package t;
               message M { int64 a = 1; repeated int32 nums = 2; map<string, int32> m = 3;
                           Inner inner = 4; string s = 5;
                           message Inner { int32 x = 1; string y = 2; } }"#,
            None,
        )
        .expect("compiles");
        let entry = |k: u8, v: u8| [0x1a, 5, 0x0a, 1, k, 0x10, v];
        let mut m = vec![0x08, 0x01, 0x08, 0x07]; // a = 1, then a = 7
        m.extend([0x12, 3, 1, 2, 3, 0x10, 4]); // nums packed [1, 2, 3], then 4 unpacked
        m.extend(entry(b'b', 2));
        m.extend(entry(b'a', 1));
        m.extend(entry(b'b', 3));
        m.extend([0x22, 2, 0x08, 5]); // inner {x: 5}
        m.extend([0x22, 3, 0x12, 1, b'q']); // inner {y: "q"}: merged
        m.extend([0x98, 0x06, 0x01]); // field 99, which M does not declare
        let mut p = Pending::<ProtobufDecoder>::new(&context, None);
        p.push(Some(&m), None, 0, None).expect("a message");
        let schema = Arc::new(p.infer("t", 0).expect("M's columns"));
        let batch = p.finish(&schema, None, "t", 0, false).expect("decoded");
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 7);
        let nums = batch.column(1).as_list::<i32>().value(0);
        assert_eq!(nums.as_primitive::<Int32Type>().values(), &[1, 2, 3, 4]);
        let map = batch.column(2).as_map().value(0);
        let keys = map.column(0).as_string::<i32>();
        let values = map.column(1).as_primitive::<Int32Type>();
        assert_eq!(
            (
                keys.value(0),
                values.value(0),
                keys.value(1),
                values.value(1),
                map.len()
            ),
            ("a", 1, "b", 3, 2)
        );
        let inner = batch.column(3).as_struct();
        assert_eq!(inner.column(0).as_primitive::<Int32Type>().value(0), 5);
        assert_eq!(inner.column(1).as_string::<i32>().value(0), "q");
        assert_eq!(
            batch.column(4).as_string::<i32>().value(0),
            "",
            "the default"
        );

        // The same bytes as prost-reflect's own parser reads them.
        let file = lock(&context.files)
            .get(&GIVEN_ID)
            .cloned()
            .expect("the file");
        let message = DynamicMessage::decode(message_at(&file, &[0]).expect("M"), m.as_slice())
            .expect("prost-reflect reads it");
        assert_eq!(
            message.get_field_by_name("a").as_deref(),
            Some(&Value::I64(7))
        );

        let mut cut = m.clone();
        cut.truncate(m.len() - 2);
        let e = p.push(Some(&cut), None, 1, None).expect_err("cut short");
        assert!(
            matches!(e.reason, Refusal::Invalid(ref r) if r.contains("not a t.M")),
            "{e:?}"
        );
        assert!(p.is_empty(), "nothing of a refused record stays");
    }

    #[test]
    fn types_and_nullability_follow_the_descriptor() {
        let context = context();
        let writer = context.writer(1, &[0]).expect("known").expect("Order");
        let types: Vec<(String, String, bool)> = writer
            .arrow
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string(), f.is_nullable()))
            .collect();
        let expected = [
            ("id", "Int64", false),
            ("name", "Utf8", false),
            ("at", r#"Timestamp(µs, "UTC")"#, true),
            ("kind", "Utf8", false),
            ("note", "Utf8", true),
            ("rank", "Int32", true),
            ("big", "Decimal128(20, 0)", false),
            ("small", "Int32", false),
            ("blob", "Binary", false),
        ];
        for (name, data_type, nullable) in expected {
            let found = types
                .iter()
                .find(|(n, ..)| n == name)
                .unwrap_or_else(|| panic!("{name} in {types:?}"));
            assert_eq!((found.1.as_str(), found.2), (data_type, nullable), "{name}");
        }
        let address = writer.arrow.field_with_name("address").expect("address");
        assert!(address.is_nullable() && matches!(address.data_type(), DataType::Struct(_)));
        assert!(matches!(
            writer
                .arrow
                .field_with_name("tags")
                .expect("tags")
                .data_type(),
            DataType::List(_)
        ));
        assert!(matches!(
            writer
                .arrow
                .field_with_name("attrs")
                .expect("attrs")
                .data_type(),
            DataType::Map(..)
        ));
    }

    #[test]
    fn messages_decode_into_their_columns() {
        let context = context();
        let address_type = match order_type(&context)
            .get_field_by_name("address")
            .map(|f| f.kind())
        {
            Some(Kind::Message(m)) => m,
            other => panic!("{other:?}"),
        };
        let rank_type = match order_type(&context)
            .get_field_by_name("rank")
            .map(|f| f.kind())
        {
            Some(Kind::Message(m)) => m,
            other => panic!("{other:?}"),
        };
        let first = order(&context, |m| {
            set(m, "id", Value::I64(7));
            set(m, "name", Value::String("n7".into()));
            set(m, "at", timestamp(&context, 1_700_000_000, 123_000));
            set(m, "kind", Value::EnumNumber(1));
            set(
                m,
                "tags",
                Value::List(vec![Value::String("a".into()), Value::String("b".into())]),
            );
            let mut attrs = HashMap::new();
            attrs.insert(prost_reflect::MapKey::String("z".into()), Value::I64(2));
            attrs.insert(prost_reflect::MapKey::String("a".into()), Value::I64(1));
            set(m, "attrs", Value::Map(attrs));
            let mut address = DynamicMessage::new(address_type.clone());
            address.set_field_by_name("street", Value::String("s".into()));
            set(m, "address", Value::Message(address));
            let mut rank = DynamicMessage::new(rank_type.clone());
            rank.set_field_by_name("value", Value::I32(3));
            set(m, "rank", Value::Message(rank));
            set(m, "big", Value::U64(u64::MAX));
        });
        // Everything absent: defaults for plain proto3 scalars, nulls where presence is tracked.
        let second = order(&context, |_| {});
        let mut p = Pending::<ProtobufDecoder>::new(&context, None);
        p.push(Some(&first), None, 0, None).expect("first");
        p.push(Some(&second), None, 1, None).expect("second");
        let schema = Arc::new(p.infer("t", 0).expect("from the descriptor"));
        let batch = p.finish(&schema, None, "t", 0, false).expect("decoded");
        let column = |name: &str| batch.column(schema.index_of(name).expect("column")).clone();
        let ids = column("id");
        assert_eq!(
            ids.as_primitive::<Int64Type>().values().to_vec(),
            vec![7, 0]
        );
        let at = column("at");
        assert_eq!(
            at.as_primitive::<TimestampMicrosecondType>().value(0),
            1_700_000_000_000_123
        );
        assert!(at.is_null(1), "an absent message is null");
        assert_eq!(column("kind").as_string::<i32>().value(0), "PAID");
        assert_eq!(
            column("kind").as_string::<i32>().value(1),
            "NEW",
            "the default"
        );
        let rank = column("rank");
        assert_eq!(rank.as_primitive::<Int32Type>().value(0), 3);
        assert!(rank.is_null(1), "an absent wrapper is null");
        assert!(column("note").is_null(0), "an absent optional is null");
        assert_eq!(
            column("big").as_primitive::<Decimal128Type>().value(0),
            i128::from(u64::MAX)
        );
        let attrs = column("attrs");
        let attrs = attrs.as_map();
        let keys = attrs.keys().as_string::<i32>();
        assert_eq!((keys.value(0), keys.value(1)), ("a", "z"), "in key order");
        assert_eq!(attrs.value_length(1), 0, "an absent map is empty");
        let address = column("address");
        assert!(address.is_valid(0) && address.is_null(1));
    }

    #[test]
    fn values_without_an_exact_column_value_are_refused_naming_the_field() {
        let context = context();
        let mut p = Pending::<ProtobufDecoder>::new(&context, None);
        let fine = order(&context, |m| set(m, "id", Value::I64(1)));
        p.push(Some(&fine), None, 0, None).expect("fine");
        let nanos = order(&context, |m| set(m, "at", timestamp(&context, 1, 1)));
        let refused = p
            .push(Some(&nanos), None, 1, None)
            .expect_err("nanoseconds");
        let text = refused.into_error("t", 0).to_string();
        assert!(
            text.contains("field at") && text.contains("nanoseconds") && text.contains("offset 1"),
            "{text}"
        );
        let unnamed = order(&context, |m| set(m, "kind", Value::EnumNumber(9)));
        let text = p
            .push(Some(&unnamed), None, 2, None)
            .expect_err("enum 9")
            .into_error("t", 0)
            .to_string();
        assert!(
            text.contains("9 is not a value of enum shop.Kind"),
            "{text}"
        );
        let mut broken = fine.clone();
        broken.push(0xff);
        let text = p
            .push(Some(&broken), None, 3, None)
            .expect_err("not a message")
            .into_error("t", 0)
            .to_string();
        assert!(
            text.contains("not a shop.Order of Protobuf schema id 1"),
            "{text}"
        );
        let schema = Arc::new(p.infer("t", 0).expect("v1"));
        let batch = p
            .finish(&schema, None, "t", 0, false)
            .expect("the record before them");
        assert_eq!(batch.num_rows(), 1);
    }

    #[test]
    fn a_base64_descriptor_as_the_python_serializer_registers_it_compiles_too() {
        let file = lock(&context().files).get(&1).cloned().expect("v1");
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(file.file_descriptor_proto().encode_to_vec());
        let context = ProtobufContext::new(None);
        context.insert(2, &schema(&encoded)).expect("a descriptor");
        let writer = context.writer(2, &[0]).expect("known").expect("Order");
        assert_eq!(writer.message.full_name(), "shop.Order");
        // Nested types in descriptor order: the map's entry type (from the field before it),
        // then Address.
        let nested = context.writer(2, &[0, 1]).expect("known").expect("Address");
        assert_eq!(nested.message.full_name(), "shop.Order.Address");
    }

    #[test]
    fn types_without_a_column_are_refused_when_the_schema_is_read() {
        let refused = |text: &str| {
            let context = ProtobufContext::new(None);
            context.insert(1, &schema(text)).expect("compiles");
            match context.writer(1, &[0]).expect("known") {
                Ok(_) => panic!("{text} has a column type"),
                Err(e) => e,
            }
        };
        let e = refused(r#"syntax = "proto3"; message N { int64 v = 1; N next = 2; }"#);
        assert!(e.contains("recursive") && e.contains("next"), "{e}");
        let e = refused(
            r#"syntax = "proto3"; import "google/protobuf/struct.proto";
               message S { google.protobuf.Struct doc = 1; }"#,
        );
        assert!(e.contains("field doc") && e.contains("dynamic JSON"), "{e}");
        let context = ProtobufContext::new(None);
        let e = context
            .insert(1, &schema("message {"))
            .expect_err("not a schema");
        assert!(e.contains("Protobuf schema id 1"), "{e}");
    }
}
