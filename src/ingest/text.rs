//! Parsing CSV and newline-delimited JSON into the all-text shape of a raw
//! dataset, one row per input record, without ever dropping a record.
//!
//! A record that cannot be read as a row (a broken JSON line, a JSON value
//! that is not an object, a CSV row with the wrong number of fields, bytes
//! that are not UTF-8) becomes a row whose contract columns are NULL and
//! whose `_malformed` column holds the raw text, so that cleaning can put it
//! in `quarantine` with its position. Positions are 1-based line numbers in
//! the file (the CSV header is line 1), so an operator can open the file at
//! that line. Blank lines are not records and are not counted.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::rc::Rc;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringBuilder, UInt64Builder};
use datafusion::arrow::datatypes::SchemaRef;

use crate::error::{DfContext, Error, Result};

/// Longest raw text kept for a malformed record (the rest is cut, with a note).
const MAX_RAW: usize = 4096;

/// Turns raw user ids into keyed pseudonyms (privacy mode).
pub(crate) trait IdMapper: Send + Sync + std::fmt::Debug {
    /// The pseudonym of one id.
    fn map(&self, id: &str) -> String;
}

/// Collects rows of one raw dataset file into record batches.
pub(crate) struct RowSink<'a> {
    schema: SchemaRef,
    columns: &'a [&'a str],
    source: &'a str,
    user_id_col: Option<usize>,
    mapper: Option<&'a dyn IdMapper>,
    values: Vec<StringBuilder>,
    positions: UInt64Builder,
    malformed: StringBuilder,
    rows: usize,
    batch_rows: usize,
}

impl<'a> RowSink<'a> {
    /// A sink for `columns` (the contract columns, in schema order) of the
    /// file at `source`; `schema` is the dataset's text schema.
    pub(crate) fn new(
        schema: SchemaRef,
        columns: &'a [&'a str],
        source: &'a str,
        mapper: Option<&'a dyn IdMapper>,
        batch_rows: usize,
    ) -> RowSink<'a> {
        RowSink {
            schema,
            columns,
            source,
            user_id_col: columns.iter().position(|c| *c == "user_id"),
            mapper,
            values: columns.iter().map(|_| StringBuilder::new()).collect(),
            positions: UInt64Builder::new(),
            malformed: StringBuilder::new(),
            rows: 0,
            batch_rows: batch_rows.max(1),
        }
    }

    /// Append a well-formed row: `get(i)` gives contract column `i`'s value.
    pub(crate) fn push<S: AsRef<str>>(&mut self, position: u64, mut get: impl FnMut(usize) -> Option<S>) {
        for (i, b) in self.values.iter_mut().enumerate() {
            match get(i) {
                Some(v) if Some(i) == self.user_id_col && self.mapper.is_some() => {
                    let v = v.as_ref();
                    let mapped = self.mapper.map(|m| m.map(v)).unwrap_or_default();
                    b.append_value(mapped);
                }
                Some(v) => b.append_value(v),
                None => b.append_null(),
            }
        }
        self.positions.append_value(position);
        self.malformed.append_null();
        self.rows += 1;
    }

    /// Append a record that could not be read as a row.
    pub(crate) fn push_malformed(&mut self, position: u64, raw: &[u8]) {
        for b in &mut self.values {
            b.append_null();
        }
        self.positions.append_value(position);
        let text = if self.mapper.is_some() {
            // The raw text may hold a user id we cannot find to pseudonymise.
            format!("<redacted in privacy mode: {} bytes>", raw.len())
        } else {
            let mut s = String::from_utf8_lossy(&raw[..raw.len().min(MAX_RAW)]).into_owned();
            if raw.len() > MAX_RAW {
                s.push_str(&format!("… ({} bytes in all)", raw.len()));
            }
            s
        };
        self.malformed.append_value(text);
        self.rows += 1;
    }

    /// Whether a batch is full.
    pub(crate) fn full(&self) -> bool {
        self.rows >= self.batch_rows
    }

    /// Take the rows collected so far as a batch (None when there are none).
    pub(crate) fn flush(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let n = self.rows;
        let mut cols: Vec<ArrayRef> = self.values.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        let mut src = StringBuilder::with_capacity(n, n * self.source.len());
        for _ in 0..n {
            src.append_value(self.source);
        }
        cols.push(Arc::new(src.finish()));
        cols.push(Arc::new(self.positions.finish()));
        cols.push(Arc::new(self.malformed.finish()));
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), cols).ctx(format!("building rows of {}", self.source)).map(Some)
    }
}

