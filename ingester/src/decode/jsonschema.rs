//! JSON Schema values in the Confluent wire format (magic byte 0, the 4-byte schema id, a JSON
//! document). The columns and their types come from the writer's JSON Schema in the registry;
//! the documents are parsed by the JSON decoder ([`JsonDecoder`]) against the value schema.
//!
//! Type mapping: `integer` to long (int with `"connect.type": "int32"` and narrower), `number`
//! to double (float with `"connect.type": "float32"`), `boolean`, `string` to string (timestamp
//! in UTC for `"format": "date-time"`, date for `"format": "date"`), an `object` with
//! `properties` to a struct, an `object` with only `additionalProperties` to a map of string to
//! that type, an `array` to a list, an `enum` of strings to string. A field may be null unless
//! it is `required` and its type excludes null (`"type": ["null", "string"]`, or a `oneOf` /
//! `anyOf` with a `null` branch). `$ref`s are followed within the document (`#/definitions/…`,
//! `#/$defs/…`) and into the schemas it references in the registry, by reference name. A
//! schema without a column type (a union of two non-null types, an object without properties,
//! no type at all, a recursive type) is refused when it is first read, naming the field.
//!
//! A document's field that its schema does not declare is refused: nothing is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde_json::Value;

use super::json::JsonDecoder;
use super::writers::{self, at, child};
use super::{Bad, Decoder, Refusal};
use crate::registry::{self, Registry, SchemaKind};

/// `$ref`s and nested types deeper than this are taken for a recursive type.
const MAX_DEPTH: usize = 32;

/// What the JSON Schema decoders of every partition share: the registry client and the writer
/// schemas read from it, as Arrow schemas, by id.
pub struct JsonSchemaContext {
    registry: Option<Arc<Registry>>,
    writers: Mutex<HashMap<u32, SchemaRef>>,
}

