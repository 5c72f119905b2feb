//! A push-style streaming CSV parser: chunks of the file in, [`RawRow`]s out, in memory
//! bounded by the row and cell limits whatever the size of the file.
//!
//! The pipeline is: the first [`SNIFF_BYTES`] are held to detect the encoding (or a declared
//! one is used), refuse binary files and detect the delimiter from the header line; then the
//! bytes are cut after every line break of the original encoding (LF or CR: one byte in
//! ASCII-compatible encodings, one 16-bit unit in UTF-16), decoded to UTF-8 by a
//! [`TextDecoder`] and fed to `csv_core`'s push parser. Because rows start just after a line
//! break, each row's offset in the original file is known exactly, so an import can resume
//! from any row with [`CsvStream::resume_at`].
//!
//! `csv_core` never fails: it prefers a parse. A small tracker beside it reports what it
//! forgave: stray quotes, text after a closing quote, a quote left open at the end. A row
//! over [`MAX_ROW_BYTES`] (or [`MAX_COLUMNS`] fields) is not buffered: its bytes are dropped
//! up to the next line break, where parsing resyncs, and the row is reported
//! [`RowProblem::RowTooLarge`].

use super::encoding::{self, DetectedEncoding, EncodingSource, TextDecoder, resolve_label};
use super::{
    ImportError, MAX_CELL_BYTES, MAX_COLUMNS, MAX_ROW_BYTES, RawRow, RowProblem, SNIFF_BYTES,
};
use csv_core::{ReadRecordResult, Reader, ReaderBuilder};
use encoding_rs::Encoding;
use serde::{Deserialize, Serialize};

/// The delimiters detected from the header line, in order of preference on a tie.
pub const DELIMITERS: [char; 4] = [',', ';', '\t', '|'];

/// Input bytes decoded at a time (bounds the decoded buffer to about 3 times this).
const PIECE_BYTES: usize = 64 * 1024;

/// How a CSV file is to be read; everything left out is detected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CsvOptions {
    /// Declared encoding label (`utf-8`, `utf-16le`, `gb18030`, `big5`, `shift_jis`...).
    pub encoding: Option<String>,
    /// Declared delimiter; detected from the header line among `,` `;` tab `|` when unset.
    pub delimiter: Option<char>,
    /// A top-level domain hinting the detection of CJK encodings (`cn`, `tw`, `jp`...).
    pub region_hint: Option<String>,
}

/// The header of a CSV file and how the file is read: what a checkpoint keeps to resume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvHeader {
    /// Column names: trimmed, empty ones named `column_<position>` (1-based), duplicates
    /// suffixed `_2`, `_3`... (compared case-insensitively).
    pub columns: Vec<String>,
    /// The header cells as they are in the file.
    pub raw: Vec<String>,
    /// The delimiter.
    pub delimiter: char,
    /// The encoding's canonical name.
    pub encoding: String,
}

impl CsvHeader {
    /// Builds a header from the cells of the header row.
    pub fn from_cells(raw: Vec<String>, delimiter: char, encoding: &str) -> Self {
        Self {
            columns: column_names(&raw),
            raw,
            delimiter,
            encoding: encoding.to_owned(),
        }
    }
}

/// Column names from header cells: trimmed, empty ones named `column_<position>` (1-based),
/// duplicates suffixed `_2`, `_3`... (compared case-insensitively).
pub fn column_names(raw: &[String]) -> Vec<String> {
    let mut columns: Vec<String> = Vec::with_capacity(raw.len());
    let mut seen = std::collections::HashSet::new();
    for (i, cell) in raw.iter().enumerate() {
        let trimmed = cell.trim_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}');
        let base = if trimmed.is_empty() {
            format!("column_{}", i + 1)
        } else {
            trimmed.to_owned()
        };
        let mut name = base.clone();
        let mut n = 2;
        while !seen.insert(name.to_lowercase()) {
            name = format!("{base}_{n}");
            n += 1;
        }
        columns.push(name);
    }
    columns
}

/// Where a 16-bit line break unit sits, if the encoding is UTF-16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Units {
    Bytes,
    Utf16Le,
    Utf16Be,
}

impl Units {
    fn of(encoding: &'static Encoding) -> Self {
        if encoding == encoding_rs::UTF_16LE {
            Self::Utf16Le
        } else if encoding == encoding_rs::UTF_16BE {
            Self::Utf16Be
        } else {
            Self::Bytes
        }
    }
}

/// Where the quote tracker is in the current field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    FieldStart,
    /// Unquoted text; `reported` once a stray quote or trailing text was reported.
    Unquoted {
        reported: bool,
    },
    Quoted,
    /// A quote inside a quoted field: either an escaped quote or the closing one.
    ClosingOrEscaped,
    Ended,
}

#[derive(Debug)]
enum Phase {
    /// Holding the first bytes until the encoding and delimiter can be decided.
    Sniffing(Vec<u8>),
    Streaming,
    Closed(String),
}