/// Send full batches on; `emit` returns false when the reader went away.
fn emit_if_full(sink: &mut RowSink<'_>, emit: &mut dyn FnMut(RecordBatch) -> bool) -> Result<bool> {
    if sink.full()
        && let Some(b) = sink.flush()?
    {
        return Ok(emit(b));
    }
    Ok(true)
}

fn finish(sink: &mut RowSink<'_>, emit: &mut dyn FnMut(RecordBatch) -> bool) -> Result<()> {
    if let Some(b) = sink.flush()? {
        emit(b);
    }
    Ok(())
}

/// Parse newline-delimited JSON: one object per line.
pub(crate) fn parse_ndjson(
    input: impl Read,
    sink: &mut RowSink<'_>,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<()> {
    let mut reader = std::io::BufReader::with_capacity(1 << 16, input);
    let mut line = Vec::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(|e| Error::io(sink.source, e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let text = trim_ascii(&line);
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => {
                let cols = sink.columns;
                sink.push(line_no, |i| map.get(cols[i]).and_then(json_text));
            }
            _ => sink.push_malformed(line_no, text),
        }
        if !emit_if_full(sink, emit)? {
            return Ok(());
        }
    }
    finish(sink, emit)
}

/// A JSON value as text: strings as they are, numbers and booleans as
/// written, arrays and objects as JSON, null as NULL.
fn json_text(v: &serde_json::Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
        other => Some(std::borrow::Cow::Owned(other.to_string())),
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map(|e| e + 1).unwrap_or(start);
    &b[start..end.max(start)]
}

/// Parse CSV with a header row. Header names are matched to the contract
/// columns case-insensitively; other columns are ignored. An empty field is
/// NULL.
pub(crate) fn parse_csv(
    input: impl Read,
    delimiter: u8,
    sink: &mut RowSink<'_>,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<()> {
    // The csv crate's own line count skips blank lines: track lines here.
    let starts = Rc::new(RefCell::new(VecDeque::new()));
    let input =
        LineTracker { inner: input, offset: 0, line: 0, at_line_start: true, pending_cr: None, starts: starts.clone() };
    let mut lines = LineOf { starts, last: 0 };
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).delimiter(delimiter).from_reader(input);
    let headers = reader
        .byte_headers()
        .map_err(|e| Error::Data(format!("{}: cannot read the CSV header: {e}", sink.source)))?
        .clone();
    let wanted: Vec<Option<usize>> = sink
        .columns
        .iter()
        .map(|c| headers.iter().position(|h| String::from_utf8_lossy(trim_ascii(h)).eq_ignore_ascii_case(c)))
        .collect();
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => match e.kind() {
                csv::ErrorKind::Io(_) => return Err(Error::Data(format!("{}: reading failed: {e}", sink.source))),
                _ => {
                    let line = e.position().map(|p| lines.at(p.byte())).unwrap_or(0);
                    sink.push_malformed(line, e.to_string().as_bytes());
                    continue;
                }
            },
        }
        let line = record.position().map(|p| lines.at(p.byte())).unwrap_or(0);
        if record.len() == 1 && record.get(0).is_some_and(|f| trim_ascii(f).is_empty()) && headers.len() > 1 {
            continue; // a blank line
        }
        let utf8: Option<Vec<&str>> = record.iter().map(|f| std::str::from_utf8(f).ok()).collect();
        match utf8 {
            Some(fields) if fields.len() == headers.len() => {
                sink.push(line, |i| wanted[i].and_then(|j| fields.get(j).copied()).filter(|v| !v.is_empty()));
            }
            _ => sink.push_malformed(line, &rejoin(&record)),
        }
        if !emit_if_full(sink, emit)? {
            return Ok(());
        }
    }
    finish(sink, emit)
}

