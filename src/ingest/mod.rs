//! Reading raw input datasets (`events/`, `items/`, `users/`) from object
//! storage into DataFusion, whatever their file format.
//!
//! Every file is one partition, read as a stream ([`stream`]) and turned
//! into the dataset's contract columns as text ([`text`]; missing optional
//! columns become NULL, extra columns are ignored), plus `_source`,
//! `_position` and `_malformed`, so that cleaning SQL sees one shape
//! whatever the format, can report where each row came from, and sees
//! records that could not be parsed instead of failing on them.
//! Hive folders `dt=YYYY-MM-DD` outside the run's window (with the day before
//! it as slack, see [`Window::reads_partition`]) are not read at all; what a
//! night reads is pinned once per date ([`pin`]). CSV, TSV and NDJSON may be gzip- or
//! zstd-compressed (`.csv.gz`, `.jsonl.zst`); files of any other extension
//! are listed as not read, for `data_quality` to report.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;
use object_store::ObjectMeta;
use sha2::{Digest, Sha256};

pub(crate) mod pin;
pub(crate) mod stream;
pub(crate) mod text;

use stream::FilePartition;
pub(crate) use stream::{FileRead, ReadCounts};
pub(crate) use text::IdMapper;

use crate::config::{RunDate, Window, hex};
use crate::error::{DfContext, Error, Result};
use crate::storage::Root;

/// A raw input dataset and its contract columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dataset {
    /// Folder name under the input root, and `raw_<name>` as a table.
    pub name: &'static str,
    /// Columns of the input contract, read as text.
    pub columns: &'static [&'static str],
    /// Whether a run can go on without any file of it.
    pub required: bool,
}

/// Behaviour events.
pub(crate) const EVENTS: Dataset = Dataset {
    name: "events",
    columns: &[
        "event_id",
        "user_id",
        "item_id",
        "event_type",
        "ts",
        "session_id",
        "query",
        "rating",
        "quantity",
        "price",
    ],
    required: true,
};

/// The catalog.
pub(crate) const ITEMS: Dataset = Dataset {
    name: "items",
    columns: &[
        "item_id",
        "title",
        "description",
        "category",
        "brand",
        "price",
        "in_stock",
        "created_at",
        "image_embedding",
    ],
    required: true,
};

/// Optional user attributes.
pub(crate) const USERS: Dataset = Dataset { name: "users", columns: &["user_id", "signup_ts"], required: false };

/// All raw datasets.
pub(crate) const DATASETS: [Dataset; 3] = [EVENTS, ITEMS, USERS];

/// File formats, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Apache Parquet.
    Parquet,
    /// CSV with a header row.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
    /// Newline-delimited JSON.
    Json,
}

/// Whole-file compression of a text format (Parquet compresses inside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// Plain text.
    None,
    /// gzip (`.gz`), concatenated members included.
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
}

/// How a file is read: its format and compression, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileKind {
    /// The record format.
    pub format: Format,
    /// The compression around it.
    pub compression: Compression,
}

impl FileKind {
    /// The kind of a file name, if nightrec reads it.
    pub(crate) fn of(name: &str) -> Option<FileKind> {
        let lower = name.to_ascii_lowercase();
        let (stem, compression) = if let Some(s) = lower.strip_suffix(".gz") {
            (s, Compression::Gzip)
        } else if let Some(s) = lower.strip_suffix(".zst") {
            (s, Compression::Zstd)
        } else {
            (lower.as_str(), Compression::None)
        };
        let format = [
            (".parquet", Format::Parquet),
            (".csv", Format::Csv),
            (".tsv", Format::Tsv),
            (".jsonl", Format::Json),
            (".ndjson", Format::Json),
            (".json", Format::Json),
        ]
        .into_iter()
        .find(|(ext, _)| stem.ends_with(ext))
        .map(|(_, f)| f)?;
        // Parquet compresses its pages itself; a compressed Parquet file is not a format.
        if format == Format::Parquet && compression != Compression::None {
            return None;
        }
        Some(FileKind { format, compression })
    }
}

