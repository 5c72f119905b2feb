//! Lead, contact and account imports. The pure parsing layer (bytes in, rows and JSON
//! records out, no database and no gRPC):
//!
//! - [`encoding`]: charset detection (BOM, UTF-8 validity, then `chardetng`) and an
//!   incremental [`TextDecoder`] that takes chunks cut anywhere.
//! - [`csv`]: [`CsvStream`], a push parser (chunks in, [`RawRow`]s out) in bounded memory,
//!   with original byte offsets so an import can resume from a checkpoint.
//! - [`sheet`]: [`XlsxSheet`], XLSX/XLS/XLSB/ODS sheets read with calamine into the same rows.
//! - [`mapping`]: proposed column mappings from the header and a sample, their validation,
//!   and rows mapped to the JSON object of a lead, contact or account.
//!
//! and, on crm-core's engine, what the gateway's ImportService serves:
//!
//! - [`model`]: uploads and their chunks, imports and their per-row results (resources).
//! - [`upload`]: files received in pieces, stored as chunks, read back from any offset.
//! - [`run`]: previews, imports as jobs in batches with exact resumption, row results and
//!   the CSV report (docs/api/imports.md).
//!
//! # Limits
//!
//! | what | limit | beyond it |
//! | --- | --- | --- |
//! | columns in the header | [`MAX_COLUMNS`] (1,000) | [`ImportError::TooManyColumns`]: the file is refused |
//! | fields kept of a data row | [`MAX_COLUMNS`] | [`RowProblem::RowTooLarge`]: the row is rejected, parsing resyncs at the next line |
//! | one cell | [`MAX_CELL_BYTES`] (64 KiB of UTF-8) | [`RowProblem::CellTooLarge`]: the row is rejected |
//! | one row | [`MAX_ROW_BYTES`] (1 MiB of UTF-8) | [`RowProblem::RowTooLarge`]: the row is rejected, its bytes are skipped (never buffered) up to the next line end, where parsing resyncs |
//! | a spreadsheet file | [`MAX_SHEET_FILE_BYTES`] (256 MiB) | [`ImportError::FileTooLarge`] |
//!
//! A CSV stream holds at most about one row (1 MiB), one decoded chunk piece (64 KiB of input)
//! and the first [`SNIFF_BYTES`] of the file while it detects the encoding, whatever the size
//! of the file. A spreadsheet is a zip archive read from memory: the file (at most 256 MiB),
//! its shared strings and the decompression buffers stay in memory; XLSX cells are streamed
//! from the sheet's XML (no whole-sheet grid), XLS/XLSB/ODS sheets are loaded as a grid.
//!
//! # Bad input
//!
//! File-level problems ([`ImportError`]) stop the import: a binary file, an empty file, an
//! unknown encoding label, too many columns. Row-level problems ([`RowProblem`]) are attached
//! to the row they concern ([`RawRow::problems`]) and parsing goes on; [`RowProblem::is_fatal`]
//! says whether the row must be rejected. Undecodable bytes are decoded with U+FFFD
//! replacement and the row is flagged [`RowProblem::Undecodable`] (not fatal: the caller
//! decides whether to keep a row with replaced characters). A CSV cell starting with `=`,
//! `+`, `-` or `@` is imported as text as it is; [`escape_for_export`] makes it safe to
//! write back out (CSV injection).

pub mod csv;
pub mod encoding;
pub mod mapping;
pub mod model;
pub mod run;
pub mod sheet;
pub mod upload;

pub use self::csv::{CsvHeader, CsvOptions, CsvStream};
pub use self::encoding::{DetectedEncoding, EncodingSource, TextDecoder, detect};
pub use self::mapping::{
    ColumnMapping, FieldProblem, FieldProblemKind, TargetKind, map_row, propose_mapping,
    validate_mapping,
};
pub use self::sheet::{SheetRows, XlsxSheet};

use serde::{Deserialize, Serialize};