/// Watches bytes go by and notes where each non-blank line starts and its
/// line number, so that a record's byte offset can be turned into the line
/// it starts on (blank lines are skipped by the CSV reader, but counted
/// here). Only lines not yet looked up are kept.
struct LineTracker<R> {
    inner: R,
    offset: u64,
    line: u64,
    at_line_start: bool,
    pending_cr: Option<u64>,
    starts: Rc<RefCell<VecDeque<(u64, u64)>>>,
}

impl<R: Read> Read for LineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut q = self.starts.borrow_mut();
        for (i, b) in buf[..n].iter().enumerate() {
            let at = self.offset + i as u64;
            match (*b, self.at_line_start) {
                (b'\n', _) => {
                    self.line += 1;
                    self.at_line_start = true;
                    self.pending_cr = None;
                }
                (b'\r', true) if self.pending_cr.is_none() => self.pending_cr = Some(at),
                (_, true) => {
                    q.push_back((self.pending_cr.take().unwrap_or(at), self.line + 1));
                    self.at_line_start = false;
                }
                _ => {}
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Line numbers of record offsets, asked for in increasing order.
struct LineOf {
    starts: Rc<RefCell<VecDeque<(u64, u64)>>>,
    last: u64,
}

impl LineOf {
    /// The 1-based line of the first non-blank line starting at or after `offset`.
    fn at(&mut self, offset: u64) -> u64 {
        let mut q = self.starts.borrow_mut();
        while q.front().is_some_and(|(start, _)| *start < offset) {
            q.pop_front();
        }
        if let Some((_, line)) = q.front() {
            self.last = *line;
        }
        self.last
    }
}

/// A CSV record written back as one line (quoted where needed).
fn rejoin(record: &csv::ByteRecord) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in record.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if f.iter().any(|c| matches!(c, b',' | b'"' | b'\n' | b'\r')) {
            out.push(b'"');
            for c in f {
                if *c == b'"' {
                    out.push(b'"');
                }
                out.push(*c);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    const COLS: &[&str] = &["user_id", "item_id", "ts"];

    fn schema() -> SchemaRef {
        let mut f: Vec<Field> = COLS.iter().map(|c| Field::new(*c, DataType::Utf8, true)).collect();
        f.push(Field::new("_source", DataType::Utf8, false));
        f.push(Field::new("_position", DataType::UInt64, false));
        f.push(Field::new("_malformed", DataType::Utf8, true));
        Arc::new(Schema::new(f))
    }

    type Parser = fn(&[u8], &mut RowSink<'_>, &mut dyn FnMut(RecordBatch) -> bool) -> Result<()>;

    /// (position, user_id, item_id, ts, malformed) per row.
    type Row = (u64, Option<String>, Option<String>, Option<String>, Option<String>);

    fn rows(batches: &[RecordBatch]) -> Vec<Row> {
        let mut out = Vec::new();
        for b in batches {
            let s = |c: usize, r: usize| {
                let a = b.column(c).as_string::<i32>();
                a.is_valid(r).then(|| a.value(r).to_string())
            };
            let pos = b.column(4).as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
            for r in 0..b.num_rows() {
                out.push((pos.value(r), s(0, r), s(1, r), s(2, r), s(5, r)));
            }
        }
        out
    }

    fn run(parse: Parser, input: &str, batch: usize, mapper: Option<&dyn IdMapper>) -> Vec<Row> {
        let mut sink = RowSink::new(schema(), COLS, "f", mapper, batch);
        let mut out = Vec::new();
        parse(input.as_bytes(), &mut sink, &mut |b| {
            out.push(b);
            true
        })
        .unwrap();
        rows(&out)
    }

    fn json(i: &[u8], s: &mut RowSink<'_>, e: &mut dyn FnMut(RecordBatch) -> bool) -> Result<()> {
        parse_ndjson(i, s, e)
    }

    fn csv(i: &[u8], s: &mut RowSink<'_>, e: &mut dyn FnMut(RecordBatch) -> bool) -> Result<()> {
        parse_csv(i, b',', s, e)
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn ndjson_keeps_every_line_and_marks_broken_ones() {
        let input = "{\"user_id\":\"u1\",\"item_id\":\"I1\",\"ts\":1700000000000}\n\n{\"user_id\": \"u2\", \"ts\": \"2026-11-21T10:00:00Z\"\n[1,2]\n{\"user_id\":null,\"item_id\":7,\"extra\":true}\n";
        let got = run(json, input, 2, None);
        assert_eq!(
            got,
            vec![
                (1, some("u1"), some("I1"), some("1700000000000"), None),
                (3, None, None, None, some("{\"user_id\": \"u2\", \"ts\": \"2026-11-21T10:00:00Z\"")),
                (4, None, None, None, some("[1,2]")),
                (5, None, some("7"), None, None),
            ]
        );
    }

    #[test]
    fn csv_marks_wrong_field_counts_and_maps_headers_by_name() {
        let input =
            "TS,user_id,other,item_id\n2026-11-21,u1,x,I1\n2026-11-21,u2,x\n,u3,\"a,b\",\n\n2026-11-22,u4,y,I4,extra\n";
        let got = run(csv, input, 100, None);
        assert_eq!(
            got,
            vec![
                (2, some("u1"), some("I1"), some("2026-11-21"), None),
                (3, None, None, None, some("2026-11-21,u2,x")),
                (4, some("u3"), None, None, None),
                (6, None, None, None, some("2026-11-22,u4,y,I4,extra")),
            ]
        );
    }

    #[test]
    fn csv_lines_count_crlf_blank_lines_and_quoted_newlines() {
        let input = "user_id,item_id,ts\r\n\r\nu1,I1,1\r\n\"u\n2\",I2,2\r\n\r\n\r\nu3,I3\r\n";
        let got = run(csv, input, 10, None);
        let pos: Vec<u64> = got.iter().map(|r| r.0).collect();
        assert_eq!(pos, vec![3, 4, 8], "{got:?}");
        assert_eq!(got[1].1, some("u\n2"));
        assert!(got[2].4.is_some());
    }

    #[test]
    fn csv_with_invalid_utf8_is_malformed_not_fatal() {
        let mut input = b"user_id,item_id,ts\nu1,I1,1\n".to_vec();
        input.extend_from_slice(b"u\xff,I2,2\nu3,I3,3\n");
        let mut sink = RowSink::new(schema(), COLS, "f", None, 10);
        let mut out = Vec::new();
        parse_csv(input.as_slice(), b',', &mut sink, &mut |b| {
            out.push(b);
            true
        })
        .unwrap();
        let got = rows(&out);
        assert_eq!(got.len(), 3);
        assert!(got[1].4.is_some() && got[1].1.is_none(), "{got:?}");
        assert_eq!(got[2].1, some("u3"));
    }

    #[derive(Debug)]
    struct Upper;
    impl IdMapper for Upper {
        fn map(&self, id: &str) -> String {
            format!("h:{}", id.to_uppercase())
        }
    }

    #[test]
    fn privacy_mode_maps_user_ids_and_redacts_raw_text() {
        let got = run(json, "{\"user_id\":\"ab\"}\nnot json\n", 10, Some(&Upper));
        assert_eq!(got[0].1, some("h:AB"));
        assert_eq!(got[1].4, some("<redacted in privacy mode: 8 bytes>"));
    }
}