/// A push-style streaming CSV parser; see the [module](self) documentation.
///
/// ```
/// use crm_operational::import::{CsvOptions, CsvStream};
/// let mut s = CsvStream::new(CsvOptions::default())?;
/// let mut rows = s.push(b"name;email\nAnna;anna@example.com\nBo")?;
/// rows.extend(s.push(b"b;bob@example.com\n")?);
/// rows.extend(s.finish()?);
/// assert_eq!(s.header().map(|h| h.delimiter), Some(';'));
/// assert_eq!(rows[1].fields, ["Bob", "bob@example.com"]);
/// assert_eq!(rows[1].byte_offset, 33);
/// # Ok::<(), crm_operational::import::ImportError>(())
/// ```
#[derive(Debug)]
pub struct CsvStream {
    phase: Phase,
    declared_encoding: Option<&'static Encoding>,
    declared_delimiter: Option<u8>,
    region_hint: Option<String>,
    detected: Option<DetectedEncoding>,
    decoder: Option<TextDecoder>,
    units: Units,
    reader: Reader,
    delimiter: u8,
    header: Option<CsvHeader>,
    /// Original bytes handed to the decoder so far (the file offset of the next byte).
    orig_pos: u64,
    /// Original offset of the start of the current line.
    line_start: u64,
    /// The last byte handed to the decoder (for UTF-16 units cut between chunks).
    prev_byte: Option<u8>,
    decoded: String,
    out: Vec<u8>,
    out_len: usize,
    ends: Vec<usize>,
    ends_len: usize,
    record_start: Option<u64>,
    record_replaced: bool,
    record_problems: Vec<RowProblem>,
    quote: Quote,
    column: usize,
    skipping: bool,
    next_number: u64,
}

impl CsvStream {
    /// A parser of a new file, from its first byte.
    pub fn new(options: CsvOptions) -> Result<Self, ImportError> {
        let declared_encoding = options.encoding.as_deref().map(resolve_label).transpose()?;
        let declared_delimiter = options.delimiter.map(delimiter_byte).transpose()?;
        Ok(Self {
            phase: Phase::Sniffing(Vec::new()),
            declared_encoding,
            declared_delimiter,
            region_hint: options.region_hint,
            detected: None,
            decoder: None,
            units: Units::Bytes,
            reader: Reader::new(),
            delimiter: b',',
            header: None,
            orig_pos: 0,
            line_start: 0,
            prev_byte: None,
            decoded: String::new(),
            out: Vec::new(),
            out_len: 0,
            ends: Vec::new(),
            ends_len: 0,
            record_start: None,
            record_replaced: false,
            record_problems: Vec::new(),
            quote: Quote::FieldStart,
            column: 0,
            skipping: false,
            next_number: 1,
        })
    }

    /// A parser that resumes mid-file: the caller feeds the file from `byte_offset` on (the
    /// [`RawRow::byte_offset`] of the row to resume at), `row_number` is that row's
    /// [`RawRow::number`], and `header` is the [`CsvStream::header`] of the first run. The
    /// rows come out with the same numbers and offsets as in an uninterrupted run.
    pub fn resume_at(
        byte_offset: u64,
        row_number: u64,
        header: CsvHeader,
    ) -> Result<Self, ImportError> {
        let encoding = Encoding::for_label(header.encoding.as_bytes()).ok_or_else(|| {
            ImportError::BadCheckpoint {
                reason: format!("unknown encoding {:?}", header.encoding),
            }
        })?;
        let delimiter = delimiter_byte(header.delimiter)?;
        if row_number == 0 {
            return Err(ImportError::BadCheckpoint {
                reason: "row numbers start at 1".into(),
            });
        }
        if header.columns.is_empty() || header.columns.len() > MAX_COLUMNS {
            return Err(ImportError::BadCheckpoint {
                reason: format!("the header has {} columns", header.columns.len()),
            });
        }
        let units = Units::of(encoding);
        if units != Units::Bytes && byte_offset % 2 == 1 {
            return Err(ImportError::BadCheckpoint {
                reason: format!("offset {byte_offset} is inside a UTF-16 unit"),
            });
        }
        let mut s = Self::new(CsvOptions::default())?;
        s.phase = Phase::Streaming;
        s.detected = Some(DetectedEncoding {
            encoding,
            bom_len: 0,
            source: EncodingSource::Resumed,
        });
        s.decoder = Some(TextDecoder::new(encoding));
        s.units = units;
        s.delimiter = delimiter;
        s.reader = ReaderBuilder::new().delimiter(delimiter).build();
        s.header = Some(header);
        s.orig_pos = byte_offset;
        s.line_start = byte_offset;
        s.next_number = row_number;
        Ok(s)
    }

    /// The header, once its row has been read.
    pub fn header(&self) -> Option<&CsvHeader> {
        self.header.as_ref()
    }

    /// The encoding the file is read in, once decided.
    pub fn encoding(&self) -> Option<DetectedEncoding> {
        self.detected
    }

