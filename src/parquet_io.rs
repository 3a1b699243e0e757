//! Writing tables as Parquet part files on any object store.
//!
//! Files are written whole (buffered in memory up to
//! `runtime.max_rows_per_file` rows, then uploaded), so a reader never sees
//! a half-written object. Each file carries lineage in its key-value
//! metadata, and the writer reports rows, bytes and sha256 per file for the
//! publish manifest.

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::hex;
use crate::error::{DfContext, Result};
use crate::storage::Root;

/// Where a table's data came from; stored in every Parquet file's metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Lineage {
    /// The run that wrote the file.
    pub run_id: String,
    /// Hash of the configuration the run used.
    pub config_hash: String,
    /// Hash of the input files' names, sizes and modification times.
    pub input_snapshot: String,
    /// Checkpoint hash of the model that produced the data, when any.
    pub model_version: String,
    /// The run date.
    pub date: String,
}

impl Lineage {
    fn key_values(&self, table: &str) -> Vec<KeyValue> {
        let kv = |k: &str, v: &str| KeyValue::new(format!("nightrec.{k}"), v.to_string());
        vec![
            kv("table", table),
            kv("run_id", &self.run_id),
            kv("config_hash", &self.config_hash),
            kv("input_snapshot", &self.input_snapshot),
            kv("model_version", &self.model_version),
            kv("date", &self.date),
            kv("version", env!("CARGO_PKG_VERSION")),
        ]
    }
}

/// One written Parquet file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct FileInfo {
    /// Path relative to the storage root.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// sha256 of the file's bytes.
    pub sha256: String,
}

/// A table written as part files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WrittenTable {
    /// Table name.
    pub name: String,
    /// Folder relative to the storage root.
    pub folder: String,
    /// The files, in order.
    pub files: Vec<FileInfo>,
}

impl WrittenTable {
    /// Total rows over all files.
    pub(crate) fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

/// Streams batches into rolling part files under one folder.
pub(crate) struct PartWriter<'a> {
    root: &'a Root,
    folder: String,
    table: String,
    schema: SchemaRef,
    props: WriterProperties,
    max_rows: usize,
    current: Option<(ArrowWriter<Vec<u8>>, u64)>,
    files: Vec<FileInfo>,
}

impl<'a> PartWriter<'a> {
    /// Replace the folder's contents with a new table (old files are deleted first).
    pub(crate) async fn create(
        root: &'a Root,
        folder: &str,
        table: &str,
        schema: SchemaRef,
        lineage: &Lineage,
        max_rows: usize,
    ) -> Result<PartWriter<'a>> {
        root.delete_folder(folder).await?;
        Ok(Self::new(root, folder, table, schema, lineage, max_rows))
    }

    fn new(root: &'a Root, folder: &str, table: &str, schema: SchemaRef, lineage: &Lineage, max_rows: usize) -> Self {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_key_value_metadata(Some(lineage.key_values(table)))
            .build();
        PartWriter {
            root,
            folder: folder.trim_end_matches('/').to_string(),
            table: table.to_string(),
            schema,
            props,
            max_rows: max_rows.max(1),
            current: None,
            files: Vec::new(),
        }
    }

    fn open(&mut self) -> Result<()> {
        if self.current.is_none() {
            let w = ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(self.props.clone()))
                .ctx(format!("writing {}", self.table))?;
            self.current = Some((w, 0));
        }
        Ok(())
    }

    /// Append a batch.
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            self.open()?;
            let Some((w, rows)) = self.current.as_mut() else { continue };
            let room = self.max_rows - *rows as usize;
            let take = room.min(batch.num_rows() - offset);
            w.write(&batch.slice(offset, take)).ctx(format!("writing {}", self.table))?;
            *rows += take as u64;
            offset += take;
            if *rows as usize >= self.max_rows {
                self.finish_part().await?;
            }
        }
        Ok(())
    }

    async fn finish_part(&mut self) -> Result<()> {
        let Some((w, rows)) = self.current.take() else { return Ok(()) };
        let data = w.into_inner().ctx(format!("finishing a part of {}", self.table))?;
        let rel = format!("{}/part-{:05}.parquet", self.folder, self.files.len());
        let sha = hex(&Sha256::digest(&data));
        let bytes = data.len() as u64;
        self.root.put(&self.root.path(&rel), Bytes::from(data)).await?;
        self.files.push(FileInfo { path: rel, rows, bytes, sha256: sha });
        Ok(())
    }

    /// Upload the last part and describe the table.
    pub(crate) async fn finish(mut self) -> Result<WrittenTable> {
        if self.current.is_none() && self.files.is_empty() {
            // An empty table still gets one file so readers learn its schema.
            self.open()?;
        }
        self.finish_part().await?;
        Ok(WrittenTable { name: self.table, folder: self.folder, files: self.files })
    }
}

/// Replace the contents of `folder` with the batches of a stream.
pub(crate) async fn write_stream(
    root: &Root,
    folder: &str,
    table: &str,
    mut stream: SendableRecordBatchStream,
    lineage: &Lineage,
    max_rows: usize,
) -> Result<WrittenTable> {
    root.delete_folder(folder).await?;
    let mut w = PartWriter::new(root, folder, table, stream.schema(), lineage, max_rows);
    while let Some(batch) = stream.next().await {
        let batch = batch.ctx(format!("computing {table}"))?;
        w.write(&batch).await?;
    }
    w.finish().await
}

/// Replace the contents of `folder` with in-memory batches.
pub(crate) async fn write_batches(
    root: &Root,
    folder: &str,
    table: &str,
    schema: SchemaRef,
    batches: &[RecordBatch],
    lineage: &Lineage,
    max_rows: usize,
) -> Result<WrittenTable> {
    root.delete_folder(folder).await?;
    let mut w = PartWriter::new(root, folder, table, schema, lineage, max_rows);
    for b in batches {
        w.write(b).await?;
    }
    w.finish().await
}

/// Rows recorded in a Parquet file's footer.
pub fn row_count(data: Bytes) -> Result<u64> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(data).ctx("reading Parquet metadata")?;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
}