/// The extensions nightrec reads, for messages.
pub(crate) const READABLE: &str = ".parquet, .csv, .tsv, .jsonl, .ndjson, .json (text formats also as .gz or .zst)";

/// The `dt=` partition date in a path, if any.
pub(crate) fn partition_date(path: &str) -> Option<RunDate> {
    path.split('/').find_map(|seg| seg.strip_prefix("dt=")).and_then(|d| d.parse().ok())
}

/// The files of a dataset: those that will be read, and those that will
/// not because nightrec cannot read their format (reported, never silent).
#[derive(Debug, Clone, Default)]
pub(crate) struct Listing {
    /// Data files in the window, sorted by path.
    pub files: Vec<ObjectMeta>,
    /// Files with an extension nightrec does not read.
    pub unreadable_format: Vec<ObjectMeta>,
}

/// Data files of a dataset, sorted by path; `window` limits Hive partitions
/// ([`Window::reads_partition`]). Names starting with `_` or `.` (markers,
/// hidden files) are not data.
pub(crate) async fn list_files(root: &Root, ds: Dataset, window: Option<Window>) -> Result<Listing> {
    let all = root.list(ds.name).await?;
    let mut out = Listing::default();
    for m in all {
        let name = m.location.filename().unwrap_or("");
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        let in_window = match (window, partition_date(m.location.as_ref())) {
            (Some(w), Some(d)) => w.reads_partition(d),
            _ => true,
        };
        if !in_window {
            continue;
        }
        if FileKind::of(name).is_some() {
            out.files.push(m);
        } else {
            out.unreadable_format.push(m);
        }
    }
    Ok(out)
}

/// A stable fingerprint of the files a run reads: names, sizes, mtimes.
pub(crate) fn snapshot(files: &[ObjectMeta]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.location.as_ref().as_bytes());
        h.update(f.size.to_le_bytes());
        h.update(f.last_modified.timestamp_millis().to_le_bytes());
        if let Some(e) = &f.e_tag {
            h.update(e.as_bytes());
        }
    }
    hex(&h.finalize())[..16].to_string()
}

/// Keyed pseudonyms for user ids (privacy mode): HMAC-SHA256 of the id
/// under a secret key, so the same user gets the same pseudonym in every
/// table and every run with that key, and ids cannot be recovered or
/// guessed without it.
pub(crate) struct KeyedHash {
    key: Vec<u8>,
}

impl KeyedHash {
    /// A mapper with this secret key.
    pub(crate) fn new(key: &[u8]) -> KeyedHash {
        KeyedHash { key: key.to_vec() }
    }
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHash(<secret>)")
    }
}

impl IdMapper for KeyedHash {
    fn map(&self, id: &str) -> String {
        use hmac::{Hmac, Mac};
        match <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            Ok(mut mac) => {
                mac.update(id.as_bytes());
                format!("p_{}", &hex(&mac.finalize().into_bytes())[..32])
            }
            // HMAC takes keys of any length; this cannot happen.
            Err(_) => String::new(),
        }
    }
}