impl JsonSchemaContext {
    pub fn new(registry: Option<Arc<Registry>>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            writers: Mutex::new(HashMap::new()),
        })
    }

    /// Makes `schema` (with its references) the writer schema of id `id`.
    pub fn insert(&self, id: u32, schema: &registry::Schema) -> Result<(), String> {
        let mut documents = HashMap::new();
        referenced_documents(schema, &mut documents, 0)?;
        let root: Value = serde_json::from_str(&schema.text)
            .map_err(|e| format!("JSON schema id {id} is not JSON: {e}"))?;
        let arrow = Resolver {
            documents: &documents,
        }
        .value_schema(&root)
        .map_err(|e| format!("JSON schema id {id}: {e}"))?;
        self.lock().insert(id, Arc::new(arrow));
        Ok(())
    }

    fn writer(&self, id: u32) -> Option<SchemaRef> {
        self.lock().get(&id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, SchemaRef>> {
        self.writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The documents `schema` references, by reference name, nested references included.
fn referenced_documents(
    schema: &registry::Schema,
    documents: &mut HashMap<String, Value>,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("its references nest deeper than 32 (a cycle?)".into());
    }
    for reference in &schema.references {
        let document = serde_json::from_str(&reference.schema.text).map_err(|e| {
            format!(
                "the referenced schema {} ({} version {}) is not JSON: {e}",
                reference.name, reference.subject, reference.version
            )
        })?;
        documents.insert(reference.name.clone(), document);
        referenced_documents(&reference.schema, documents, depth + 1)?;
    }
    Ok(())
}

/// Turns JSON Schema documents into Arrow types, following `$ref`s.
struct Resolver<'a> {
    documents: &'a HashMap<String, Value>,
}

impl<'a> Resolver<'a> {
    /// The value columns: the properties of the top-level object.
    fn value_schema(&self, root: &'a Value) -> Result<Schema, String> {
        match self.column(root, root, "", 0)? {
            (DataType::Struct(fields), _) => Ok(Schema::new(fields)),
            (other, _) => Err(format!(
                "it describes {other}, not an object: the ingester takes objects whose \
                 properties are the columns"
            )),
        }
    }

    /// The column type of `schema` (within document `doc`), and whether its type admits null.
    fn column(
        &self,
        schema: &'a Value,
        doc: &'a Value,
        path: &str,
        depth: usize,
    ) -> Result<(DataType, bool), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "{}: the types nest deeper than {MAX_DEPTH} (a recursive type has no column type)",
                at(path)
            ));
        }
        let Value::Object(keywords) = schema else {
            return Err(format!(
                "{}: the schema {schema} allows any value, which has no column type",
                at(path)
            ));
        };
        if let Some(reference) = keywords.get("$ref") {
            let reference = reference
                .as_str()
                .ok_or_else(|| format!("{}: $ref is not a string", at(path)))?;
            let (target, doc) = self
                .resolve(reference, doc)
                .map_err(|e| format!("{}: {e}", at(path)))?;
            return self.column(target, doc, path, depth + 1);
        }
        for union in ["oneOf", "anyOf"] {
            if let Some(branches) = keywords.get(union) {
                return self.union(branches, doc, path, depth, union);
            }
        }
        if let Some(Value::Array(all)) = keywords.get("allOf")
            && let [only] = all.as_slice()
        {
            return self.column(only, doc, path, depth + 1);
        }
        let (kind, nullable) = match keywords.get("type") {
            Some(Value::String(kind)) => (Some(kind.as_str()), kind == "null"),
            Some(Value::Array(kinds)) => {
                let nullable = kinds.iter().any(|k| k == "null");
                let others: Vec<&str> = kinds
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|k| *k != "null")
                    .collect();
                match others.as_slice() {
                    [one] => (Some(*one), nullable),
                    [] => (Some("null"), true),
                    several => {
                        return Err(format!(
                            "{}: a value of types {} has no single column type",
                            at(path),
                            several.join(" or ")
                        ));
                    }
                }
            }
            Some(other) => return Err(format!("{}: type {other} is not a type name", at(path))),
            None => (None, false),
        };
        let kind = match kind {
            Some(kind) => kind,
            // Without a type: what the other keywords imply.
            None if keywords.contains_key("properties") => "object",
            None if keywords.contains_key("items") => "array",
            None => match keywords.get("enum").or(keywords.get("const")) {
                Some(values) => return enum_type(values).map_err(|e| format!("{}: {e}", at(path))),
                None => {
                    return Err(format!(
                        "{}: a schema without a type has no column type",
                        at(path)
                    ));
                }
            },
        };
        let connect = keywords.get("connect.type").and_then(Value::as_str);
        let data_type = match kind {
            "string" => match keywords.get("format").and_then(Value::as_str) {
                Some("date-time") => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                Some("date") => DataType::Date32,
                _ => DataType::Utf8,
            },
            "integer" => match connect {
                Some("int8" | "int16" | "int32") => DataType::Int32,
                _ => DataType::Int64,
            },
            "number" => match connect {
                Some("float32") => DataType::Float32,
                _ => DataType::Float64,
            },
            "boolean" => DataType::Boolean,
            "object" => self.object(keywords, doc, path, depth)?,
            "array" => {
                let items = keywords
                    .get("items")
                    .filter(|items| items.is_object())
                    .ok_or_else(|| {
                        format!(
                            "{}: an array needs one schema for its items to be a list column",
                            at(path)
                        )
                    })?;
                let (item, nullable) = self.column(items, doc, &child(path, "[]"), depth + 1)?;
                DataType::List(Arc::new(Field::new("item", item, nullable)))
            }
            "null" => {
                return Err(format!(
                    "{}: a value that is always null has no column type",
                    at(path)
                ));
            }
            other => {
                return Err(format!(
                    "{}: type {other:?} is not a JSON Schema type",
                    at(path)
                ));
            }
        };
        Ok((data_type, nullable))
    }

    /// A struct of the properties, or a map of what `additionalProperties` allows.
    fn object(
        &self,
        keywords: &'a serde_json::Map<String, Value>,
        doc: &'a Value,
        path: &str,
        depth: usize,
    ) -> Result<DataType, String> {
        let required: Vec<&str> = keywords
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match keywords.get("properties").and_then(Value::as_object) {
            Some(properties) if !properties.is_empty() => {
                let fields = properties
                    .iter()
                    .map(|(name, property)| {
                        let (data_type, null) =
                            self.column(property, doc, &child(path, name), depth + 1)?;
                        let nullable = null || !required.contains(&name.as_str());
                        Ok(Field::new(name, data_type, nullable))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(DataType::Struct(Fields::from(fields)))
            }
            _ => match keywords.get("additionalProperties") {
                Some(values @ Value::Object(_)) => {
                    let (value, nullable) =
                        self.column(values, doc, &child(path, "*"), depth + 1)?;
                    let entries = Field::new(
                        "entries",
                        DataType::Struct(Fields::from(vec![
                            Field::new("key", DataType::Utf8, false),
                            Field::new("value", value, nullable),
                        ])),
                        false,
                    );
                    Ok(DataType::Map(Arc::new(entries), false))
                }
                _ => Err(format!(
                    "{}: an object without properties (nor one schema for additionalProperties) \
                     has no column type",
                    at(path)
                )),
            },
        }
    }

    /// A `oneOf` / `anyOf`: one type, nullable when a branch is `null`.
    fn union(
        &self,
        branches: &'a Value,
        doc: &'a Value,
        path: &str,
        depth: usize,
        keyword: &str,
    ) -> Result<(DataType, bool), String> {
        let branches = branches
            .as_array()
            .ok_or_else(|| format!("field {path}: {keyword} is not a list"))?;
        let is_null = |b: &Value| b.get("type").and_then(Value::as_str) == Some("null");
        let others: Vec<&Value> = branches.iter().filter(|b| !is_null(b)).collect();
        match others.as_slice() {
            [one] => {
                let (data_type, nullable) = self.column(one, doc, path, depth + 1)?;
                Ok((data_type, nullable || others.len() < branches.len()))
            }
            _ => Err(format!(
                "field {path}: a {keyword} of {} non-null types has no single column type",
                others.len()
            )),
        }
    }

    /// The schema a `$ref` points to, and the document it is in.
    fn resolve(&self, reference: &str, doc: &'a Value) -> Result<(&'a Value, &'a Value), String> {
        let (document, pointer) = reference.split_once('#').unwrap_or((reference, ""));
        let doc = match document {
            "" => doc,
            name => self.documents.get(name).ok_or_else(|| {
                format!(
                    "$ref {reference:?} names a document that is not among the schema's references"
                )
            })?,
        };
        let target = match pointer {
            "" => doc,
            pointer => doc
                .pointer(pointer)
                .ok_or_else(|| format!("$ref {reference:?} points to nothing"))?,
        };
        Ok((target, doc))
    }
}

/// A string column for an `enum` or `const` of strings (nullable when null is among them).
fn enum_type(values: &Value) -> Result<(DataType, bool), String> {
    let values = match values {
        Value::Array(values) => values.as_slice(),
        one => std::slice::from_ref(one),
    };
    let nullable = values.iter().any(Value::is_null);
    if values.iter().all(|v| v.is_string() || v.is_null()) {
        Ok((DataType::Utf8, nullable))
    } else {
        Err("an enum of values other than strings has no column type".into())
    }
}

/// One partition's JSON Schema records on their way to Arrow.
pub struct JsonSchemaDecoder {
    context: Arc<JsonSchemaContext>,
    values: JsonDecoder,
    /// The value schema records are checked against as they arrive.
    target: Option<SchemaRef>,
    /// The writer schema id of each record since the last chunk (None: a tombstone).
    ids: Vec<Option<u32>>,
    /// How each writer schema met `target`.
    checked: HashMap<u32, Result<(), Refusal>>,
}

impl Decoder for JsonSchemaDecoder {
    type Context = Arc<JsonSchemaContext>;

    fn new(context: &Arc<JsonSchemaContext>) -> Self {
        Self {
            context: context.clone(),
            values: JsonDecoder::new(&()),
            target: None,
            ids: Vec::new(),
            checked: HashMap::new(),
        }
    }

    fn use_schema(&mut self, schema: Option<&SchemaRef>) {
        self.values.use_schema(schema);
        self.target = schema.cloned();
        self.checked.clear();
    }

    fn schema(&self) -> Option<&SchemaRef> {
        self.values.schema()
    }

    fn push(&mut self, value: Option<&[u8]>) -> Result<(), Refusal> {
        let Some(value) = value else {
            self.values.push(None)?;
            self.ids.push(None);
            return Ok(());
        };
        let (id, document) =
            registry::split_wire(value).map_err(|e| Refusal::Invalid(e.to_string()))?;
        let writer = self.context.writer(id).ok_or(Refusal::NeedsLookup)?;
        if let Some(target) = self.target.clone() {
            let checked = match self.checked.get(&id) {
                Some(checked) => checked.clone(),
                None => {
                    let checked = self.check(id, &writer, &target);
                    self.checked.insert(id, checked.clone());
                    checked
                }
            };
            checked?;
        }
        self.values.push(Some(document))?;
        self.ids.push(Some(id));
        Ok(())
    }

    fn needs_lookup(&self, value: &[u8]) -> bool {
        registry::split_wire(value).is_ok_and(|(id, _)| self.context.writer(id).is_none())
    }

    async fn lookup(&mut self, value: &[u8]) -> Result<(), Refusal> {
        let registry = self.context.registry.as_deref();
        let (id, schema) =
            writers::fetch(registry, value, SchemaKind::Json, "a JSON Schema").await?;
        self.context.insert(id, &schema).map_err(Refusal::Invalid)
    }

    fn registered(
        context: &Arc<JsonSchemaContext>,
        id: u32,
        schema: &registry::Schema,
        _record: Option<&str>,
    ) -> Result<Option<Schema>, String> {
        context.insert(id, schema)?;
        Ok(context.writer(id).map(|w| w.as_ref().clone()))
    }

    /// The writer schemas of the records pushed so far, widened into one.
    fn infer(&self) -> Result<Schema, Bad> {
        let schemas: Vec<SchemaRef> = self
            .used()
            .into_iter()
            .filter_map(|id| self.context.writer(id))
            .collect();
        writers::widened(schemas.iter().map(AsRef::as_ref), "JSON Schema")
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<Vec<ArrayRef>, Bad> {
        // Records pushed without a schema to check against are checked now.
        for id in self.used() {
            if let Some(writer) = self.context.writer(id)
                && let Err(reason) = self.check(id, &writer, schema)
            {
                let index = self.ids.iter().position(|i| *i == Some(id)).unwrap_or(0);
                return Err(Bad::Record { index, reason });
            }
        }
        let columns = self.values.finish(schema)?;
        self.ids.clear();
        Ok(columns)
    }
}

impl JsonSchemaDecoder {
    /// The writer schema ids of the records since the last chunk, in order of appearance.
    fn used(&self) -> Vec<u32> {
        let mut used = Vec::new();
        for id in self.ids.iter().flatten() {
            if !used.contains(id) {
                used.push(*id);
            }
        }
        used
    }

    /// Whether the records of writer schema `id` go into `target` (see [`writers::check`]).
    fn check(&self, id: u32, writer: &Schema, target: &Schema) -> Result<(), Refusal> {
        let used = self.used();
        writers::check(writer, id, "JSON", target, |column| {
            let known = self.context.lock();
            let others = known.iter().map(|(id, schema)| (*id, schema.as_ref()));
            super::compatible_other(others, id, column, &used)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Pending;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Date32Type, Int64Type, TimestampMicrosecondType};

    const V1: &str = r##"{
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Order", "type": "object", "additionalProperties": false,
        "required": ["id", "name", "at"],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "price": {"type": "number"},
            "small": {"type": "integer", "connect.type": "int32"},
            "kind": {"enum": ["A", "B"]},
            "note": {"oneOf": [{"type": "null"}, {"type": "string"}]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "attrs": {"type": "object", "additionalProperties": {"type": "integer"}},
            "ship": {"$ref": "#/definitions/Address"}
        },
        "definitions": {
            "Address": {"type": "object", "required": ["city"],
                        "properties": {"city": {"type": "string"}, "zip": {"type": ["null", "string"]}}}
        }
    }"##;

    fn schema(text: &str) -> registry::Schema {
        registry::Schema {
            kind: SchemaKind::Json,
            text: text.to_string(),
            references: Vec::new(),
        }
    }

    fn context() -> Arc<JsonSchemaContext> {
        let context = JsonSchemaContext::new(None);
        context.insert(1, &schema(V1)).expect("v1");
        context
    }

    fn wire(id: u32, document: &str) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(document.as_bytes());
        out
    }

    #[test]
    fn types_nullability_and_refs_come_from_the_schema() {
        let context = context();
        let writer = context.writer(1).expect("v1");
        let types: Vec<(&str, String, bool)> = writer
            .fields()
            .iter()
            .map(|f| {
                (
                    f.name().as_str(),
                    f.data_type().to_string(),
                    f.is_nullable(),
                )
            })
            .collect();
        let expected = [
            ("id", "Int64", false),
            ("name", "Utf8", false),
            ("at", r#"Timestamp(µs, "UTC")"#, false),
            ("day", "Date32", true),
            ("price", "Float64", true),
            ("small", "Int32", true),
            ("kind", "Utf8", true),
            ("note", "Utf8", true),
        ];
        for (name, data_type, nullable) in expected {
            let found = types
                .iter()
                .find(|(n, ..)| *n == name)
                .unwrap_or_else(|| panic!("{name} in {types:?}"));
            assert_eq!((found.1.as_str(), found.2), (data_type, nullable), "{name}");
        }
        let ship = writer.field_with_name("ship").expect("ship");
        let DataType::Struct(address) = ship.data_type() else {
            panic!("{ship:?}")
        };
        assert!(!address[0].is_nullable() && address[1].is_nullable());
        assert!(matches!(
            writer.field_with_name("attrs").expect("attrs").data_type(),
            DataType::Map(..)
        ));
        assert!(matches!(
            writer.field_with_name("tags").expect("tags").data_type(),
            DataType::List(..)
        ));
    }

    #[test]
    fn records_decode_with_the_schemas_types() {
        let context = context();
        let mut p = Pending::<JsonSchemaDecoder>::new(&context, None);
        let doc = r#"{"id": 7, "name": "n", "at": "2024-05-01T10:00:00.123456Z", "day": "2024-05-01",
                      "kind": "B", "tags": ["x"], "attrs": {"a": 1}, "ship": {"city": "Oslo"}}"#;
        p.push(Some(&wire(1, doc)), None, 0, None).expect("v1");
        let schema = Arc::new(p.infer("t", 0).expect("from the writer schema"));
        let batch = p.finish(&schema, None, "t", 0, false).expect("decoded");
        let column = |name: &str| batch.column(schema.index_of(name).expect("column")).clone();
        assert_eq!(column("id").as_primitive::<Int64Type>().value(0), 7);
        assert_eq!(
            column("at")
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_714_557_600_123_456
        );
        assert_eq!(column("day").as_primitive::<Date32Type>().value(0), 19_844);
        assert!(column("price").is_null(0));
    }

    #[test]
    fn a_field_the_schema_does_not_declare_is_refused() {
        let context = context();
        let mut p = Pending::<JsonSchemaDecoder>::new(&context, None);
        let doc = r#"{"id": 2, "name": "n", "at": "2024-05-01T10:00:00Z", "extra": 1}"#;
        p.push(Some(&wire(1, doc)), None, 4, None).expect("v1");
        let v1 = Arc::new(p.infer("t", 0).expect("v1"));
        let text = p
            .finish(&v1, None, "t", 0, false)
            .expect_err("extra is not in the schema")
            .to_string();
        assert!(
            text.contains("extra") && text.contains("offset 4"),
            "{text}"
        );
    }

    #[test]
    fn a_new_optional_field_widens_and_a_removed_required_one_names_both_ids() {
        let context = context();
        let v2 = V1.replace(r#""note": {"#, r#""qty": {"type": "integer"}, "note": {"#);
        context.insert(2, &schema(&v2)).expect("v2");
        let v3 = V1
            .replace(r#"["id", "name", "at"]"#, r#"["id", "at"]"#)
            .replace(r#""name": {"type": "string"},"#, "");
        context.insert(3, &schema(&v3)).expect("v3");
        let mut p = Pending::<JsonSchemaDecoder>::new(&context, None);
        let v1_doc = r#"{"id": 1, "name": "n", "at": "2024-05-01T10:00:00Z"}"#;
        p.push(Some(&wire(1, v1_doc)), None, 0, None).expect("v1");
        let v1 = Arc::new(p.infer("t", 0).expect("v1"));
        p.finish(&v1, None, "t", 0, false).expect("decoded");
        let v2_doc = r#"{"id": 2, "name": "n", "at": "2024-05-01T10:00:00Z", "qty": 3}"#;
        let refused = p
            .push(Some(&wire(2, v2_doc)), None, 1, None)
            .expect_err("qty is new");
        assert_eq!(refused.reason, Refusal::UnknownField("qty".into()));
        let text = p
            .push(
                Some(&wire(3, r#"{"id": 3, "at": "2024-05-01T10:00:00Z"}"#)),
                None,
                2,
                None,
            )
            .expect_err("name is gone")
            .into_error("t", 0)
            .to_string();
        assert!(
            text.contains("field name is required by the table (as in JSON schema id 2)")
                && text.contains("JSON schema id 3 does not have it"),
            "{text}"
        );
    }

    #[test]
    fn schemas_without_a_column_type_name_the_field() {
        let refused = |text: &str| {
            JsonSchemaContext::new(None)
                .insert(1, &schema(text))
                .expect_err("no column type")
        };
        let e = refused(r#"{"type":"object","properties":{"a":{"type":["string","integer"]}}}"#);
        assert!(
            e.contains("field a") && e.contains("string or integer"),
            "{e}"
        );
        let e = refused(r#"{"type":"object","properties":{"a":{"type":"object"}}}"#);
        assert!(e.contains("field a: an object without properties"), "{e}");
        let e = refused(
            r##"{"type":"object","properties":{"n":{"$ref":"#/definitions/N"}},
                "definitions":{"N":{"type":"object","properties":{"next":{"$ref":"#/definitions/N"}}}}}"##,
        );
        assert!(e.contains("recursive"), "{e}");
        let e = refused(r#"{"type":"array","items":{"type":"string"}}"#);
        assert!(e.contains("not an object"), "{e}");
    }
}
