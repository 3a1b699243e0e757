//! One raw input file as one DataFusion partition stream: bytes are pulled
//! from object storage as the query consumes rows, so a file of any size is
//! read in bounded memory, and rows keep their order and position.
//!
//! CSV and NDJSON are parsed on a blocking thread fed by an async download
//! task; Parquet is read with the async Parquet reader, contract columns
//! only, each cast to text.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::text::{IdMapper, RowSink, parse_csv, parse_ndjson};
use super::{Compression, Dataset, FileKind, Format};
use crate::error::Error;

/// Rows per batch handed to the query engine.
const BATCH_ROWS: usize = 8192;

/// The part of a file that could not be decoded: bytes `from..size` of
/// the stored object (compressed, for `.gz`/`.zst`), after the rows that
/// were read. How many rows those bytes held is unknown, and never guessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unread {
    /// First byte not decoded (for a compressed file, the start of the
    /// block the decoder failed in).
    pub from: u64,
    /// Size of the file.
    pub size: u64,
    /// What the decoder said.
    pub error: String,
}

/// What the last complete read of a file saw.
#[derive(Debug, Default)]
pub(crate) struct ReadCount {
    rows: AtomicU64,
    complete: AtomicBool,
    unread: Mutex<Option<Unread>>,
}

impl ReadCount {
    /// Rows in the file as of its last complete read (None if never read to the end).
    pub(crate) fn rows(&self) -> Option<u64> {
        self.complete.load(Ordering::Acquire).then(|| self.rows.load(Ordering::Acquire))
    }

    /// What the last read could not decode (a corrupt Parquet file, a
    /// truncated `.gz`), if anything.
    pub(crate) fn unread(&self) -> Option<Unread> {
        self.unread.lock().ok().and_then(|u| u.clone())
    }

    fn record(&self, rows: u64, unread: Option<Unread>) {
        self.rows.store(rows, Ordering::Release);
        if let Ok(mut u) = self.unread.lock() {
            *u = unread;
        }
        self.complete.store(true, Ordering::Release);
    }
}

/// One file of a raw dataset.
pub(crate) struct FilePartition {
    /// The store holding the file.
    pub store: Arc<dyn ObjectStore>,
    /// Its path in the store.
    pub path: ObjPath,
    /// Its size in bytes.
    pub size: u64,
    /// Its URL, as reported in `_source`.
    pub url: String,
    /// Its format and compression.
    pub kind: FileKind,
    /// The dataset it belongs to.
    pub dataset: Dataset,
    /// The dataset's text schema.
    pub schema: SchemaRef,
    /// Pseudonymises user ids in privacy mode.
    pub mapper: Option<Arc<dyn IdMapper>>,
    /// Updated at the end of each complete read.
    pub count: Arc<ReadCount>,
}

impl fmt::Debug for FilePartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilePartition").field("url", &self.url).field("kind", &self.kind).finish()
    }
}

fn external(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl PartitionStream for FilePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(self.schema.clone(), 2);
        let tx = builder.tx();
        match self.kind.format {
            Format::Parquet => {
                let (store, path, size) = (self.store.clone(), self.path.clone(), self.size);
                let (schema, url, ds, mapper, count) =
                    (self.schema.clone(), self.url.clone(), self.dataset, self.mapper.clone(), self.count.clone());
                builder.spawn(async move {
                    let reader = ObjectReader { store, path, size };
                    read_parquet(reader, schema, &url, ds, mapper.as_deref(), &count, &tx).await
                });
            }
            Format::Csv | Format::Tsv | Format::Json => {
                // Download task → bounded channel of chunks → parsing thread.
                let (chunk_tx, chunk_rx) = tokio::sync::mpsc::channel::<Result<Bytes, object_store::Error>>(4);
                let (store, path, url) = (self.store.clone(), self.path.clone(), self.url.clone());
                let err_tx = tx.clone();
                builder.spawn(async move {
                    match store.get(&path).await {
                        Ok(r) => {
                            let mut s = r.into_stream();
                            while let Some(chunk) = s.next().await {
                                if chunk_tx.send(chunk).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            let _ = err_tx.send(Err(external(Error::storage(&url, e)))).await;
                        }
                    }
                    Ok(())
                });
                let file = TextFile {
                    schema: self.schema.clone(),
                    url: self.url.clone(),
                    dataset: self.dataset,
                    kind: self.kind,
                    mapper: self.mapper.clone(),
                    count: self.count.clone(),
                    size: self.size,
                };
                builder.spawn_blocking(move || file.parse(chunk_rx, &tx));
            }
        }
        builder.build()
    }
}

/// A CSV, TSV or NDJSON file as its parsing thread sees it.
struct TextFile {
    schema: SchemaRef,
    url: String,
    dataset: Dataset,
    kind: FileKind,
    mapper: Option<Arc<dyn IdMapper>>,
    count: Arc<ReadCount>,
    size: u64,
}

