//! Rows of a Kafka partition as an Arrow record batch of the topic table's schema.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Int32Builder, Int64Builder, LargeBinaryBuilder, ListBuilder, StringBuilder,
    StructBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, SchemaRef};
use bytes::Bytes;
use icestream_storage::records::Row;

use crate::typed::{typed_columns, ValueDecoder};
use crate::CompactError;

fn field<'a>(schema: &'a SchemaRef, name: &str) -> Result<&'a Field, CompactError> {
    schema
        .field_with_name(name)
        .map_err(|e| CompactError::Schema(format!("{name}: {e}")))
}

/// Builds the record batch for `rows` of `partition` (rows in offset order): the Kafka
/// columns, then the typed columns the table has (decoded by `decoder`, null without
/// one); with the count of values that did not decode.
pub fn rows_to_batch(
    schema: &SchemaRef,
    partition: i32,
    rows: &[Row],
    decoder: Option<&ValueDecoder>,
) -> Result<(RecordBatch, u64), CompactError> {
    let n = rows.len();
    let mut partitions = Int32Builder::with_capacity(n);
    let mut offsets = Int64Builder::with_capacity(n);
    let tz = match field(schema, "timestamp")?.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        other => return Err(CompactError::Schema(format!("timestamp is {other}"))),
    };
    let mut timestamps = TimestampMicrosecondBuilder::with_capacity(n).with_timezone_opt(tz);
    let large = matches!(field(schema, "key")?.data_type(), DataType::LargeBinary);
    let headers_field = field(schema, "headers")?;
    let (element, header_fields) = match headers_field.data_type() {
        DataType::List(element) => match element.data_type() {
            DataType::Struct(fields) => (element.clone(), fields.clone()),
            other => return Err(CompactError::Schema(format!("header entry is {other}"))),
        },
        other => return Err(CompactError::Schema(format!("headers is {other}"))),
    };
    let header_large = header_fields
        .iter()
        .any(|f| f.name() == "value" && matches!(f.data_type(), DataType::LargeBinary));
    let struct_builder = StructBuilder::from_fields(header_fields.clone(), 0);
    let mut headers = ListBuilder::new(struct_builder).with_field(element);

    // Sized up front: growing a builder of a round's values copies them again and again.
    let key_bytes: usize = rows
        .iter()
        .filter_map(|r| r.key.as_ref())
        .map(Bytes::len)
        .sum();
    let value_bytes: usize = rows
        .iter()
        .filter_map(|r| r.value.as_ref())
        .map(Bytes::len)
        .sum();
    let (wide, narrow) = if large { (n, 0) } else { (0, n) };
    let wide_bytes = |b: usize| if large { b } else { 0 };
    let narrow_bytes = |b: usize| if large { 0 } else { b };
    let mut large_keys = LargeBinaryBuilder::with_capacity(wide, wide_bytes(key_bytes));
    let mut large_values = LargeBinaryBuilder::with_capacity(wide, wide_bytes(value_bytes));
    let mut keys = BinaryBuilder::with_capacity(narrow, narrow_bytes(key_bytes));
    let mut values = BinaryBuilder::with_capacity(narrow, narrow_bytes(value_bytes));
    for r in rows {
        partitions.append_value(partition);
        offsets.append_value(r.offset);
        timestamps.append_value(r.timestamp.saturating_mul(1000));
        if large {
            large_keys.append_option(r.key.as_deref());
            large_values.append_option(r.value.as_deref());
        } else {
            keys.append_option(r.key.as_deref());
            values.append_option(r.value.as_deref());
        }
        let entries = headers.values();
        for (k, v) in &r.headers {
            entries
                .field_builder::<StringBuilder>(0)
                .ok_or_else(|| CompactError::Schema("header key builder".into()))?
                .append_value(k);
            if header_large {
                entries
                    .field_builder::<LargeBinaryBuilder>(1)
                    .ok_or_else(|| CompactError::Schema("header value builder".into()))?
                    .append_option(v.as_deref());
            } else {
                entries
                    .field_builder::<BinaryBuilder>(1)
                    .ok_or_else(|| CompactError::Schema("header value builder".into()))?
                    .append_option(v.as_deref());
            }
            entries.append(true);
        }
        headers.append(true);
    }
    let (key_col, value_col): (ArrayRef, ArrayRef) = if large {
        (
            Arc::new(large_keys.finish()),
            Arc::new(large_values.finish()),
        )
    } else {
        (Arc::new(keys.finish()), Arc::new(values.finish()))
    };
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(partitions.finish()),
        Arc::new(offsets.finish()),
        Arc::new(timestamps.finish()),
        key_col,
        value_col,
        Arc::new(headers.finish()),
    ];
    let typed_fields = schema.fields().get(columns.len()..).unwrap_or_default();
    let (typed, undecodable) = typed_columns(typed_fields, rows, decoder)?;
    columns.extend(typed);
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| CompactError::Schema(e.to_string()))?;
    Ok((batch, undecodable))
}