/// The all-text shape every file of a dataset is read into: the contract
/// columns, `_source` (the file's URL), `_position` (1-based line number
/// for CSV and NDJSON, row number for Parquet) and `_malformed` (the raw
/// text of a record that could not be read as a row, else NULL).
pub(crate) fn text_schema(ds: Dataset) -> SchemaRef {
    let mut fields: Vec<Field> = ds.columns.iter().map(|c| Field::new(*c, DataType::Utf8, true)).collect();
    fields.push(Field::new("_source", DataType::Utf8, false));
    fields.push(Field::new("_position", DataType::UInt64, false));
    fields.push(Field::new("_malformed", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// Register `raw_<dataset>` over the given files, one partition per file,
/// read lazily as queries consume it. A required dataset without files is
/// an error; an optional one is an empty table. Each file's row count is
/// tracked in `counts`.
pub(crate) fn register(
    ctx: &SessionContext,
    root: &Root,
    ds: Dataset,
    files: &[ObjectMeta],
    mapper: Option<Arc<dyn IdMapper>>,
    counts: &ReadCounts,
) -> Result<()> {
    if files.is_empty() && ds.required {
        return Err(Error::Data(format!("no {} files ({READABLE}) under {}", ds.name, root.folder_url(ds.name))));
    }
    let schema = text_schema(ds);
    let mut parts: Vec<Arc<dyn PartitionStream>> = Vec::new();
    for f in files {
        let name = f.location.filename().unwrap_or("");
        let Some(kind) = FileKind::of(name) else { continue };
        let url = root.object_url(&f.location);
        parts.push(Arc::new(FilePartition {
            store: root.store.clone(),
            path: f.location.clone(),
            size: f.size,
            count: counts.track(&url, ds.name),
            url,
            kind,
            dataset: ds,
            schema: schema.clone(),
            mapper: mapper.clone(),
        }));
    }
    let table = StreamingTable::try_new(schema, parts).ctx(format!("reading {} files", ds.name))?;
    ctx.register_table(format!("raw_{}", ds.name), Arc::new(table)).ctx(format!("registering raw_{}", ds.name))?;
    Ok(())
}

/// The user-id pseudonymiser of privacy mode, when it is on. The key comes
/// from the environment only, like every other secret.
pub(crate) fn id_mapper(cfg: &crate::config::Config) -> Result<Option<Arc<dyn IdMapper>>> {
    if !cfg.clean.pseudonymize_user_ids {
        return Ok(None);
    }
    match std::env::var(USER_ID_KEY_ENV) {
        Ok(k) if k.len() >= 16 => Ok(Some(Arc::new(KeyedHash::new(k.as_bytes())))),
        _ => Err(Error::Config(format!(
            "clean.pseudonymize_user_ids is on but {USER_ID_KEY_ENV} is unset or shorter than 16 bytes"
        ))),
    }
}

/// The environment variable holding the privacy-mode key.
pub(crate) const USER_ID_KEY_ENV: &str = "NIGHTREC_USER_ID_KEY";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_extensions() {
        let kind = |n: &str| FileKind::of(n).map(|k| (k.format, k.compression));
        assert_eq!(kind("a/part-0.PARQUET"), Some((Format::Parquet, Compression::None)));
        assert_eq!(kind("x.ndjson"), Some((Format::Json, Compression::None)));
        assert_eq!(kind("x.csv"), Some((Format::Csv, Compression::None)));
        assert_eq!(kind("x.tsv"), Some((Format::Tsv, Compression::None)));
        assert_eq!(kind("x.csv.gz"), Some((Format::Csv, Compression::Gzip)));
        assert_eq!(kind("x.JSONL.GZ"), Some((Format::Json, Compression::Gzip)));
        assert_eq!(kind("x.ndjson.zst"), Some((Format::Json, Compression::Zstd)));
        assert!(kind("x.parquet.gz").is_none());
        assert!(kind("x.csv.bz2").is_none());
        assert!(kind("x.xlsx").is_none());
        assert!(kind("_SUCCESS").is_none());
    }

    #[test]
    fn keyed_hash_is_stable_keyed_and_opaque() {
        let a = KeyedHash::new(b"k1");
        assert_eq!(a.map("U1"), a.map("U1"));
        assert_ne!(a.map("U1"), a.map("U2"));
        assert_ne!(a.map("U1"), KeyedHash::new(b"k2").map("U1"));
        assert!(a.map("U1").starts_with("p_") && !a.map("U1").contains("U1"));
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        let h = KeyedHash::new(b"Jefe").map("what do ya want for nothing?");
        assert_eq!(h, "p_5bdcc146bf60754e6a042426089575c7");
    }

    #[test]
    fn partition_dates_are_found_in_paths() {
        assert_eq!(
            partition_date("events/dt=2026-11-21/part-0.parquet").map(|d| d.to_string()),
            Some("2026-11-21".into())
        );
        assert!(partition_date("events/part-0.parquet").is_none());
    }
}