    /// Feeds the next chunk of the file (cut anywhere) and returns the rows it completed.
    /// File-level problems are errors and close the stream; row-level ones are in the rows.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<RawRow>, ImportError> {
        let mut rows = Vec::new();
        let r = self.push_into(chunk, &mut rows);
        self.close_on_error(r).map(|()| rows)
    }

    /// Ends the file: returns the last rows (a last line without a line break included).
    /// An empty file, or one without a header row, is [`ImportError::EmptyFile`].
    pub fn finish(&mut self) -> Result<Vec<RawRow>, ImportError> {
        let mut rows = Vec::new();
        let r = self.finish_into(&mut rows);
        let r = self.close_on_error(r).map(|()| rows);
        if r.is_ok() {
            self.phase = Phase::Closed("the file was finished".into());
        }
        r
    }

    fn close_on_error(&mut self, r: Result<(), ImportError>) -> Result<(), ImportError> {
        if let Err(e) = &r
            && !matches!(e, ImportError::StreamClosed { .. })
        {
            self.phase = Phase::Closed(e.to_string());
        }
        r
    }

    fn push_into(&mut self, chunk: &[u8], rows: &mut Vec<RawRow>) -> Result<(), ImportError> {
        match &mut self.phase {
            Phase::Closed(reason) => Err(ImportError::StreamClosed {
                reason: reason.clone(),
            }),
            Phase::Sniffing(buf) => {
                let take = chunk.len().min(SNIFF_BYTES.saturating_sub(buf.len()));
                buf.extend_from_slice(&chunk[..take]);
                if buf.len() < SNIFF_BYTES {
                    return Ok(());
                }
                let buf = std::mem::take(buf);
                self.start(&buf, rows)?;
                self.feed_bytes(&chunk[take..], rows)
            }
            Phase::Streaming => self.feed_bytes(chunk, rows),
        }
    }

    fn finish_into(&mut self, rows: &mut Vec<RawRow>) -> Result<(), ImportError> {
        match &mut self.phase {
            Phase::Closed(reason) => {
                return Err(ImportError::StreamClosed {
                    reason: reason.clone(),
                });
            }
            Phase::Sniffing(buf) => {
                let buf = std::mem::take(buf);
                self.start(&buf, rows)?;
            }
            Phase::Streaming => {}
        }
        let mut decoded = std::mem::take(&mut self.decoded);
        decoded.clear();
        let replaced = match &mut self.decoder {
            Some(d) => d.finish(&mut decoded),
            None => false,
        };
        let line_start = self.line_start;
        self.feed_text(&decoded, replaced, false, line_start, rows)?;
        self.decoded = decoded;
        if self.skipping {
            self.end_skip(rows)?;
        } else {
            if self.record_start.is_some() && self.quote == Quote::Quoted {
                self.record_problems.push(RowProblem::UnterminatedQuote {
                    column: self.column,
                });
            }
            loop {
                let (res, _, nout, nend) = self.reader.read_record(
                    &[],
                    &mut self.out[self.out_len..],
                    &mut self.ends[self.ends_len..],
                );
                self.out_len += nout;
                self.ends_len += nend;
                match res {
                    ReadRecordResult::Record => self.complete_record(rows)?,
                    ReadRecordResult::End | ReadRecordResult::InputEmpty => break,
                    ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => {
                        if !self.grow(&res) {
                            self.start_skip();
                            self.end_skip(rows)?;
                            break;
                        }
                    }
                }
            }
        }
        if self.header.is_none() {
            return Err(ImportError::EmptyFile);
        }
        Ok(())
    }

    /// Decides the encoding and delimiter from the first bytes, then parses them.
    fn start(&mut self, buf: &[u8], rows: &mut Vec<RawRow>) -> Result<(), ImportError> {
        let detected = match (self.declared_encoding, Encoding::for_bom(buf)) {
            (Some(encoding), None) => DetectedEncoding {
                encoding,
                bom_len: 0,
                source: EncodingSource::Declared,
            },
            _ => encoding::detect_with_hint(buf, self.region_hint.as_deref()),
        };
        let text = &buf[detected.bom_len..];
        if let Some(reason) = encoding::binary_reason(text, detected.encoding) {
            return Err(ImportError::NotText { reason });
        }
        let delimiter = match self.declared_delimiter {
            Some(d) => d,
            None => {
                let mut sample = String::new();
                let mut d = TextDecoder::new(detected.encoding);
                d.decode(text, &mut sample);
                sniff_delimiter(&sample)
            }
        };
        self.detected = Some(detected);
        self.decoder = Some(TextDecoder::new(detected.encoding));
        self.units = Units::of(detected.encoding);
        self.delimiter = delimiter;
        self.reader = ReaderBuilder::new().delimiter(delimiter).build();
        self.orig_pos = detected.bom_len as u64;
        self.line_start = self.orig_pos;
        self.phase = Phase::Streaming;
        self.feed_bytes(text, rows)
    }

    /// Length of the prefix of `data` up to and including its first line break unit.
    fn line_break_end(&self, data: &[u8]) -> Option<usize> {
        let is_break = |b: u8| b == b'\n' || b == b'\r';
        match self.units {
            Units::Bytes => data.iter().position(|b| is_break(*b)).map(|i| i + 1),
            Units::Utf16Le | Units::Utf16Be => {
                // A unit ends at each odd file offset.
                let first_odd = usize::from(self.orig_pos.is_multiple_of(2));
                (first_odd..data.len()).step_by(2).find_map(|i| {
                    let prev = if i == 0 { self.prev_byte? } else { data[i - 1] };
                    let (lo, hi) = if self.units == Units::Utf16Le {
                        (prev, data[i])
                    } else {
                        (data[i], prev)
                    };
                    (hi == 0 && is_break(lo)).then_some(i + 1)
                })
            }
        }
    }

    /// Cuts the bytes after each line break, decodes and parses them.
    fn feed_bytes(&mut self, mut data: &[u8], rows: &mut Vec<RawRow>) -> Result<(), ImportError> {
        let mut decoded = std::mem::take(&mut self.decoded);
        while !data.is_empty() {
            let window = &data[..data.len().min(PIECE_BYTES)];
            let (n, ends_line) = match self.line_break_end(window) {
                Some(n) => (n, true),
                None => (window.len(), false),
            };
            let piece = &data[..n];
            decoded.clear();
            let replaced = match &mut self.decoder {
                Some(d) => d.decode(piece, &mut decoded),
                None => false,
            };
            let line_start = self.line_start;
            self.orig_pos += n as u64;
            self.prev_byte = piece.last().copied();
            if ends_line {
                self.line_start = self.orig_pos;
            }
            let r = self.feed_text(&decoded, replaced, ends_line, line_start, rows);
            if r.is_err() {
                self.decoded = decoded;
                return r;
            }
            data = &data[n..];
        }
        self.decoded = decoded;
        Ok(())
    }

    /// Parses decoded text: a piece of one line (`ends_line` when it ends with its break).
    fn feed_text(
        &mut self,
        text: &str,
        replaced: bool,
        ends_line: bool,
        line_start: u64,
        rows: &mut Vec<RawRow>,
    ) -> Result<(), ImportError> {
        if replaced {
            self.record_replaced = true;
        }
        let mut input = text.as_bytes();
        while !input.is_empty() && !self.skipping {
            if self.out.is_empty() {
                self.out.resize(4096, 0);
                self.ends.resize(64, 0);
            }
            let (res, nin, nout, nend) = self.reader.read_record(
                input,
                &mut self.out[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            self.track(&input[..nin], line_start);
            input = &input[nin..];
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                ReadRecordResult::InputEmpty | ReadRecordResult::End => {}
                ReadRecordResult::Record => self.complete_record(rows)?,
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => {
                    if !self.grow(&res) {
                        if self.header.is_none() {
                            return Err(header_overflow(&res));
                        }
                        self.start_skip();
                    }
                }
            }
        }
        if self.skipping && ends_line {
            self.end_skip(rows)?;
        }
        Ok(())
    }

    /// Grows the field or field-end buffer within the limits; false at the limit.
    fn grow(&mut self, res: &ReadRecordResult) -> bool {
        if *res == ReadRecordResult::OutputFull {
            if self.out.len() >= MAX_ROW_BYTES {
                return false;
            }
            let len = (self.out.len() * 2).clamp(4096, MAX_ROW_BYTES);
            self.out.resize(len, 0);
        } else {
            if self.ends.len() >= MAX_COLUMNS {
                return false;
            }
            let len = (self.ends.len() * 2).clamp(64, MAX_COLUMNS);
            self.ends.resize(len, 0);
        }
        true
    }

    /// Follows quoting beside `csv_core` to report what it forgave, and notes where a
    /// record starts (its first byte that is not a line break).
    fn track(&mut self, consumed: &[u8], line_start: u64) {
        const QUOTE: u8 = b'"';
        for &b in consumed {
            let brk = b == b'\n' || b == b'\r';
            if self.record_start.is_none() {
                if brk {
                    continue;
                }
                self.record_start = Some(line_start);
                self.quote = Quote::FieldStart;
                self.column = 0;
            }
            let delim = b == self.delimiter;
            self.quote = match self.quote {
                Quote::Ended => Quote::Ended,
                Quote::FieldStart | Quote::Unquoted { .. } | Quote::ClosingOrEscaped if brk => {
                    Quote::Ended
                }
                Quote::FieldStart | Quote::Unquoted { .. } | Quote::ClosingOrEscaped if delim => {
                    self.column += 1;
                    Quote::FieldStart
                }
                Quote::FieldStart if b == QUOTE => Quote::Quoted,
                Quote::FieldStart => Quote::Unquoted { reported: false },
                Quote::Unquoted { reported: false } if b == QUOTE => {
                    self.record_problems.push(RowProblem::StrayQuote {
                        column: self.column,
                    });
                    Quote::Unquoted { reported: true }
                }
                Quote::Unquoted { reported } => Quote::Unquoted { reported },
                Quote::Quoted if b == QUOTE => Quote::ClosingOrEscaped,
                Quote::Quoted => Quote::Quoted,
                Quote::ClosingOrEscaped if b == QUOTE => Quote::Quoted,
                Quote::ClosingOrEscaped => {
                    self.record_problems.push(RowProblem::TextAfterQuote {
                        column: self.column,
                    });
                    Quote::Unquoted { reported: true }
                }
            };
        }
    }

    fn start_skip(&mut self) {
        self.skipping = true;
    }

    /// Ends skipping an oversized row at a line break: reports it and restarts the parser.
    fn end_skip(&mut self, rows: &mut Vec<RawRow>) -> Result<(), ImportError> {
        self.skipping = false;
        if self.header.is_none() {
            return Err(ImportError::HeaderTooLarge { max: MAX_ROW_BYTES });
        }
        let byte_offset = self.record_start.take().unwrap_or(self.line_start);
        rows.push(RawRow {
            number: self.next_number,
            byte_offset,
            fields: Vec::new(),
            problems: vec![RowProblem::RowTooLarge {
                max_bytes: MAX_ROW_BYTES,
                max_fields: MAX_COLUMNS,
            }],
        });
        self.next_number += 1;
        self.reset_record();
        self.reader.reset();
        // The reset reader would take a leading U+FEFF for a BOM: it is never one here.
        Ok(())
    }

    fn reset_record(&mut self) {
        self.out_len = 0;
        self.ends_len = 0;
        self.record_start = None;
        self.record_replaced = false;
        self.record_problems.clear();
        self.quote = Quote::FieldStart;
        self.column = 0;
    }

    /// Turns the record `csv_core` completed into the header or a row.
    fn complete_record(&mut self, rows: &mut Vec<RawRow>) -> Result<(), ImportError> {
        let mut fields = Vec::with_capacity(self.ends_len);
        let mut start = 0;
        for &end in &self.ends[..self.ends_len] {
            let end = end.min(self.out_len);
            fields.push(String::from_utf8_lossy(&self.out[start.min(end)..end]).into_owned());
            start = end;
        }
        let byte_offset = self.record_start.unwrap_or(self.line_start);
        let mut problems = std::mem::take(&mut self.record_problems);
        let replaced = self.record_replaced;
        self.reset_record();
        let Some(header) = &self.header else {
            let encoding = self.detected.map_or("UTF-8", |d| d.name());
            self.header = Some(CsvHeader::from_cells(
                fields,
                char::from(self.delimiter),
                encoding,
            ));
            return Ok(());
        };
        let expected = header.columns.len();
        if fields.len() < expected {
            problems.push(RowProblem::TooFewFields {
                expected,
                found: fields.len(),
            });
        } else if fields.len() > expected {
            problems.push(RowProblem::TooManyFields {
                expected,
                found: fields.len(),
            });
        }
        for (column, f) in fields.iter_mut().enumerate() {
            if f.len() > MAX_CELL_BYTES {
                problems.push(RowProblem::CellTooLarge {
                    column,
                    bytes: f.len(),
                    max: MAX_CELL_BYTES,
                });
            }
            if f.contains('\0') {
                f.retain(|c| c != '\0');
                problems.push(RowProblem::NulRemoved { column });
            }
        }
        if replaced {
            let columns = fields
                .iter()
                .enumerate()
                .filter(|(_, f)| f.contains('\u{FFFD}'))
                .map(|(i, _)| i)
                .collect();
            problems.push(RowProblem::Undecodable { columns });
        }
        rows.push(RawRow {
            number: self.next_number,
            byte_offset,
            fields,
            problems,
        });
        self.next_number += 1;
        Ok(())
    }
}