/// The most columns a header may have (and fields a data row may carry).
pub const MAX_COLUMNS: usize = 1_000;
/// The largest cell, in bytes of UTF-8.
pub const MAX_CELL_BYTES: usize = 64 * 1024;
/// The largest row, in bytes of UTF-8 (its fields together).
pub const MAX_ROW_BYTES: usize = 1024 * 1024;
/// The largest spreadsheet file (XLSX, XLS, XLSB, ODS); it is read from memory.
pub const MAX_SHEET_FILE_BYTES: usize = 256 * 1024 * 1024;
/// How many leading bytes of a text file are examined to detect its encoding and refuse
/// binary files.
pub const SNIFF_BYTES: usize = 64 * 1024;

/// A file-level import error: the file, its options or the mapping cannot be used. Each
/// names what is wrong; [`ImportError::field_path`] gives the request field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The declared encoding label is not one that is known.
    #[error("unknown encoding {label:?}")]
    UnknownEncoding {
        /// The label as given.
        label: String,
    },
    /// The encoding is known but cannot be used for imports.
    #[error("encoding {name} is not supported for imports")]
    UnsupportedEncoding {
        /// The encoding's name.
        name: String,
    },
    /// The declared delimiter cannot be used.
    #[error(
        "delimiter {delimiter:?} is not allowed (use one ASCII character other than a quote or a line break)"
    )]
    InvalidDelimiter {
        /// The delimiter as given.
        delimiter: char,
    },
    /// The file is not text (NUL bytes, control characters, or a known binary format).
    #[error("not a CSV file: {reason}")]
    NotText {
        /// Why it is taken for binary.
        reason: String,
    },
    /// The file has no header row (it is empty, or only blank lines or a BOM).
    #[error("the file is empty: no header row")]
    EmptyFile,
    /// The header has more columns than allowed.
    #[error("the header has {count} columns, more than the {max} allowed")]
    TooManyColumns {
        /// How many columns were found (a lower bound when counting stopped at the limit).
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The header row is longer than a row may be.
    #[error("the header row is longer than {max} bytes")]
    HeaderTooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// The file is larger than allowed for its format.
    #[error("the file has {size} bytes, more than the {max} allowed for a spreadsheet")]
    FileTooLarge {
        /// The file's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The spreadsheet cannot be read.
    #[error("the spreadsheet cannot be read: {message}")]
    Spreadsheet {
        /// The reader's error.
        message: String,
    },
    /// The named sheet does not exist.
    #[error("no sheet named {name:?} (sheets: {})", available.join(", "))]
    SheetNotFound {
        /// The requested sheet.
        name: String,
        /// The workbook's sheets.
        available: Vec<String>,
    },
    /// The workbook has no sheet.
    #[error("the workbook has no sheet")]
    NoSheet,
    /// Data was pushed after [`CsvStream::finish`] or after a file-level error.
    #[error("the stream is closed: {reason}")]
    StreamClosed {
        /// Why.
        reason: String,
    },
    /// A checkpoint to resume from does not hold together.
    #[error("cannot resume: {reason}")]
    BadCheckpoint {
        /// What is wrong.
        reason: String,
    },
    /// A mapping entry names a column that is not in the header.
    #[error("mapping[{index}] names column {column}, but the header has {columns} columns")]
    MappingColumnOutOfRange {
        /// The entry's position in the mapping.
        index: usize,
        /// The column it names.
        column: usize,
        /// How many columns the header has.
        columns: usize,
    },
    /// A mapping entry names a field the target does not have.
    #[error("mapping[{index}] names field {field:?}, unknown for {target}")]
    MappingUnknownField {
        /// The entry's position in the mapping.
        index: usize,
        /// The field as given.
        field: String,
        /// The target (`leads`, `contacts`, `accounts`).
        target: String,
    },
    /// A mapping entry maps a single-valued field that an earlier entry maps already.
    #[error(
        "mapping[{index}] maps field {field:?}, already mapped by mapping[{first}] (only lists may take several columns)"
    )]
    MappingDuplicateField {
        /// The entry's position in the mapping.
        index: usize,
        /// The field.
        field: String,
        /// The earlier entry.
        first: usize,
    },
    /// A mapping entry maps a column that an earlier entry maps already.
    #[error("mapping[{index}] maps column {column}, already mapped by mapping[{first}]")]
    MappingDuplicateColumn {
        /// The entry's position in the mapping.
        index: usize,
        /// The column.
        column: usize,
        /// The earlier entry.
        first: usize,
    },
}

