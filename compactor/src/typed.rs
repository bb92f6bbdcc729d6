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

/// Parsed schemas by registry id (ids never change what they name).
static SCHEMAS: LazyLock<Mutex<HashMap<i32, Arc<Avro>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The Avro schema registered under `id` (`None`: unknown id or not Avro).
pub async fn avro_schema(meta: &MetaStore, id: i32) -> Result<Option<Arc<Avro>>, CompactError> {
    if let Some(s) = SCHEMAS.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return Ok(Some(s.clone()));
    }
    let Some(stored) = meta.schema_by_id(id).await? else {
        return Ok(None);
    };
    if stored.schema_type != "AVRO" {
        return Ok(None);
    }
    // Referenced schemas, depth first, each once.
    let mut texts: Vec<String> = Vec::new();
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
        texts.push(s.schema);
    }
    let parsed = if texts.is_empty() {
        Avro::parse_str(&stored.schema)
    } else {
        Avro::parse_str_with_list(&stored.schema, &texts).map(|(s, _)| s)
    };
    let Ok(schema) = parsed else {
        return Ok(None);
    };
    let schema = Arc::new(schema);
    SCHEMAS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, schema.clone());
    Ok(Some(schema))
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
    reader: Arc<Avro>,
    /// Writer schemas of the ids the rows carry.
    writers: HashMap<i32, Arc<Avro>>,
}

impl ValueDecoder {
    /// A decoder for `rows` into the columns of the table schema `reader_id` made.
    pub async fn for_rows(
        meta: &MetaStore,
        reader_id: i32,
        rows: &[Row],
    ) -> Result<Option<Self>, CompactError> {
        let Some(reader) = avro_schema(meta, reader_id).await? else {
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
            if let Some(s) = avro_schema(meta, id).await? {
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
        let decoded = if Arc::ptr_eq(writer, &self.reader) || **writer == *self.reader {
            apache_avro::from_avro_datum(writer, &mut datum, None)
        } else {
            apache_avro::from_avro_datum(writer, &mut datum, Some(&self.reader))
        }
        .ok()?;
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
        DataType::Utf8 => put!(
            b,
            StringBuilder,
            v.and_then(|v| match v {
                Value::String(s) => Some(s.as_str()),
                Value::Enum(_, s) => Some(s.as_str()),
                _ => None,
            })
        ),
        DataType::LargeUtf8 => put!(
            b,
            LargeStringBuilder,
            v.and_then(|v| match v {
                Value::String(s) => Some(s.as_str()),
                Value::Enum(_, s) => Some(s.as_str()),
                _ => None,
            })
        ),
        DataType::Binary => put!(
            b,
            BinaryBuilder,
            v.and_then(|v| match v {
                Value::Bytes(x) => Some(x.as_slice()),
                _ => None,
            })
        ),
        DataType::LargeBinary => put!(
            b,
            LargeBinaryBuilder,
            v.and_then(|v| match v {
                Value::Bytes(x) => Some(x.as_slice()),
                _ => None,
            })
        ),
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