fn header_overflow(res: &ReadRecordResult) -> ImportError {
    if *res == ReadRecordResult::OutputEndsFull {
        ImportError::TooManyColumns {
            count: MAX_COLUMNS + 1,
            max: MAX_COLUMNS,
        }
    } else {
        ImportError::HeaderTooLarge { max: MAX_ROW_BYTES }
    }
}

fn delimiter_byte(c: char) -> Result<u8, ImportError> {
    match u8::try_from(c) {
        Ok(b) if b.is_ascii() && !matches!(b, b'"' | b'\r' | b'\n' | 0) => Ok(b),
        _ => Err(ImportError::InvalidDelimiter { delimiter: c }),
    }
}

/// The delimiter of the header line (the first line of `sample`, quotes respected): the
/// candidate of [`DELIMITERS`] found most often, `,` when none is.
pub fn sniff_delimiter(sample: &str) -> u8 {
    let mut counts = [0usize; DELIMITERS.len()];
    let mut quoted = false;
    for c in sample.chars() {
        match c {
            '"' => quoted = !quoted,
            '\n' | '\r' if !quoted => break,
            _ if !quoted => {
                if let Some(i) = DELIMITERS.iter().position(|d| *d == c) {
                    counts[i] += 1;
                }
            }
            _ => {}
        }
    }
    let mut best = 0;
    for i in 1..counts.len() {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    // The candidates are ASCII.
    DELIMITERS[best] as u8
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_chunked(bytes: &[u8], chunk: usize, options: CsvOptions) -> (CsvHeader, Vec<RawRow>) {
        let mut s = CsvStream::new(options).unwrap();
        let mut rows = Vec::new();
        for c in bytes.chunks(chunk.max(1)) {
            rows.extend(s.push(c).unwrap());
        }
        rows.extend(s.finish().unwrap());
        (s.header().cloned().unwrap(), rows)
    }

    fn parse(bytes: &[u8]) -> (CsvHeader, Vec<RawRow>) {
        parse_chunked(bytes, bytes.len().max(1), CsvOptions::default())
    }

    fn fields(rows: &[RawRow]) -> Vec<Vec<String>> {
        rows.iter().map(|r| r.fields.clone()).collect()
    }

    #[test]
    fn quoted_fields_with_delimiters_newlines_and_quotes() {
        let data = "name,notes,city\r\n\"Doe, Jane\",\"line 1\r\nline 2\",\"Paris\"\r\n\"He said \"\"hi\"\"\",,Berlin\r\n";
        for chunk in [1, 2, 5, 1000] {
            let (h, rows) = parse_chunked(data.as_bytes(), chunk, CsvOptions::default());
            assert_eq!(h.columns, ["name", "notes", "city"]);
            assert_eq!(
                fields(&rows),
                vec![
                    vec!["Doe, Jane", "line 1\r\nline 2", "Paris"],
                    vec!["He said \"hi\"", "", "Berlin"],
                ],
                "chunk {chunk}"
            );
            assert!(rows.iter().all(|r| r.problems.is_empty()), "{rows:?}");
            assert_eq!(rows[0].number, 1);
            assert_eq!(rows[0].byte_offset, 17);
            assert_eq!(rows[1].number, 2);
            let second = data.find("\"He said").unwrap() as u64;
            assert_eq!(rows[1].byte_offset, second);
        }
    }

    #[test]
    fn delimiters_are_detected_from_the_header() {
        for (d, data) in [
            (',', "a,b;c\n1,2;3\n"),
            (';', "a;b;c\n1;2;3\n"),
            ('\t', "a\tb\tc\n1\t2\t3\n"),
            ('|', "a|b|c\n1|2|3\n"),
            (';', "\"x,y\";b\n1;2\n"),
            (',', "single\nvalue\n"),
        ] {
            let (h, _) = parse(data.as_bytes());
            assert_eq!(h.delimiter, d, "{data:?}");
        }
        let (h, rows) = parse_chunked(
            b"a,b;c\n1,2;3\n",
            100,
            CsvOptions {
                delimiter: Some(';'),
                ..CsvOptions::default()
            },
        );
        assert_eq!(h.columns, ["a,b", "c"]);
        assert_eq!(rows[0].fields, ["1,2", "3"]);
        assert!(matches!(
            CsvStream::new(CsvOptions {
                delimiter: Some('"'),
                ..CsvOptions::default()
            }),
            Err(ImportError::InvalidDelimiter { delimiter: '"' })
        ));
    }

    #[test]
    fn header_names_are_trimmed_and_made_unique() {
        let (h, _) = parse(b" Email ,,email,Name, name ,\n1,2,3,4,5,6\n");
        assert_eq!(
            h.columns,
            ["Email", "column_2", "email_2", "Name", "name_2", "column_6"]
        );
        assert_eq!(h.raw[0], " Email ");
    }

    #[test]
    fn ragged_rows_are_reported() {
        let (_, rows) = parse(b"a,b,c\n1,2\n1,2,3,4\n1,2,3\n");
        assert_eq!(
            rows[0].problems,
            [RowProblem::TooFewFields {
                expected: 3,
                found: 2
            }]
        );
        assert_eq!(
            rows[1].problems,
            [RowProblem::TooManyFields {
                expected: 3,
                found: 4
            }]
        );
        assert_eq!(rows[1].fields, ["1", "2", "3", "4"]);
        assert!(rows[2].problems.is_empty());
        assert!(rows[0].is_rejected() && rows[1].is_rejected() && !rows[2].is_rejected());
    }

    #[test]
    fn bad_quoting_is_reported() {
        let (_, rows) = parse(b"a,b\nx\"y,2\n\"ab\"c,3\nok,4\n\"open,5\nz,6\n");
        assert_eq!(rows[0].problems, [RowProblem::StrayQuote { column: 0 }]);
        assert_eq!(rows[0].fields, ["x\"y", "2"]);
        assert_eq!(rows[1].problems, [RowProblem::TextAfterQuote { column: 0 }]);
        assert_eq!(rows[1].fields, ["abc", "3"]);
        assert!(rows[2].problems.is_empty());
        // The open quote swallows the rest of the file into one field.
        assert_eq!(rows.len(), 4);
        assert!(
            rows[3]
                .problems
                .contains(&RowProblem::UnterminatedQuote { column: 0 }),
            "{:?}",
            rows[3]
        );
        assert!(rows[3].is_rejected());
    }

    #[test]
    fn crlf_lone_cr_blank_lines_and_no_final_newline() {
        let data = b"a,b\r\n1,2\r\n\r\n\r\n3,4\r5,6";
        let (_, rows) = parse(data);
        assert_eq!(
            fields(&rows),
            vec![vec!["1", "2"], vec!["3", "4"], vec!["5", "6"]]
        );
        assert_eq!(
            rows.iter().map(|r| r.byte_offset).collect::<Vec<_>>(),
            [5, 14, 18]
        );
        assert_eq!(rows.iter().map(|r| r.number).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn formula_like_cells_are_kept_as_text() {
        let (_, rows) = parse(b"a,b\n=1+2,@SUM(A1)\n-3,+4\n");
        assert_eq!(
            fields(&rows),
            vec![vec!["=1+2", "@SUM(A1)"], vec!["-3", "+4"]]
        );
    }

    #[test]
    fn binary_file_is_refused() {
        let mut bin = b"PK\x03\x04".to_vec();
        bin.extend([0u8; 100]);
        let mut s = CsvStream::new(CsvOptions::default()).unwrap();
        assert!(s.push(&bin).unwrap().is_empty());
        let err = s.finish().unwrap_err();
        assert!(matches!(err, ImportError::NotText { .. }), "{err}");
        assert!(err.to_string().contains("not a CSV"));
        // Closed after the error.
        assert!(matches!(
            s.push(b"a"),
            Err(ImportError::StreamClosed { .. })
        ));
        // NUL bytes in a large file are refused once the sniff buffer is full.
        let mut s = CsvStream::new(CsvOptions::default()).unwrap();
        let mut data = b"a,b\n".repeat(SNIFF_BYTES / 4);
        data[100] = 0;
        assert!(matches!(s.push(&data), Err(ImportError::NotText { .. })));
    }

    #[test]
    fn empty_files_are_refused() {
        for data in [&b""[..], b"\xEF\xBB\xBF", b"\n\r\n\n", b"\xFF\xFE"] {
            let mut s = CsvStream::new(CsvOptions::default()).unwrap();
            s.push(data).unwrap();
            assert_eq!(s.finish(), Err(ImportError::EmptyFile), "{data:?}");
        }
        let (h, rows) = parse(b"only,a,header");
        assert_eq!(h.columns.len(), 3);
        assert!(rows.is_empty());
    }

    #[test]
    fn too_many_columns_is_refused() {
        let header = vec!["c"; MAX_COLUMNS + 1].join(",");
        let mut s = CsvStream::new(CsvOptions::default()).unwrap();
        s.push(header.as_bytes()).unwrap();
        let err = s.finish().unwrap_err();
        assert!(matches!(err, ImportError::TooManyColumns { .. }), "{err}");
        // Exactly the limit is fine; a data row over it is rejected and skipped.
        let header = vec!["c"; MAX_COLUMNS].join(",");
        let wide = vec!["1"; 100_000].join(",");
        let data = format!("{header}\n{wide}\n{}\n", vec!["2"; MAX_COLUMNS].join(","));
        let (h, rows) = parse_chunked(data.as_bytes(), 8192, CsvOptions::default());
        assert_eq!(h.columns.len(), MAX_COLUMNS);
        assert_eq!(rows.len(), 2);
        assert!(matches!(
            rows[0].problems[..],
            [RowProblem::RowTooLarge { .. }]
        ));
        assert!(rows[0].fields.is_empty());
        assert_eq!(rows[1].number, 2);
        assert!(rows[1].problems.is_empty());
        assert_eq!(
            rows[1].byte_offset as usize,
            header.len() + 1 + wide.len() + 1
        );
    }

    #[test]
    fn oversized_cell_is_rejected() {
        let big = "x".repeat(MAX_CELL_BYTES + 1);
        let (_, rows) = parse(format!("a,b\n1,{big}\n2,ok\n").as_bytes());
        assert_eq!(
            rows[0].problems,
            [RowProblem::CellTooLarge {
                column: 1,
                bytes: MAX_CELL_BYTES + 1,
                max: MAX_CELL_BYTES
            }]
        );
        assert!(rows[1].problems.is_empty());
    }

    /// 100 MB in one cell, pushed 1 MiB at a time: the row is rejected, the parser resyncs
    /// at the next line, and its buffers never grow past the row limit.
    #[test]
    fn hundred_megabyte_cell_is_skipped_in_bounded_memory() {
        for quoted in [false, true] {
            let mut s = CsvStream::new(CsvOptions::default()).unwrap();
            let mut rows = s.push(b"id,notes\n1,").unwrap();
            if quoted {
                rows.extend(s.push(b"\"").unwrap());
            }
            let chunk = vec![b'y'; 1024 * 1024];
            for _ in 0..100 {
                rows.extend(s.push(&chunk).unwrap());
                assert!(s.out.capacity() <= MAX_ROW_BYTES, "{}", s.out.capacity());
                assert!(
                    s.decoded.capacity() <= 8 * PIECE_BYTES,
                    "{}",
                    s.decoded.capacity()
                );
            }
            rows.extend(s.push(b"\n2,after\n").unwrap());
            rows.extend(s.finish().unwrap());
            assert_eq!(rows.len(), 2, "quoted {quoted}");
            assert_eq!(rows[0].number, 1);
            assert_eq!(rows[0].byte_offset, 9);
            assert!(matches!(
                rows[0].problems[..],
                [RowProblem::RowTooLarge { .. }]
            ));
            assert_eq!(rows[1].fields, ["2", "after"]);
            assert_eq!(rows[1].number, 2);
            let offset = 9 + 2 + u64::from(quoted) + 100 * 1024 * 1024 + 1;
            assert_eq!(rows[1].byte_offset, offset);
        }
    }

    /// 100,000 rows generated and pushed 64 KiB at a time: all come out, in order, and the
    /// parser's buffers stay at their first sizes.
    #[test]
    fn hundred_thousand_rows_in_flat_memory() {
        let mut s = CsvStream::new(CsvOptions::default()).unwrap();
        let mut count = 0u64;
        let mut offset = 0u64;
        let mut pending = b"id,name,email,phone\r\n".to_vec();
        let check = |rows: Vec<RawRow>, count: &mut u64| {
            for r in rows {
                *count += 1;
                assert_eq!(r.number, *count);
                assert!(r.problems.is_empty(), "{r:?}");
                assert_eq!(r.fields[0], count.to_string());
            }
        };
        for i in 1..=100_000u64 {
            pending.extend(format!("{i},\"Name {i}\",n{i}@example.com,+86 138 {i:08}\r\n").bytes());
            if pending.len() >= 64 * 1024 {
                offset += pending.len() as u64;
                check(s.push(&pending).unwrap(), &mut count);
                pending.clear();
                assert!(s.out.capacity() <= 4096 && s.ends.capacity() <= 64);
            }
        }
        offset += pending.len() as u64;
        check(s.push(&pending).unwrap(), &mut count);
        check(s.finish().unwrap(), &mut count);
        assert_eq!(count, 100_000);
        assert_eq!(s.orig_pos, offset);
    }

    #[test]
    fn mixed_encoding_rows_are_flagged() {
        // A GB18030 row past the detected part of a UTF-8 file, and one inside it.
        let gbk = encoding_rs::GB18030.encode("张伟,北京\n").0.into_owned();
        for filler in [SNIFF_BYTES / 8, 0] {
            let mut data = "name,city\nAnna,Berlin\nJürgen,Köln\nZoë,Genève\n"
                .as_bytes()
                .to_vec();
            data.extend("Jo,Málaga\n".repeat(filler).as_bytes());
            data.extend_from_slice(&gbk);
            data.extend_from_slice("Bo,Köln\n".as_bytes());
            let (h, rows) = parse_chunked(&data, 1000, CsvOptions::default());
            assert_eq!(h.encoding, "UTF-8");
            let n = rows.len();
            assert!(rows[..n - 2].iter().all(|r| r.problems.is_empty()));
            let bad = &rows[n - 2];
            assert!(
                matches!(&bad.problems[..], [RowProblem::Undecodable { columns }] if *columns == vec![0, 1]),
                "{bad:?}"
            );
            assert!(!bad.is_rejected());
            assert!(bad.fields[0].contains('\u{FFFD}'));
            assert_eq!(rows[n - 1].fields, ["Bo", "Köln"]);
            assert!(rows[n - 1].problems.is_empty());
        }
    }

    #[test]
    fn nul_in_a_cell_after_the_sniffed_part_is_removed() {
        let mut data = b"a,b\n".to_vec();
        data.extend(b"1,2\n".repeat(SNIFF_BYTES / 4));
        data.extend(b"x\0y,3\n");
        let (_, rows) = parse_chunked(&data, 4096, CsvOptions::default());
        let last = rows.last().unwrap();
        assert_eq!(last.fields, ["xy", "3"]);
        assert_eq!(last.problems, [RowProblem::NulRemoved { column: 0 }]);
    }

    fn encode(text: &str, encoding: &'static Encoding) -> Vec<u8> {
        if encoding == encoding_rs::UTF_16LE {
            let mut v = vec![0xFF, 0xFE];
            v.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
            return v;
        }
        if encoding == encoding_rs::UTF_16BE {
            let mut v = vec![0xFE, 0xFF];
            v.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
            return v;
        }
        encoding.encode(text).0.into_owned()
    }

    const CJK: &str = "姓名,公司,电话\r\n张伟,\"北京科技有限公司\",13800000000\r\n山田太郎,株式会社東京商事,090-1234-5678\r\n\"王|芳\",\"上海\n贸易\",139\r\n";

    #[test]
    fn cjk_encodings_stream_with_original_offsets() {
        for (label, encoding, hint) in [
            ("utf-8", encoding_rs::UTF_8, None),
            ("utf-16le", encoding_rs::UTF_16LE, None),
            ("utf-16be", encoding_rs::UTF_16BE, None),
            ("gb18030", encoding_rs::GB18030, Some("cn")),
            ("shift_jis", encoding_rs::SHIFT_JIS, Some("jp")),
        ] {
            let text = if encoding == encoding_rs::SHIFT_JIS {
                "氏名,会社,電話\r\n山田太郎,株式会社東京商事,090\r\n佐藤花子,\"大阪|電機\",080\r\n鈴木一郎,名古屋システム株式会社,070\r\n"
            } else {
                CJK
            };
            let bytes = encode(text, encoding);
            for declared in [false, true] {
                let options = CsvOptions {
                    encoding: declared.then(|| label.to_owned()),
                    region_hint: hint.map(str::to_owned),
                    ..CsvOptions::default()
                };
                for chunk in [1, 3, 64] {
                    let (h, rows) = parse_chunked(&bytes, chunk, options.clone());
                    assert_eq!(h.encoding, encoding.name(), "{label}");
                    assert_eq!(h.columns.len(), 3);
                    assert_eq!(rows.len(), 3, "{label} chunk {chunk}");
                    for r in &rows {
                        assert!(r.problems.is_empty(), "{label}: {r:?}");
                        // Each row's offset is where its bytes start in the file.
                        let (dec, _, _) = encoding.decode(&bytes[r.byte_offset as usize..]);
                        let first = r.fields[0].trim_matches('"');
                        assert!(
                            dec.trim_start_matches('"').starts_with(first),
                            "{label}: {dec:?} vs {first:?}"
                        );
                    }
                }
            }
        }
        let (h, rows) = parse(&encode(CJK, encoding_rs::UTF_8));
        assert_eq!(h.columns, ["姓名", "公司", "电话"]);
        assert_eq!(rows[2].fields, ["王|芳", "上海\n贸易", "139"]);
        let mut s = CsvStream::new(CsvOptions {
            encoding: Some("no-such-charset".into()),
            ..CsvOptions::default()
        })
        .unwrap_err();
        s = match s {
            ImportError::UnknownEncoding { label } => ImportError::UnknownEncoding { label },
            other => panic!("{other}"),
        };
        assert_eq!(s.field_path(), "encoding");
    }

    #[test]
    fn resume_mid_file_yields_the_remaining_rows() {
        let bytes = encode(CJK, encoding_rs::UTF_16LE);
        let (h, rows) = parse(&bytes);
        for (i, r) in rows.iter().enumerate() {
            let mut s = CsvStream::resume_at(r.byte_offset, r.number, h.clone()).unwrap();
            let mut rest = s.push(&bytes[r.byte_offset as usize..]).unwrap();
            rest.extend(s.finish().unwrap());
            assert_eq!(rest, rows[i..]);
        }
        assert!(matches!(
            CsvStream::resume_at(3, 1, h.clone()),
            Err(ImportError::BadCheckpoint { .. })
        ));
        assert!(matches!(
            CsvStream::resume_at(0, 0, h),
            Err(ImportError::BadCheckpoint { .. })
        ));
    }

    fn cell_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9 ]{0,6}",
            "[a-z,;\"\r\n é张]{0,8}",
            Just(String::new()),
            Just("=1+1".to_owned()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_chunking_and_resume_points(
            records in proptest::collection::vec(proptest::collection::vec(cell_strategy(), 3), 1..25),
            crlf in any::<bool>(),
            utf16 in any::<bool>(),
            cuts in proptest::collection::vec(1usize..30, 1..20),
            resume in any::<proptest::sample::Index>(),
        ) {
            let mut w = ::csv::WriterBuilder::new()
                .terminator(if crlf { ::csv::Terminator::CRLF } else { ::csv::Terminator::Any(b'\n') })
                .from_writer(Vec::new());
            w.write_record(["first", "second", "third"]).unwrap();
            for r in &records {
                w.write_record(r).unwrap();
            }
            let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
            let encoding = if utf16 { encoding_rs::UTF_16BE } else { encoding_rs::UTF_8 };
            let bytes = encode(&text, encoding);

            let mut s = CsvStream::new(CsvOptions { delimiter: Some(','), ..CsvOptions::default() }).unwrap();
            let mut rows = Vec::new();
            let mut rest = &bytes[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                rows.extend(s.push(&rest[..n]).unwrap());
                rest = &rest[n..];
                i += 1;
            }
            rows.extend(s.finish().unwrap());
            let header = s.header().cloned().unwrap();

            // The csv crate's reader is the reference (it skips blank lines too).
            let mut reference = ::csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(text.as_bytes());
            let expected: Vec<Vec<String>> = reference.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect();
            prop_assert_eq!(fields(&rows), expected);
            for (k, r) in rows.iter().enumerate() {
                prop_assert_eq!(r.number, k as u64 + 1);
                prop_assert!(r.problems.iter().all(|p| !matches!(p, RowProblem::StrayQuote { .. } | RowProblem::TextAfterQuote { .. } | RowProblem::UnterminatedQuote { .. })), "{:?}", r);
            }
            if !rows.is_empty() {
                let from = &rows[resume.index(rows.len())];
                let mut s = CsvStream::resume_at(from.byte_offset, from.number, header).unwrap();
                let mut again = Vec::new();
                for c in bytes[from.byte_offset as usize..].chunks(cuts[0]) {
                    again.extend(s.push(c).unwrap());
                }
                again.extend(s.finish().unwrap());
                let k = (from.number - 1) as usize;
                prop_assert_eq!(&again[..], &rows[k..]);
            }
        }
    }
}
