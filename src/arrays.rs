//! Small helpers to move columns between Arrow batches and plain vectors.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Int64Type};

use crate::error::{Error, Result};

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("column {name} missing from {:?}", batch.schema())))
}

/// A text column as owned strings (NULL → None).
pub(crate) fn strings(batches: &[RecordBatch], name: &str) -> Result<Vec<Option<String>>> {
    let mut out = Vec::new();
    for b in batches {
        let c = datafusion::arrow::compute::cast(column(b, name)?, &DataType::Utf8)
            .map_err(|e| Error::Internal(format!("column {name} as text: {e}")))?;
        let s = c.as_string::<i32>();
        out.extend((0..s.len()).map(|i| s.is_valid(i).then(|| s.value(i).to_string())));
    }
    Ok(out)
}

/// A text column with no NULLs.
pub fn strings_required(batches: &[RecordBatch], name: &str) -> Result<Vec<String>> {
    strings(batches, name)?
        .into_iter()
        .map(|v| v.ok_or_else(|| Error::Internal(format!("NULL in required column {name}"))))
        .collect()
}

/// An integer column as i64 (NULL → 0).
pub fn ints(batches: &[RecordBatch], name: &str) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for b in batches {
        let c = datafusion::arrow::compute::cast(column(b, name)?, &DataType::Int64)
            .map_err(|e| Error::Internal(format!("column {name} as integers: {e}")))?;
        let a = c.as_primitive::<Int64Type>();
        out.extend((0..a.len()).map(|i| if a.is_valid(i) { a.value(i) } else { 0 }));
    }
    Ok(out)
}

/// A numeric column as f64 (NULL → None).
pub(crate) fn floats(batches: &[RecordBatch], name: &str) -> Result<Vec<Option<f64>>> {
    let mut out = Vec::new();
    for b in batches {
        let c = datafusion::arrow::compute::cast(column(b, name)?, &DataType::Float64)
            .map_err(|e| Error::Internal(format!("column {name} as numbers: {e}")))?;
        let a = c.as_primitive::<Float64Type>();
        out.extend((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))));
    }
    Ok(out)
}

/// A boolean column (NULL → `default`).
pub(crate) fn bools(batches: &[RecordBatch], name: &str, default: bool) -> Result<Vec<bool>> {
    let mut out = Vec::new();
    for b in batches {
        let a = column(b, name)?
            .as_boolean_opt()
            .ok_or_else(|| Error::Internal(format!("column {name} is not boolean")))?;
        out.extend((0..a.len()).map(|i| if a.is_valid(i) { a.value(i) } else { default }));
    }
    Ok(out)
}

/// A list-of-integers column (NULL → empty).
pub(crate) fn int_lists(batches: &[RecordBatch], name: &str) -> Result<Vec<Vec<i64>>> {
    let mut out = Vec::new();
    for b in batches {
        let c = column(b, name)?;
        let list = c.as_list_opt::<i32>().ok_or_else(|| Error::Internal(format!("column {name} is not a list")))?;
        for i in 0..list.len() {
            if list.is_null(i) {
                out.push(Vec::new());
                continue;
            }
            let v = datafusion::arrow::compute::cast(&list.value(i), &DataType::Int64)
                .map_err(|e| Error::Internal(format!("list {name} as integers: {e}")))?;
            out.push(v.as_primitive::<Int64Type>().values().to_vec());
        }
    }
    Ok(out)
}

/// A fixed-size list of float32 column, flattened row-major, with its width.
pub(crate) fn vectors(batches: &[RecordBatch], name: &str) -> Result<(Vec<f32>, usize)> {
    let mut out = Vec::new();
    let mut dim = 0usize;
    for b in batches {
        let c = column(b, name)?;
        let list = c
            .as_fixed_size_list_opt()
            .ok_or_else(|| Error::Internal(format!("column {name} is not a fixed-size list")))?;
        dim = list.value_length() as usize;
        let vals = list.values().as_primitive::<Float32Type>();
        let start = list.offset() * dim;
        out.extend_from_slice(&vals.values()[start..start + list.len() * dim]);
    }
    Ok((out, dim))
}

/// Build a fixed-size list of float32 column from row-major values.
pub(crate) fn vector_array(values: Vec<f32>, dim: usize) -> Result<ArrayRef> {
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let arr = FixedSizeListArray::try_new(field, dim as i32, Arc::new(Float32Array::from(values)), None)
        .map_err(|e| Error::Internal(format!("building a vector column: {e}")))?;
    Ok(Arc::new(arr))
}

/// The Arrow type of an embedding column of width `dim`.
pub(crate) fn vector_type(dim: usize) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim as i32)
}
