//! Reading records back out of a topic table's Parquet files: the rows of one partition in
//! an offset range, touching only the row groups whose offset statistics overlap it.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use bytes::Bytes;
use futures::TryStreamExt;
use icestream_storage::records::Row;
use object_store::path::Path;
use object_store::ObjectStore;
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::file::statistics::Statistics;

use crate::CatalogError;

fn corrupt(m: impl Into<String>) -> CatalogError {
    CatalogError::Corrupt(m.into())
}

fn binary_at(col: &ArrayRef, i: usize) -> Result<Option<Bytes>, CatalogError> {
    if col.is_null(i) {
        return Ok(None);
    }
    if let Some(a) = col.as_binary_opt::<i64>() {
        return Ok(Some(Bytes::copy_from_slice(a.value(i))));
    }
    if let Some(a) = col.as_binary_opt::<i32>() {
        return Ok(Some(Bytes::copy_from_slice(a.value(i))));
    }
    Err(corrupt(format!(
        "binary column has type {}",
        col.data_type()
    )))
}

fn string_at(col: &ArrayRef, i: usize) -> Result<String, CatalogError> {
    if let Some(a) = col.as_string_opt::<i32>() {
        return Ok(a.value(i).to_string());
    }
    if let Some(a) = col.as_string_opt::<i64>() {
        return Ok(a.value(i).to_string());
    }
    Err(corrupt(format!(
        "string column has type {}",
        col.data_type()
    )))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, CatalogError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| corrupt(format!("data file has no {name} column")))
}

/// Converts Arrow rows of the topic schema into records, keeping offsets in `[from, to]`.
pub fn batch_to_rows(batch: &RecordBatch, from: i64, to: i64) -> Result<Vec<Row>, CatalogError> {
    let offsets = column(batch, "offset")?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| corrupt("offset column is not a long"))?;
    let timestamps = column(batch, "timestamp")?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| corrupt("timestamp column is not a timestamp"))?;
    let keys = column(batch, "key")?;
    let values = column(batch, "value")?;
    let headers = column(batch, "headers")?;
    let header_lists = headers.as_list_opt::<i32>();
    let header_large_lists = headers.as_list_opt::<i64>();
    let mut rows = Vec::new();
    for i in 0..batch.num_rows() {
        let offset = offsets.value(i);
        if offset < from || offset > to {
            continue;
        }
        let mut row_headers = Vec::new();
        if !headers.is_null(i) {
            let entries: ArrayRef = match (header_lists, header_large_lists) {
                (Some(l), _) => l.value(i),
                (None, Some(l)) => l.value(i),
                _ => return Err(corrupt("headers column is not a list")),
            };
            let entries = entries
                .as_struct_opt()
                .ok_or_else(|| corrupt("header entries are not structs"))?;
            let hk = entries
                .column_by_name("key")
                .ok_or_else(|| corrupt("header has no key"))?;
            let hv = entries
                .column_by_name("value")
                .ok_or_else(|| corrupt("header has no value"))?;
            for j in 0..entries.len() {
                row_headers.push((string_at(hk, j)?, binary_at(hv, j)?));
            }
        }
        rows.push(Row {
            offset,
            timestamp: timestamps.value(i).div_euclid(1000),
            key: binary_at(keys, i)?,
            value: binary_at(values, i)?,
            headers: row_headers,
        });
    }
    Ok(rows)
}

/// Reads the rows with offsets in `[from, to]` from one data file, only decoding row
/// groups whose offset statistics overlap the range.
pub async fn read_rows(
    store: Arc<dyn ObjectStore>,
    path: Path,
    from: i64,
    to: i64,
) -> Result<Vec<Row>, CatalogError> {
    let reader = ParquetObjectReader::new(store, path);
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    let metadata = builder.metadata().clone();
    let offset_column = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == "offset")
        .ok_or_else(|| corrupt("data file has no offset column"))?;
    let groups: Vec<usize> = metadata
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(_, rg)| match rg.column(offset_column).statistics() {
            Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                (Some(min), Some(max)) => *max >= from && *min <= to,
                _ => true,
            },
            _ => true,
        })
        .map(|(i, _)| i)
        .collect();
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let stream = builder
        .with_row_groups(groups)
        .with_batch_size(8192)
        .build()?;
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    let mut rows = Vec::new();
    for b in &batches {
        rows.extend(batch_to_rows(b, from, to)?);
    }
    Ok(rows)
}

/// Partition value check used by callers that read whole files.
pub fn partition_of(batch: &RecordBatch) -> Option<i32> {
    let col = batch.column_by_name("partition")?;
    let p = col.as_primitive_opt::<Int32Type>()?;
    (!p.is_empty()).then(|| p.value(0))
}