impl TextFile {
    /// Decompress the chunks the download task sends, parse them into
    /// batches and send those on; record the rows read, and where
    /// compressed data stopped being decodable.
    fn parse(
        self,
        chunks: tokio::sync::mpsc::Receiver<Result<Bytes, object_store::Error>>,
        tx: &tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>,
    ) -> datafusion::error::Result<()> {
        let TextFile { schema, url, dataset, kind, mapper, count, size } = self;
        let transport_failed = Arc::new(AtomicBool::new(false));
        let last_read_at = Arc::new(AtomicU64::new(0));
        let raw = ChunkReader {
            rx: chunks,
            current: Bytes::new(),
            url: url.clone(),
            failed: transport_failed.clone(),
            offset: 0,
            last_read_at: last_read_at.clone(),
        };
        let input: Box<dyn std::io::Read> = match kind.compression {
            Compression::None => Box::new(raw),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Compression::Zstd => match zstd::stream::read::Decoder::new(raw) {
                Ok(d) => Box::new(d),
                Err(e) => return Err(external(Error::io(&url, e))),
            },
        };
        let mut sink = RowSink::new(schema.clone(), dataset.columns, &url, mapper.as_deref(), BATCH_ROWS);
        let mut rows = 0u64;
        let mut open = true;
        let mut emit = |b: RecordBatch| {
            rows += b.num_rows() as u64;
            open = tx.blocking_send(Ok(b)).is_ok();
            open
        };
        let parsed = match kind.format {
            Format::Csv => parse_csv(input, b',', &mut sink, &mut emit),
            Format::Tsv => parse_csv(input, b'\t', &mut sink, &mut emit),
            _ => parse_ndjson(input, &mut sink, &mut emit),
        };
        match parsed {
            Ok(()) => {}
            // Compressed data that cannot be decoded past some point: the
            // rows before it are kept, the bytes after it are reported
            // (clean's data_quality), and the unreadable-file gate decides.
            Err(e) if kind.compression != Compression::None && !transport_failed.load(Ordering::Acquire) => {
                if let Some(b) = sink.flush().map_err(external)? {
                    emit(b);
                }
                if open {
                    let from = last_read_at.load(Ordering::Acquire);
                    let error = format!("undecodable {:?} data: {e}", kind.compression);
                    count.record(rows, Some(Unread { from, size, error }));
                }
                return Ok(());
            }
            Err(e) => return Err(external(e)),
        }
        if open {
            count.record(rows, None);
        }
        Ok(())
    }
}

/// `std::io::Read` over chunks arriving from the download task.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, object_store::Error>>,
    current: Bytes,
    url: String,
    /// Set when the download failed, so that a decoder's error can be told
    /// apart from a transport error (retryable, exit 1).
    failed: Arc<AtomicBool>,
    /// Bytes handed to the decoder so far.
    offset: u64,
    /// Where the decoder's latest read started: a decoder that fails
    /// failed in the block it read last.
    last_read_at: Arc<AtomicU64>,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => {
                    self.failed.store(true, Ordering::Release);
                    return Err(std::io::Error::other(format!("reading {}: {e}", self.url)));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        self.last_read_at.store(self.offset, Ordering::Release);
        self.offset += n as u64;
        Ok(n)
    }
}

/// Byte ranges of one Parquet object, for the async Parquet reader.
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
    size: u64,
}

fn parquet_io_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, datafusion::parquet::errors::Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(parquet_io_error) }.boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(parquet_io_error) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            Ok(Arc::new(ParquetMetaDataReader::new().load_and_finish(self, size).await?))
        }
        .boxed()
    }
}

type Tx = tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>;

async fn read_parquet(
    reader: ObjectReader,
    schema: SchemaRef,
    url: &str,
    ds: Dataset,
    mapper: Option<&dyn IdMapper>,
    count: &ReadCount,
    tx: &Tx,
) -> datafusion::error::Result<()> {
    let mut position = 0u64;
    let size = reader.size;
    // Where each row group's data starts and how many rows it holds, once the footer is read.
    let mut groups: Vec<(u64, u64)> = Vec::new();
    let outcome: Result<(), String> = async {
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await.map_err(|e| e.to_string())?;
        groups = builder
            .metadata()
            .row_groups()
            .iter()
            .map(|g| {
                let start = g.columns().iter().map(|c| c.byte_range().0).min().unwrap_or(0);
                (start, g.num_rows().max(0) as u64)
            })
            .collect();
        // Contract columns by name (case-insensitive); the rest is not read.
        let file_fields = builder.schema().fields().clone();
        let wanted: Vec<usize> = file_fields
            .iter()
            .enumerate()
            .filter(|(_, f)| ds.columns.iter().any(|c| c.eq_ignore_ascii_case(f.name())))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
        let mut stream =
            builder.with_projection(mask).with_batch_size(BATCH_ROWS).build().map_err(|e| e.to_string())?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| e.to_string())?;
            let out = to_text(&batch, &schema, ds, url, position, mapper).map_err(|e| e.to_string())?;
            position += batch.num_rows() as u64;
            if tx.send(Ok(out)).await.is_err() {
                return Err(String::new());
            }
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => count.record(position, None),
        Err(e) if e.is_empty() => {} // the reader went away
        Err(e) => {
            // Undecodable data: the rows read are kept; the bytes from the
            // row group that failed on (or the whole file, when its footer
            // is broken) are reported, and the unreadable-file gate decides.
            let from = first_unread_byte(&groups, position);
            count.record(position, Some(Unread { from, size, error: format!("unreadable Parquet data: {e}") }));
        }
    }
    Ok(())
}

