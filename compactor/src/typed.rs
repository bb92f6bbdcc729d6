//! Typed columns from the schema registry: the table follows the latest schema of the
//! topic's value subject (`icestream_catalog::typed`), and each round decodes the
//! records' values (Confluent wire format: magic byte 0, schema id, Avro datum) with the
//! schema they were written with, resolved to the table's, into those columns. A value
//! that cannot be decoded keeps its bytes in `value` and nulls in the typed columns, and
//! is counted.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use apache_avro::schema::Schema as Avro;
use apache_avro::types::Value;
use arrow_array::builder::{
    make_builder, ArrayBuilder, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    FixedSizeBinaryBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    LargeBinaryBuilder, LargeListBuilder, LargeStringBuilder, ListBuilder, MapBuilder,
    StringBuilder, StructBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
    TimestampNanosecondBuilder,
};
use arrow_array::{make_array, ArrayRef};
use arrow_schema::{DataType, Field, TimeUnit};
use icestream_catalog::typed::KAFKA_COLUMNS;
use icestream_storage::records::Row;
use icestream_storage::MetaStore;

use crate::CompactError;

/// A registered schema as the compactor uses it: as Avro (JSON and Protobuf schemas
/// are converted), and how values written with it are encoded.
pub struct TypedSchema {
    pub avro: Avro,
    pub format: Format,
}

/// How a schema's values are encoded after the Confluent header.
pub enum Format {
    Avro,
    Json,
    /// Message indexes, then the message (of this compiled schema).
    Protobuf(crate::proto::Compiled),
}

/// Parsed schemas by registry id (ids never change what they name).
static SCHEMAS: LazyLock<Mutex<HashMap<i32, Arc<TypedSchema>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn remember(id: i32, typed: TypedSchema) -> Arc<TypedSchema> {
    let typed = Arc::new(typed);
    SCHEMAS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, typed.clone());
    typed
}

/// The schema registered under `id` (`None`: unknown id, or nothing columns can come
/// from).
pub async fn typed_schema(
    meta: &MetaStore,
    id: i32,
) -> Result<Option<Arc<TypedSchema>>, CompactError> {
    if let Some(s) = SCHEMAS.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return Ok(Some(s.clone()));
    }
    let Some(stored) = meta.schema_by_id(id).await? else {
        return Ok(None);
    };
    if stored.schema_type == "JSON" {
        let avro = serde_json::from_str::<serde_json::Value>(&stored.schema)
            .ok()
            .and_then(|json| json_schema_to_avro(&json));
        return Ok(avro.map(|avro| {
            remember(
                id,
                TypedSchema {
                    avro,
                    format: Format::Json,
                },
            )
        }));
    }
    if stored.schema_type != "AVRO" && stored.schema_type != "PROTOBUF" {
        return Ok(None);
    }
    // Referenced schemas, depth first.
    let mut texts: Vec<(String, String)> = Vec::new();
    let mut pending = stored.references.clone();
    let mut seen = 0;
    while let Some(r) = pending.pop() {
        seen += 1;
        if seen > 100 {
            break;
        }
        let versions = meta.subject_versions(&r.subject).await?;
        let Some(v) = versions.iter().find(|v| v.version == r.version) else {
            return Ok(None);
        };
        let Some(s) = meta.schema_by_id(v.id).await? else {
            return Ok(None);
        };
        pending.extend(s.references.clone());
        texts.push((r.name.clone(), s.schema));
    }
    if stored.schema_type == "PROTOBUF" {
        let Ok(compiled) = crate::proto::compile(&stored.schema, &texts) else {
            return Ok(None);
        };
        let avro = compiled
            .message(&[0])
            .and_then(|m| crate::proto::message_to_avro(&m));
        return Ok(avro.map(|avro| {
            remember(
                id,
                TypedSchema {
                    avro,
                    format: Format::Protobuf(compiled),
                },
            )
        }));
    }
    let texts: Vec<String> = texts.into_iter().map(|(_, t)| t).collect();
    let parsed = if texts.is_empty() {
        Avro::parse_str(&stored.schema)
    } else {
        Avro::parse_str_with_list(&stored.schema, &texts).map(|(s, _)| s)
    };
    let Ok(avro) = parsed else {
        return Ok(None);
    };
    Ok(Some(remember(
        id,
        TypedSchema {
            avro,
            format: Format::Avro,
        },
    )))
}