impl ImportError {
    /// The request field the error concerns, for a gRPC BadRequest field violation:
    /// `encoding`, `delimiter`, `sheet`, `file`, `checkpoint`, or `mapping[3].column` /
    /// `mapping[3].field`.
    pub fn field_path(&self) -> String {
        match self {
            Self::UnknownEncoding { .. } | Self::UnsupportedEncoding { .. } => "encoding".into(),
            Self::InvalidDelimiter { .. } => "delimiter".into(),
            Self::SheetNotFound { .. } | Self::NoSheet => "sheet".into(),
            Self::BadCheckpoint { .. } => "checkpoint".into(),
            Self::NotText { .. }
            | Self::EmptyFile
            | Self::TooManyColumns { .. }
            | Self::HeaderTooLarge { .. }
            | Self::FileTooLarge { .. }
            | Self::Spreadsheet { .. }
            | Self::StreamClosed { .. } => "file".into(),
            Self::MappingColumnOutOfRange { index, .. }
            | Self::MappingDuplicateColumn { index, .. } => format!("mapping[{index}].column"),
            Self::MappingUnknownField { index, .. } | Self::MappingDuplicateField { index, .. } => {
                format!("mapping[{index}].field")
            }
        }
    }
}

/// Turns import errors into one INVALID_ARGUMENT error with a field violation each.
pub fn into_core(errors: Vec<ImportError>) -> crm_core::Error {
    crm_core::Error::invalid_fields(
        errors
            .into_iter()
            .map(|e| crm_core::FieldViolation::new(e.field_path(), e.to_string()))
            .collect(),
    )
}

/// What is wrong with one row. Columns are 0-based positions in the row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", tag = "kind")]
pub enum RowProblem {
    /// The row has fewer fields than the header (ragged row).
    #[error("has {found} fields, the header has {expected}")]
    TooFewFields {
        /// Fields in the header.
        expected: usize,
        /// Fields in the row.
        found: usize,
    },
    /// The row has more fields than the header (ragged row); the extra fields are kept.
    #[error("has {found} fields, the header has {expected}")]
    TooManyFields {
        /// Fields in the header.
        expected: usize,
        /// Fields in the row.
        found: usize,
    },
    /// A quote inside an unquoted field (`ab"c`); kept as a character.
    #[error("column {column}: stray quote in an unquoted field")]
    StrayQuote {
        /// The column.
        column: usize,
    },
    /// Text after the closing quote of a quoted field (`"ab"c`); kept, appended.
    #[error("column {column}: text after the closing quote")]
    TextAfterQuote {
        /// The column.
        column: usize,
    },
    /// A quoted field still open at the end of the file.
    #[error("column {column}: quoted field not closed at the end of the file")]
    UnterminatedQuote {
        /// The column.
        column: usize,
    },
    /// Bytes that are not valid in the file's encoding were replaced by U+FFFD.
    #[error("undecodable bytes replaced in columns {columns:?} (wrong or mixed encoding?)")]
    Undecodable {
        /// The columns holding a replacement character (empty when it could not be told).
        columns: Vec<usize>,
    },
    /// NUL characters, which cannot be stored, were removed from the cell.
    #[error("column {column}: NUL characters removed")]
    NulRemoved {
        /// The column.
        column: usize,
    },
    /// A cell larger than [`MAX_CELL_BYTES`].
    #[error("column {column}: cell of {bytes} bytes, more than {max}")]
    CellTooLarge {
        /// The column.
        column: usize,
        /// Its size in bytes of UTF-8.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A row larger than [`MAX_ROW_BYTES`] or with more than [`MAX_COLUMNS`] fields: its
    /// fields were dropped and parsing resumed at the next line.
    #[error("row larger than {max_bytes} bytes or {max_fields} fields: skipped to the next line")]
    RowTooLarge {
        /// The byte limit.
        max_bytes: usize,
        /// The field limit.
        max_fields: usize,
    },
    /// A spreadsheet cell holding an error value (`#DIV/0!`...); read as empty.
    #[error("column {column}: cell error {error}")]
    CellError {
        /// The column.
        column: usize,
        /// The error as the spreadsheet shows it.
        error: String,
    },
}

impl RowProblem {
    /// Whether the row must be rejected: its fields cannot be trusted (ragged, broken
    /// quoting, too large). Replaced characters, removed NULs and spreadsheet error cells
    /// are warnings.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Self::Undecodable { .. } | Self::NulRemoved { .. } | Self::CellError { .. }
        )
    }

    /// The column concerned, when there is one.
    pub fn column(&self) -> Option<usize> {
        match self {
            Self::StrayQuote { column }
            | Self::TextAfterQuote { column }
            | Self::UnterminatedQuote { column }
            | Self::NulRemoved { column }
            | Self::CellTooLarge { column, .. }
            | Self::CellError { column, .. } => Some(*column),
            Self::Undecodable { columns } => columns.first().copied(),
            _ => None,
        }
    }
}