/// The first byte of the row group holding row `rows` (0-based), given each
/// group's (first byte, rows); 0 when the footer could not be read.
fn first_unread_byte(groups: &[(u64, u64)], rows: u64) -> u64 {
    let mut seen = 0;
    for (start, n) in groups {
        if rows < seen + n {
            return *start;
        }
        seen += n;
    }
    groups.first().map_or(0, |g| g.0)
}

/// A Parquet batch in the dataset's text shape.
fn to_text(
    batch: &RecordBatch,
    schema: &SchemaRef,
    ds: Dataset,
    url: &str,
    first: u64,
    mapper: Option<&dyn IdMapper>,
) -> crate::Result<RecordBatch> {
    let n = batch.num_rows();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for c in ds.columns {
        let found = batch.schema().fields().iter().position(|f| f.name().eq_ignore_ascii_case(c));
        let text: ArrayRef = match found {
            None => Arc::new(StringArray::new_null(n)),
            Some(i) => as_text(batch.column(i))?,
        };
        let text = match (mapper, *c == "user_id") {
            (Some(m), true) => {
                let s = text
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| Error::Internal("user_id is not text".into()))?;
                Arc::new(s.iter().map(|v| v.map(|v| m.map(v))).collect::<StringArray>()) as ArrayRef
            }
            _ => text,
        };
        cols.push(text);
    }
    cols.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n(url, n))));
    cols.push(Arc::new(UInt64Array::from_iter_values(first + 1..=first + n as u64)));
    cols.push(Arc::new(StringArray::new_null(n)));
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| Error::Internal(format!("text batch of {url}: {e}")))
}

/// Any Arrow column as text: a cast where Arrow has one, else its display form.
fn as_text(a: &ArrayRef) -> crate::Result<ArrayRef> {
    if a.data_type() == &DataType::Utf8 {
        return Ok(a.clone());
    }
    if can_cast_types(a.data_type(), &DataType::Utf8)
        && let Ok(c) = cast(a, &DataType::Utf8)
    {
        return Ok(c);
    }
    let f = ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default())
        .map_err(|e| Error::Internal(format!("formatting a {} column as text: {e}", a.data_type())))?;
    Ok(Arc::new((0..a.len()).map(|i| a.is_valid(i).then(|| f.value(i).to_string())).collect::<StringArray>()))
}

/// Read counts of every file registered by a session, by URL.
#[derive(Debug, Default, Clone)]
pub(crate) struct ReadCounts(Arc<Mutex<Vec<TrackedFile>>>);

/// A file's URL, its dataset and its count.
type TrackedFile = (String, &'static str, Arc<ReadCount>);

/// What reading one file gave.
#[derive(Debug, Clone)]
pub(crate) struct FileRead {
    /// The file's URL.
    pub url: String,
    pub dataset: &'static str,
    /// Rows decoded.
    pub rows: u64,
    /// What could not be decoded, if anything.
    pub unread: Option<Unread>,
}

impl ReadCounts {
    /// Track a file of a dataset.
    pub(crate) fn track(&self, url: &str, dataset: &'static str) -> Arc<ReadCount> {
        let c = Arc::new(ReadCount::default());
        if let Ok(mut v) = self.0.lock() {
            v.push((url.to_string(), dataset, c.clone()));
        }
        c
    }

    /// Every tracked file and what its read saw; an error names a file
    /// that was never read to its end.
    pub(crate) fn snapshot(&self) -> crate::Result<Vec<FileRead>> {
        let v = self.0.lock().map_err(|_| Error::Internal("read counts poisoned".into()))?;
        v.iter()
            .map(|(url, dataset, c)| {
                c.rows()
                    .map(|rows| FileRead { url: url.clone(), dataset, rows, unread: c.unread() })
                    .ok_or_else(|| Error::Internal(format!("{url} was registered but never read to its end")))
            })
            .collect()
    }
}