/// The registry id of the latest live schema of `subject`.
pub async fn latest_id(meta: &MetaStore, subject: &str) -> Result<Option<i32>, CompactError> {
    Ok(meta
        .subject_versions(subject)
        .await?
        .iter()
        .rev()
        .find(|v| !v.deleted)
        .map(|v| v.id))
}

fn framed_id(value: &[u8]) -> Option<i32> {
    (value.len() >= 5 && value[0] == 0)
        .then(|| i32::from_be_bytes([value[1], value[2], value[3], value[4]]))
}

/// Decodes record values into the table's typed columns.
pub struct ValueDecoder {
    reader: Arc<TypedSchema>,
    /// Writer schemas of the ids the rows carry.
    writers: HashMap<i32, Arc<TypedSchema>>,
}

impl ValueDecoder {
    /// A decoder for `rows` into the columns of the table schema `reader_id` made.
    pub async fn for_rows(
        meta: &MetaStore,
        reader_id: i32,
        rows: &[Row],
    ) -> Result<Option<Self>, CompactError> {
        let Some(reader) = typed_schema(meta, reader_id).await? else {
            return Ok(None);
        };
        let mut writers = HashMap::new();
        for r in rows {
            let Some(id) = r.value.as_deref().and_then(framed_id) else {
                continue;
            };
            if writers.contains_key(&id) {
                continue;
            }
            if let Some(s) = typed_schema(meta, id).await? {
                writers.insert(id, s);
            }
        }
        Ok(Some(Self { reader, writers }))
    }

    /// The record's fields by name, or `None` if the value does not decode.
    fn decode(&self, value: Option<&[u8]>) -> Option<HashMap<String, Value>> {
        let value = value?;
        let writer = self.writers.get(&framed_id(value)?)?;
        let mut datum = &value[5..];
        let decoded = match (&writer.format, &self.reader.format) {
            // JSON documents and Protobuf messages carry their names: they are read
            // with the table's schema.
            (Format::Json, Format::Json) => {
                let doc: serde_json::Value = serde_json::from_slice(datum).ok()?;
                datum = &[];
                json_to_avro_value(&doc, &self.reader.avro)?
            }
            (Format::Protobuf(compiled), Format::Protobuf(_)) => {
                let (indexes, bytes) = crate::proto::split_indexes(datum)?;
                let desc = compiled.message(&indexes)?;
                let msg = prost_reflect::DynamicMessage::decode(desc, bytes).ok()?;
                datum = &[];
                crate::proto::message_to_value(&msg, &self.reader.avro)?
            }
            (Format::Avro, Format::Avro) => {
                let reader = (!Arc::ptr_eq(writer, &self.reader)
                    && writer.avro != self.reader.avro)
                    .then_some(&self.reader.avro);
                apache_avro::from_avro_datum(&writer.avro, &mut datum, reader).ok()?
            }
            _ => return None,
        };
        match decoded {
            Value::Record(fields) if datum.is_empty() => Some(fields.into_iter().collect()),
            _ => None,
        }
    }
}

/// The Avro field a typed column holds (undoing the `value_` prefix of clashing names).
fn avro_name(column: &str) -> &str {
    match column.strip_prefix("value_") {
        Some(rest) if KAFKA_COLUMNS.contains(&rest) => rest,
        _ => column,
    }
}

/// Builds the typed columns (`fields`, the table schema's fields after the Kafka ones)
/// for `rows`; the count of values that did not decode.
pub fn typed_columns(
    fields: &[Arc<Field>],
    rows: &[Row],
    decoder: Option<&ValueDecoder>,
) -> Result<(Vec<ArrayRef>, u64), CompactError> {
    let mut builders: Vec<Box<dyn ArrayBuilder>> = fields
        .iter()
        .map(|f| make_builder(f.data_type(), rows.len()))
        .collect();
    let mut undecodable = 0;
    for r in rows {
        let record = decoder.and_then(|d| d.decode(r.value.as_deref()));
        if decoder.is_some() && record.is_none() && r.value.is_some() {
            undecodable += 1;
        }
        for (f, b) in fields.iter().zip(builders.iter_mut()) {
            let v = record.as_ref().and_then(|rec| rec.get(avro_name(f.name())));
            append(b.as_mut(), f.data_type(), v);
        }
    }
    let mut columns = Vec::with_capacity(fields.len());
    for (f, mut b) in fields.iter().zip(builders) {
        let array = b.finish();
        // Builders name nested fields their own way; the layout is the table's.
        let array = if array.data_type() == f.data_type() {
            array
        } else {
            let data = array
                .to_data()
                .into_builder()
                .data_type(f.data_type().clone())
                .build()
                .map_err(|e| CompactError::Schema(format!("column {}: {e}", f.name())))?;
            make_array(data)
        };
        columns.push(array);
    }
    Ok((columns, undecodable))
}