/// One data row as read from the file, before mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRow {
    /// 1-based data row number (the header is not counted). For spreadsheets, blank rows
    /// are skipped but counted, so the sheet row is `number` + the header's sheet row.
    pub number: u64,
    /// Offset of the row's first byte in the original file (CSV), to resume from with
    /// [`CsvStream::resume_at`]; 0 for spreadsheets.
    pub byte_offset: u64,
    /// The cells, as read (not trimmed).
    pub fields: Vec<String>,
    /// What is wrong with the row; see [`RowProblem::is_fatal`].
    pub problems: Vec<RowProblem>,
}

impl RawRow {
    /// Whether one of the row's problems rejects it.
    pub fn is_rejected(&self) -> bool {
        self.problems.iter().any(RowProblem::is_fatal)
    }

    /// The cell of a column, empty when the row is short.
    pub fn cell(&self, column: usize) -> &str {
        self.fields.get(column).map_or("", String::as_str)
    }
}

/// A cell made safe to write into an exported CSV or spreadsheet (CSV injection): a cell
/// starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, so that
/// a spreadsheet does not run it as a formula. Quoting is the CSV writer's job
/// ([`export_csv_line`]).
pub fn escape_for_export(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_owned(),
    }
}

/// One line of a CSV report (cells escaped with [`escape_for_export`], quoted as needed,
/// CRLF-terminated), for the per-row import report.
pub fn export_csv_line<S: AsRef<str>>(cells: &[S]) -> Vec<u8> {
    let mut w = ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let escaped: Vec<String> = cells
        .iter()
        .map(|c| escape_for_export(c.as_ref()))
        .collect();
    // Writing to a Vec cannot fail; an error would only leave the line short.
    let _ = w.write_record(&escaped);
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn escape_for_export_prefixes_formula_starts() {
        assert_eq!(escape_for_export("=SUM(A1:A2)"), "'=SUM(A1:A2)");
        assert_eq!(escape_for_export("+8613800000000"), "'+8613800000000");
        assert_eq!(escape_for_export("-1"), "'-1");
        assert_eq!(escape_for_export("@cmd"), "'@cmd");
        assert_eq!(escape_for_export("\tx"), "'\tx");
        assert_eq!(escape_for_export("\rx"), "'\rx");
        assert_eq!(escape_for_export("Zhang San"), "Zhang San");
        assert_eq!(escape_for_export(""), "");
        assert_eq!(escape_for_export("a=b"), "a=b");
    }

    #[test]
    fn export_line_quotes_and_escapes() {
        let line = export_csv_line(&["a,b", "=1+1", "say \"hi\"", "张三"]);
        assert_eq!(
            String::from_utf8_lossy(&line),
            "\"a,b\",'=1+1,\"say \"\"hi\"\"\",张三\r\n"
        );
    }

    #[test]
    fn error_field_paths() {
        let e = ImportError::MappingColumnOutOfRange {
            index: 3,
            column: 9,
            columns: 4,
        };
        assert_eq!(e.field_path(), "mapping[3].column");
        assert!(e.to_string().contains("column 9"));
        let e = ImportError::MappingUnknownField {
            index: 1,
            field: "foo".into(),
            target: "leads".into(),
        };
        assert_eq!(e.field_path(), "mapping[1].field");
        assert_eq!(
            ImportError::UnknownEncoding {
                label: "klingon".into()
            }
            .field_path(),
            "encoding"
        );
        assert_eq!(ImportError::EmptyFile.field_path(), "file");
        let core = into_core(vec![ImportError::EmptyFile]);
        assert!(core.to_string().contains("empty"), "{core}");
    }
}