/// `batch` (read from a data file written under an older table schema) in the shape of
/// `schema`: columns by name, cast where the type was promoted, null where the file has
/// no such column.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, CompactError> {
    let n = batch.num_rows();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let column = match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => c.clone(),
            Some(c) if arrow_cast::can_cast_types(c.data_type(), f.data_type()) => {
                arrow_cast::cast(c, f.data_type())
                    .map_err(|e| CompactError::Schema(e.to_string()))?
            }
            _ => arrow_array::new_null_array(f.data_type(), n),
        };
        columns.push(column);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| CompactError::Schema(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use iceberg::arrow::schema_to_arrow_schema;

    #[test]
    fn rows_become_a_batch_that_reads_back() {
        let schema = Arc::new(
            schema_to_arrow_schema(&icestream_catalog::table::topic_schema().expect("schema"))
                .expect("arrow schema"),
        );
        let rows = vec![
            Row {
                offset: 10,
                timestamp: 1_700_000_000_123,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: vec![
                    ("a".into(), Some(Bytes::from_static(b"1"))),
                    ("a".into(), None),
                ],
            },
            Row {
                offset: 11,
                timestamp: 1_700_000_000_124,
                key: Some(Bytes::from_static(b"k")),
                value: None,
                headers: vec![],
            },
        ];
        let (batch, _) = rows_to_batch(&schema, 3, &rows, None).expect("batch");
        assert_eq!(batch.num_rows(), 2);
        let back = icestream_catalog::reader::batch_to_rows(&batch, 0, i64::MAX).expect("rows");
        assert_eq!(back, rows);
        assert_eq!(icestream_catalog::reader::partition_of(&batch), Some(3));
    }

    fn row_strategy() -> impl proptest::strategy::Strategy<Value = Row> {
        use proptest::prelude::*;
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64));
        (
            any::<i64>(),
            prop_oneof![
                Just(i64::MIN),
                Just(i64::MAX),
                Just(-1i64),
                -62_135_596_800_000i64..253_402_300_799_999
            ],
            bytes(),
            bytes(),
            proptest::collection::vec((".{0,12}", bytes()), 0..4),
        )
            .prop_map(|(offset, timestamp, key, value, headers)| Row {
                offset,
                timestamp,
                key: key.map(Bytes::from),
                value: value.map(Bytes::from),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k, v.map(Bytes::from)))
                    .collect(),
            })
    }

    proptest::proptest! {
        /// Whatever rows the decoder yields (any offsets, timestamps at the ends of the
        /// range, empty or null fields, repeated header keys), they become a batch of the
        /// table's schema without a panic, and the rows within the representable timestamp
        /// range read back unchanged.
        #[test]
        fn any_rows_convert(rows in proptest::collection::vec(row_strategy(), 0..40)) {
            let schema = Arc::new(
                schema_to_arrow_schema(&icestream_catalog::table::topic_schema().expect("schema"))
                    .expect("arrow schema"),
            );
            let (batch, _) = rows_to_batch(&schema, 7, &rows, None).expect("batch");
            proptest::prop_assert_eq!(batch.num_rows(), rows.len());
            let back = icestream_catalog::reader::batch_to_rows(&batch, i64::MIN, i64::MAX)
                .expect("rows");
            proptest::prop_assert_eq!(back.len(), rows.len());
            for (a, b) in rows.iter().zip(&back) {
                proptest::prop_assert_eq!(a.offset, b.offset);
                proptest::prop_assert_eq!(&a.key, &b.key);
                proptest::prop_assert_eq!(&a.value, &b.value);
                proptest::prop_assert_eq!(&a.headers, &b.headers);
                if a.timestamp.checked_mul(1000).is_some() {
                    proptest::prop_assert_eq!(a.timestamp, b.timestamp);
                }
            }
        }
    }
}