fn string_of(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) | Value::Enum(_, s) => Some(s.as_str()),
        _ => None,
    }
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Bytes(x) => Some(x.as_slice()),
        _ => None,
    }
}

/// Unwraps unions (the resolved branch).
fn plain(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => plain(inner),
        other => other,
    }
}

macro_rules! put {
    ($b:expr, $t:ty, $v:expr) => {
        if let Some(b) = $b.as_any_mut().downcast_mut::<$t>() {
            b.append_option($v);
        }
    };
}

/// Appends `v` (or a null, when absent or of another type) to a builder made for `dt`.
fn append(b: &mut dyn ArrayBuilder, dt: &DataType, v: Option<&Value>) {
    let v = v.map(plain).filter(|v| !matches!(v, Value::Null));
    match dt {
        DataType::Boolean => put!(
            b,
            BooleanBuilder,
            v.and_then(|v| match v {
                Value::Boolean(x) => Some(*x),
                _ => None,
            })
        ),
        DataType::Int32 => put!(
            b,
            Int32Builder,
            v.and_then(|v| match v {
                Value::Int(x) => Some(*x),
                _ => None,
            })
        ),
        DataType::Int64 => put!(
            b,
            Int64Builder,
            v.and_then(|v| match v {
                Value::Long(x) => Some(*x),
                Value::Int(x) => Some(i64::from(*x)),
                _ => None,
            })
        ),
        DataType::Float32 => put!(
            b,
            Float32Builder,
            v.and_then(|v| match v {
                Value::Float(x) => Some(*x),
                _ => None,
            })
        ),
        DataType::Float64 => put!(
            b,
            Float64Builder,
            v.and_then(|v| match v {
                Value::Double(x) => Some(*x),
                Value::Float(x) => Some(f64::from(*x)),
                _ => None,
            })
        ),
        DataType::Utf8 => put!(b, StringBuilder, v.and_then(string_of)),
        DataType::LargeUtf8 => put!(b, LargeStringBuilder, v.and_then(string_of)),
        DataType::Binary => put!(b, BinaryBuilder, v.and_then(bytes_of)),
        DataType::LargeBinary => put!(b, LargeBinaryBuilder, v.and_then(bytes_of)),
        DataType::FixedSizeBinary(n) => {
            if let Some(b) = b.as_any_mut().downcast_mut::<FixedSizeBinaryBuilder>() {
                let bytes: Option<Vec<u8>> = v.and_then(|v| match v {
                    Value::Fixed(_, x) => Some(x.clone()),
                    Value::Uuid(u) => Some(u.as_bytes().to_vec()),
                    _ => None,
                });
                match bytes {
                    Some(x) if x.len() == *n as usize => {
                        if b.append_value(&x).is_err() {
                            b.append_null();
                        }
                    }
                    _ => b.append_null(),
                }
            }
        }
        DataType::Date32 => put!(
            b,
            Date32Builder,
            v.and_then(|v| match v {
                Value::Date(d) => Some(*d),
                _ => None,
            })
        ),
        DataType::Time64(TimeUnit::Microsecond) => put!(
            b,
            Time64MicrosecondBuilder,
            v.and_then(|v| match v {
                Value::TimeMillis(t) => Some(i64::from(*t) * 1000),
                Value::TimeMicros(t) => Some(*t),
                _ => None,
            })
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => put!(
            b,
            TimestampMicrosecondBuilder,
            v.and_then(|v| match v {
                Value::TimestampMillis(t) | Value::LocalTimestampMillis(t) => t.checked_mul(1000),
                Value::TimestampMicros(t) | Value::LocalTimestampMicros(t) => Some(*t),
                _ => None,
            })
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => put!(
            b,
            TimestampNanosecondBuilder,
            v.and_then(|v| match v {
                Value::TimestampNanos(t) | Value::LocalTimestampNanos(t) => Some(*t),
                _ => None,
            })
        ),
        DataType::Decimal128(_, _) => put!(
            b,
            Decimal128Builder,
            v.and_then(|v| match v {
                Value::Decimal(d) => {
                    let bytes: Vec<u8> = d.try_into().ok()?;
                    decimal_i128(&bytes)
                }
                _ => None,
            })
        ),
        DataType::Struct(fields) => {
            if let Some(sb) = b.as_any_mut().downcast_mut::<StructBuilder>() {
                let record: Option<HashMap<&str, &Value>> = v.and_then(|v| match v {
                    Value::Record(fs) => Some(fs.iter().map(|(k, v)| (k.as_str(), v)).collect()),
                    _ => None,
                });
                for (i, f) in fields.iter().enumerate() {
                    let child = record
                        .as_ref()
                        .and_then(|r| r.get(f.name().as_str()).copied());
                    if let Some(cb) = sb.field_builders_mut().get_mut(i) {
                        append(cb.as_mut(), f.data_type(), child);
                    }
                }
                sb.append(record.is_some());
            }
        }
        DataType::List(element) => {
            if let Some(lb) = b
                .as_any_mut()
                .downcast_mut::<ListBuilder<Box<dyn ArrayBuilder>>>()
            {
                match v {
                    Some(Value::Array(items)) => {
                        for item in items {
                            append(lb.values().as_mut(), element.data_type(), Some(item));
                        }
                        lb.append(true);
                    }
                    _ => lb.append(false),
                }
            }
        }
        DataType::LargeList(element) => {
            if let Some(lb) = b
                .as_any_mut()
                .downcast_mut::<LargeListBuilder<Box<dyn ArrayBuilder>>>()
            {
                match v {
                    Some(Value::Array(items)) => {
                        for item in items {
                            append(lb.values().as_mut(), element.data_type(), Some(item));
                        }
                        lb.append(true);
                    }
                    _ => lb.append(false),
                }
            }
        }
        DataType::Map(entry, _) => {
            let DataType::Struct(kv) = entry.data_type() else {
                return;
            };
            if let Some(mb) = b
                .as_any_mut()
                .downcast_mut::<MapBuilder<Box<dyn ArrayBuilder>, Box<dyn ArrayBuilder>>>()
            {
                if let Some(Value::Map(m)) = v {
                    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                    for (k, val) in entries {
                        let key = Value::String(k.clone());
                        append(mb.keys().as_mut(), kv[0].data_type(), Some(&key));
                        append(mb.values().as_mut(), kv[1].data_type(), Some(val));
                    }
                    if mb.append(true).is_err() {
                        tracing::debug!("map entry lengths differ");
                    }
                } else if mb.append(false).is_err() {
                    tracing::debug!("map entry lengths differ");
                }
            }
        }
        _ => {}
    }
}

/// Avro decimals are big-endian two's complement of any length.
fn decimal_i128(bytes: &[u8]) -> Option<i128> {
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut buf = [fill; 16];
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(buf))
}

/// An Avro field name for a JSON property (Avro names are `[A-Za-z_][A-Za-z0-9_]*`).
fn avro_field_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The Avro equivalent of a JSON schema, for columns: objects with properties become
/// records (every field optional), objects with only `additionalProperties` maps, arrays
/// lists, `string` strings (`format` date and date-time: date and timestamp),
/// `integer` longs, `number` doubles, `boolean` booleans. Anything else (no type,
/// several types, `$ref`, combinators) has no column. `None` unless the root is an
/// object with properties.
pub fn json_schema_to_avro(schema: &serde_json::Value) -> Option<Avro> {
    let mut counter = 0;
    let avro = json_to_avro_type(schema, &mut counter)?;
    if avro.get("type").and_then(serde_json::Value::as_str) != Some("record") {
        return None;
    }
    Avro::parse_str(&avro.to_string()).ok()
}

fn json_to_avro_type(schema: &serde_json::Value, counter: &mut usize) -> Option<serde_json::Value> {
    use serde_json::{json, Value as J};
    let s = schema.as_object()?;
    let types: Vec<&str> = match s.get("type") {
        Some(J::String(t)) => vec![t.as_str()],
        Some(J::Array(ts)) => ts
            .iter()
            .filter_map(J::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ if s.contains_key("properties") => vec!["object"],
        _ => return None,
    };
    let [t] = types.as_slice() else {
        return None;
    };
    match *t {
        "object" => {
            if let Some(J::Object(props)) = s.get("properties") {
                *counter += 1;
                let mut names = std::collections::HashSet::new();
                let fields: Vec<J> = props
                    .iter()
                    .filter_map(|(name, p)| {
                        let avro_name = avro_field_name(name);
                        if !names.insert(avro_name.clone()) {
                            return None;
                        }
                        let ty = json_to_avro_type(p, counter)?;
                        Some(json!({"name": avro_name, "type": ["null", ty], "default": null}))
                    })
                    .collect();
                Some(json!({"type": "record", "name": format!("json_{counter}"), "fields": fields}))
            } else {
                let values = json_to_avro_type(s.get("additionalProperties")?, counter)?;
                Some(json!({"type": "map", "values": ["null", values]}))
            }
        }
        "array" => {
            let items = json_to_avro_type(s.get("items")?, counter)?;
            Some(json!({"type": "array", "items": ["null", items]}))
        }
        "string" => Some(match s.get("format").and_then(J::as_str) {
            Some("date") => json!({"type": "int", "logicalType": "date"}),
            Some("date-time") => json!({"type": "long", "logicalType": "timestamp-micros"}),
            _ => json!("string"),
        }),
        "integer" => Some(json!("long")),
        "number" => Some(json!("double")),
        "boolean" => Some(json!("boolean")),
        _ => None,
    }
}

/// A JSON document as a value of its Avro equivalent (`None` where it does not fit).
pub fn json_to_avro_value(doc: &serde_json::Value, schema: &Avro) -> Option<Value> {
    use serde_json::Value as J;
    match schema {
        Avro::Union(u) => {
            if doc.is_null() {
                return Some(Value::Union(0, Box::new(Value::Null)));
            }
            let (i, branch) = u
                .variants()
                .iter()
                .enumerate()
                .find(|(_, v)| !matches!(v, Avro::Null))?;
            let v = json_to_avro_value(doc, branch).unwrap_or(Value::Null);
            if matches!(v, Value::Null) {
                return Some(Value::Union(0, Box::new(Value::Null)));
            }
            Some(Value::Union(i as u32, Box::new(v)))
        }
        Avro::Record(r) => {
            let obj = doc.as_object()?;
            let by_name: HashMap<String, &J> =
                obj.iter().map(|(k, v)| (avro_field_name(k), v)).collect();
            let fields = r
                .fields
                .iter()
                .map(|f| {
                    let v = by_name
                        .get(&f.name)
                        .and_then(|d| json_to_avro_value(d, &f.schema))
                        .unwrap_or(Value::Union(0, Box::new(Value::Null)));
                    (f.name.clone(), v)
                })
                .collect();
            Some(Value::Record(fields))
        }
        Avro::Array(a) => Some(Value::Array(
            doc.as_array()?
                .iter()
                .map(|d| json_to_avro_value(d, &a.items).unwrap_or(Value::Null))
                .collect(),
        )),
        Avro::Map(m) => Some(Value::Map(
            doc.as_object()?
                .iter()
                .map(|(k, d)| {
                    (
                        k.clone(),
                        json_to_avro_value(d, &m.types).unwrap_or(Value::Null),
                    )
                })
                .collect(),
        )),
        Avro::String => doc.as_str().map(|s| Value::String(s.to_string())),
        Avro::Long => doc.as_i64().map(Value::Long),
        Avro::Double => doc.as_f64().map(Value::Double),
        Avro::Boolean => doc.as_bool().map(Value::Boolean),
        Avro::Date => {
            let d = chrono::NaiveDate::parse_from_str(doc.as_str()?, "%Y-%m-%d").ok()?;
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
            i32::try_from((d - epoch).num_days()).ok().map(Value::Date)
        }
        Avro::TimestampMicros => {
            let t = chrono::DateTime::parse_from_rfc3339(doc.as_str()?).ok()?;
            Some(Value::TimestampMicros(t.timestamp_micros()))
        }
        _ => None,
    }
}
