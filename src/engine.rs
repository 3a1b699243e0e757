//! The DataFusion session every stage uses: a bounded memory pool, spill
//! files in a local folder, and the job's object stores registered.
//!
//! At the memory limit, operators that can spill (sorts, hash aggregates,
//! sort-merge joins) write sorted runs to `runtime.spill_dir` and merge them
//! back; an operator that cannot spill fails the stage with a
//! "Resources exhausted" error, which exits 1 so the scheduler may retry
//! with a larger `runtime.sql_memory_mb`.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringArray, UInt64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::config::Config;
use crate::error::{DfContext, Error, Result};
use crate::storage::Root;

/// The local spill folder.
pub(crate) fn spill_dir(cfg: &Config) -> PathBuf {
    if cfg.runtime.spill_dir.is_empty() {
        std::env::temp_dir().join("nightrec-spill")
    } else {
        PathBuf::from(&cfg.runtime.spill_dir)
    }
}

/// The query settings every nightrec session uses (the SQL golden tests
/// too, so that the `.sql` files parse the same way there).
pub fn session_config(target_partitions: usize) -> SessionConfig {
    let mut config = SessionConfig::new().with_target_partitions(target_partitions).with_information_schema(true);
    // Each input file is scanned as one partition, in order, so that row
    // positions reported in `quarantine` are the rows' places in the file.
    config.options_mut().optimizer.repartition_file_scans = false;
    // DuckDB's dialect: the generic one has no lambdas, which list columns
    // need (`array_transform(s, x -> x['item_idx'])`).
    config.options_mut().sql_parser.dialect = datafusion::common::config::Dialect::DuckDB;
    config
}

/// Register nightrec's SQL functions (every session and the SQL golden
/// tests call this):
/// - `hash(text)`: a 64-bit hash of a string (NULL for NULL), for grouping
///   by a long key in little memory; collisions are possible, so a query
///   that needs exact groups compares the key itself among the rows a hash
///   selects. DuckDB has a function of the same name and shape (its own
///   hash), so the SQL files run on both engines. Stable within a process,
///   not meant to be stored.
/// - `category_at(path, level)`: a category path cut at `level` parts by
///   [`crate::category::at`] (NULL when it has none), so SQL and Rust cut
///   paths by one rule.
/// - `json_object(key, value, ...)`: a JSON object of text values (NULL →
///   `null`), as DuckDB's function of the same name makes it: how a
///   quarantined catalogue row keeps every column, free text included, in a
///   form that can be parsed back.
pub fn register_functions(ctx: &SessionContext) {
    ctx.register_udf(create_udf(
        "hash",
        vec![DataType::Utf8],
        DataType::UInt64,
        Volatility::Immutable,
        Arc::new(hash_strings),
    ));
    ctx.register_udf(create_udf(
        "category_at",
        vec![DataType::Utf8, DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(category_at),
    ));
    ctx.register_udf(ScalarUDF::new_from_impl(JsonObject {
        signature: Signature::variadic_any(Volatility::Immutable),
    }));
}

fn category_at(args: &[ColumnarValue]) -> datafusion::error::Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let paths = cast(&arrays[0], &DataType::Utf8)?;
    let levels = cast(&arrays[1], &DataType::Int64)?;
    let (paths, levels) = (paths.as_string::<i32>(), levels.as_primitive::<datafusion::arrow::datatypes::Int64Type>());
    let out: StringArray = (0..paths.len())
        .map(|i| {
            if paths.is_null(i) || levels.is_null(i) {
                return None;
            }
            crate::category::at(paths.value(i), levels.value(i).max(0) as usize)
        })
        .collect();
    Ok(ColumnarValue::Array(Arc::new(out)))
}

/// `json_object(key, value, ...)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonObject {
    signature: Signature,
}

impl ScalarUDFImpl for JsonObject {
    fn name(&self) -> &str {
        "json_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return Err(datafusion::error::DataFusionError::Plan("json_object() takes key, value pairs".into()));
        }
        let n = args.number_rows;
        let columns = args
            .args
            .iter()
            .map(|a| a.to_array(n).and_then(|a| Ok(cast(&a, &DataType::Utf8)?)))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let text: Vec<_> = columns.iter().map(|c| c.as_string::<i32>()).collect();
        let rows: StringArray = (0..n)
            .map(|r| {
                let mut obj = serde_json::Map::new();
                for pair in text.chunks(2) {
                    let key = if pair[0].is_valid(r) { pair[0].value(r) } else { "" };
                    let value = if pair[1].is_valid(r) {
                        serde_json::Value::String(pair[1].value(r).to_string())
                    } else {
                        serde_json::Value::Null
                    };
                    obj.insert(key.to_string(), value);
                }
                Some(serde_json::Value::Object(obj).to_string())
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(rows)))
    }
}

fn hash_strings(args: &[ColumnarValue]) -> datafusion::error::Result<ColumnarValue> {
    use std::hash::{Hash, Hasher};
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let text = match arrays.first() {
        Some(a) => cast(a, &DataType::Utf8)?,
        None => return Err(datafusion::error::DataFusionError::Plan("hash() takes one argument".into())),
    };
    let hashed: UInt64Array = text
        .as_string::<i32>()
        .iter()
        .map(|s| {
            s.map(|s| {
                let mut h = std::hash::DefaultHasher::new();
                s.hash(&mut h);
                h.finish()
            })
        })
        .collect();
    Ok(ColumnarValue::Array(Arc::new(hashed)))
}

/// A session with the memory pool, spill folder and stores of this job.
pub(crate) fn session(cfg: &Config, roots: &[&Root]) -> Result<SessionContext> {
    let spill = spill_dir(cfg);
    std::fs::create_dir_all(&spill).map_err(|e| Error::io(spill.display(), e))?;
    let pool_bytes = crate::resources::MemoryBudget::mib(cfg.runtime.sql_memory_mb).bytes();
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(pool_bytes)))
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![spill])))
        .build_arc()
        .ctx("creating the query engine runtime")?;
    let config = session_config(cfg.run.threads);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    register_functions(&ctx);
    for r in roots {
        ctx.register_object_store(&r.base_url, r.store.clone());
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Array;

    #[tokio::test]
    async fn json_object_keeps_every_value_and_nulls_as_json() {
        let ctx = SessionContext::new_with_config(session_config(1));
        register_functions(&ctx);
        let sql = "SELECT json_object('id', 'I|1', 'title', 'Pan, 28 cm', 'price', CAST(NULL AS VARCHAR)) AS j";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let j = batches[0].column(0).as_string::<i32>().value(0).to_string();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v, serde_json::json!({"id": "I|1", "title": "Pan, 28 cm", "price": null}));
    }

    #[tokio::test]
    async fn hash_is_a_deterministic_null_preserving_u64_of_any_string_type() {
        let ctx = SessionContext::new_with_config(session_config(1));
        register_functions(&ctx);
        let sql = "SELECT hash('e1') AS a, hash('e1') AS b, hash(arrow_cast('e1', 'Utf8View')) AS c, \
                   hash('e2') AS d, hash(CAST(NULL AS VARCHAR)) AS e";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let col = |i: usize| batches[0].column(i).as_any().downcast_ref::<UInt64Array>().unwrap().clone();
        assert_eq!(col(0).value(0), col(1).value(0));
        assert_eq!(col(0).value(0), col(2).value(0), "Utf8View hashes differently");
        assert_ne!(col(0).value(0), col(3).value(0));
        assert!(col(4).is_null(0));
    }
}
