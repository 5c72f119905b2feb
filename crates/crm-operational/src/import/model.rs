//! The stored side of imports: uploaded files (and their chunks), imports and their per-row
//! results, as crm-core resources with their schema.
//!
//! An uploaded file lives in the database, never in a gateway's memory: several stateless
//! replicas share one database, and an import job may run on any of them. A file is an
//! [`ImportUpload`] and a sequence of [`ImportUploadChunk`]s of at most
//! [`super::upload::DEFAULT_CHUNK_BYTES`] each.
//!
//! A chunk's `data` is a *bulk* field ([`FieldSpec::bulk`]): its audit record and outbox
//! event carry the size and SHA-256 of the data, not the data. crm-core's field kinds have
//! no bytes kind yet, so the bytes are stored base64-encoded in a text column (a third larger
//! than the file); soft deletes keep the rows until a purge exists.

use crm_core::error::{Error, Result};
use crm_core::registry::SchemaChange;
use crm_core::resource::{FieldSpec, Kind, Resource};
use crm_core::validate::{self, MAX_SHORT_CHARS, Violations};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

crm_core::named_enum! {
    /// Where an upload stands.
    pub enum UploadState {
        /// Chunks are being received.
        Uploading = "UPLOADING",
        /// Every chunk is stored; size and checksum are final.
        Ready = "READY",
        /// The upload broke off or was refused; it cannot be imported.
        Failed = "FAILED"
    }
}

/// An uploaded file (O1 import): its name, type, size and SHA-256, stored in chunks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportUpload {
    /// The file name as the client gave it.
    pub file_name: String,
    /// The MIME type as the client gave it (may be empty).
    pub content_type: String,
    /// Bytes stored (final once READY).
    pub size: i64,
    /// Lower-case hex SHA-256 of the whole file (set once READY).
    pub sha256: String,
    /// Chunks stored.
    pub chunk_count: i64,
    /// Where the upload stands.
    pub state: UploadState,
    /// Why it failed.
    pub error: String,
    /// Who uploaded it.
    pub owner: Option<Uuid>,
    /// Territory.
    pub territory: Option<Uuid>,
}

impl Resource for ImportUpload {
    const COLLECTION: &'static str = "importUploads";
    const TABLE: &'static str = "import_uploads";
    const OWNED: bool = true;
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("file_name", "file_name", Kind::Text).sort(),
        FieldSpec::new("content_type", "content_type", Kind::Text),
        FieldSpec::new("size", "size_bytes", Kind::Int),
        FieldSpec::new("sha256", "sha256", Kind::Text).filter(),
        FieldSpec::new("chunk_count", "chunk_count", Kind::Int),
        FieldSpec::new("state", "state", Kind::Enum(UploadState::NAMES)).filter(),
        FieldSpec::new("error", "error", Kind::Text),
        FieldSpec::new("owner", "owner_id", Kind::Ref("users")).filter(),
        FieldSpec::new("territory", "territory_id", Kind::Ref("territories")).filter(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text(
            "file_name",
            &self.file_name,
            MAX_SHORT_CHARS,
            true,
        )) {
            self.file_name = s;
        }
        if let Some(s) = v.check(validate::text(
            "content_type",
            &self.content_type,
            200,
            false,
        )) {
            self.content_type = s;
        }
        if self.size < 0 {
            v.add("size", "must not be negative");
        }
        if self.chunk_count < 0 {
            v.add("chunk_count", "must not be negative");
        }
        if !self.sha256.is_empty()
            && (self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            v.add("sha256", "must be 64 hex digits");
        }
        if let Some(s) = v.check(validate::text("error", &self.error, 2000, false)) {
            self.error = s;
        }
        v.into_result()
    }
}

/// One chunk of an uploaded file: `size` bytes from `offset`, base64 in `data` (see the
/// module documentation for why text). Written once, never changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportUploadChunk {
    /// The upload.
    pub upload: Option<Uuid>,
    /// 0-based position among the upload's chunks.
    pub seq: i64,
    /// Offset of the chunk's first byte in the file.
    pub offset: i64,
    /// Bytes in the chunk.
    pub size: i64,
    /// The bytes, standard base64.
    pub data: String,
}

impl Resource for ImportUploadChunk {
    const COLLECTION: &'static str = "importUploadChunks";
    const PERMISSION: &'static str = "importUploads";
    const TABLE: &'static str = "import_upload_chunks";
    const SCOPE_PARENT: Option<(&'static str, &'static str)> =
        Some(("upload_id", "import_uploads"));
    const DEFAULT_ORDER: &'static str = "seq";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("upload", "upload_id", Kind::Ref("importUploads"))
            .filter()
            .immutable(),
        FieldSpec::new("seq", "seq", Kind::Int).sort().immutable(),
        FieldSpec::new("offset", "byte_offset", Kind::Int).immutable(),
        FieldSpec::new("size", "size_bytes", Kind::Int).immutable(),
        FieldSpec::new("data", "data", Kind::Text)
            .immutable()
            .bulk(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if self.upload.is_none() {
            v.add("upload", "is required");
        }
        if self.seq < 0 {
            v.add("seq", "must not be negative");
        }
        if self.offset < 0 {
            v.add("offset", "must not be negative");
        }
        if self.size <= 0 || self.size > i64::try_from(super::upload::MAX_CHUNK_BYTES).unwrap_or(0)
        {
            v.add(
                "size",
                format!("must be 1 to {} bytes", super::upload::MAX_CHUNK_BYTES),
            );
        }
        v.into_result()
    }
}

crm_core::named_enum! {
    /// What an import creates.
    pub enum ImportTarget {
        /// Leads.
        Lead = "LEAD",
        /// Contacts.
        Contact = "CONTACT",
        /// Accounts.
        Account = "ACCOUNT"
    }
}

impl From<ImportTarget> for super::TargetKind {
    fn from(t: ImportTarget) -> Self {
        match t {
            ImportTarget::Lead => Self::Lead,
            ImportTarget::Contact => Self::Contact,
            ImportTarget::Account => Self::Account,
        }
    }
}

impl From<super::TargetKind> for ImportTarget {
    fn from(t: super::TargetKind) -> Self {
        match t {
            super::TargetKind::Lead => Self::Lead,
            super::TargetKind::Contact => Self::Contact,
            super::TargetKind::Account => Self::Account,
        }
    }
}

/// How an import reads its file; everything left out is detected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportOptions {
    /// Encoding label (`utf-8`, `gb18030`, `shift_jis`...); detected when empty.
    pub encoding: String,
    /// Delimiter of a CSV file; detected among `,` `;` tab `|` when unset.
    pub delimiter: Option<char>,
    /// The sheet of a workbook; the first when empty.
    pub sheet: String,
    /// Rows written per transaction (1..=1000); 0 means [`super::run::DEFAULT_BATCH_ROWS`].
    pub batch_size: u32,
}

/// Rows of an import by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportStats {
    /// Data rows read from the file.
    pub read: i64,
    /// Records created (flagged ones included).
    pub created: i64,
    /// Records created and flagged as likely duplicates.
    pub flagged: i64,
    /// Rows that gave no record.
    pub rejected: i64,
}

/// One problem of a row (or, for a FLAGGED row, one record it may duplicate).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RowIssue {
    /// The record field (`emails[0].address`) or `column[3]` concerned; empty for the row.
    pub field: String,
    /// What is wrong, for people.
    pub message: String,
    /// A stable code: `INVALID_ARGUMENT`, `ALREADY_EXISTS`, `TOO_FEW_FIELDS`, `DUPLICATE`...
    pub reason: String,
}

crm_core::named_enum! {
    /// Where an import stands.
    pub enum ImportState {
        /// Its job is queued or running.
        Running = "RUNNING",
        /// Every row of the file has its result.
        Succeeded = "SUCCEEDED",
        /// The file or the job failed; rows written so far keep their results.
        Failed = "FAILED",
        /// Cancelled: stopped at a batch boundary; rows written so far keep their results.
        Cancelled = "CANCELLED"
    }
}

/// An import of an upload into leads, contacts or accounts, run by the job in `operation`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Import {
    /// The file imported.
    pub upload: Option<Uuid>,
    /// What the rows become.
    pub target: ImportTarget,
    /// The column mapping.
    pub mapping: Vec<super::ColumnMapping>,
    /// How the file is read.
    pub options: ImportOptions,
    /// The file's column names, once read.
    pub header: Vec<String>,
    /// Where it stands.
    pub state: ImportState,
    /// The job running it (`operations/{id}`).
    pub operation: String,
    /// The caller's idempotency key: a start repeated with it answers the same import.
    pub request_id: String,
    /// Rows by outcome.
    pub stats: ImportStats,
    /// Why it failed.
    pub error: String,
    /// When it ended.
    pub finish_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Who started it.
    pub owner: Option<Uuid>,
    /// Territory.
    pub territory: Option<Uuid>,
}

impl Resource for Import {
    const COLLECTION: &'static str = "imports";
    const TABLE: &'static str = "imports";
    const OWNED: bool = true;
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("upload", "upload_id", Kind::Ref("importUploads"))
            .filter()
            .immutable(),
        FieldSpec::new("target", "target", Kind::Enum(ImportTarget::NAMES))
            .filter()
            .immutable(),
        FieldSpec::new("mapping", "mapping", Kind::Json).immutable(),
        FieldSpec::new("options", "options", Kind::Json).immutable(),
        FieldSpec::new("header", "header", Kind::Json),
        FieldSpec::new("state", "state", Kind::Enum(ImportState::NAMES)).filter(),
        FieldSpec::new("operation", "operation", Kind::Text),
        FieldSpec::new("request_id", "request_id", Kind::Text)
            .filter()
            .immutable(),
        FieldSpec::new("stats", "stats", Kind::Json),
        FieldSpec::new("error", "error", Kind::Text),
        FieldSpec::new("finish_time", "finish_time", Kind::Time).sort(),
        FieldSpec::new("owner", "owner_id", Kind::Ref("users")).filter(),
        FieldSpec::new("territory", "territory_id", Kind::Ref("territories")).filter(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if self.upload.is_none() {
            v.add("upload", "is required");
        }
        if let Some(s) = v.check(validate::text("request_id", &self.request_id, 100, false)) {
            self.request_id = s;
        }
        if let Some(s) = v.check(validate::text("error", &self.error, 2000, false)) {
            self.error = s;
        }
        if self.header.len() > super::MAX_COLUMNS {
            v.add("header", "has too many columns");
        }
        v.into_result()
    }
}

crm_core::named_enum! {
    /// What became of one row of an import.
    pub enum RowOutcome {
        /// The record was created.
        Created = "CREATED",
        /// The record was created and flagged as a likely duplicate of existing records.
        Flagged = "FLAGGED",
        /// No record: the row's problems say why.
        Rejected = "REJECTED"
    }
}

/// One data row's result in an import, written in the same transaction as its record: at
/// most one per import and row number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportRow {
    /// The import.
    pub import: Option<Uuid>,
    /// 1-based data row number (the header is not counted).
    pub row_number: i64,
    /// Offset of the row's first byte in the file (CSV; 0 for spreadsheets).
    pub offset: i64,
    /// What became of it.
    pub outcome: RowOutcome,
    /// The record created (`leads/{id}`), if any.
    pub record: String,
    /// What is wrong (REJECTED), or the likely duplicates (FLAGGED).
    pub problems: Vec<RowIssue>,
    /// The row's cells, kept for rejected rows so the report can be fixed and re-imported.
    pub cells: Vec<String>,
}

impl Resource for ImportRow {
    const COLLECTION: &'static str = "importRows";
    const PERMISSION: &'static str = "imports";
    const TABLE: &'static str = "import_rows";
    const SCOPE_PARENT: Option<(&'static str, &'static str)> = Some(("import_id", "imports"));
    const DEFAULT_ORDER: &'static str = "row_number";
    /// A row result is the import's output, written by its job: the import's own record
    /// is audited and evented, its rows are not one by one.
    const DERIVED: bool = true;
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("import", "import_id", Kind::Ref("imports"))
            .filter()
            .immutable(),
        FieldSpec::new("row_number", "row_number", Kind::Int)
            .sort()
            .immutable(),
        FieldSpec::new("offset", "byte_offset", Kind::Int).immutable(),
        FieldSpec::new("outcome", "outcome", Kind::Enum(RowOutcome::NAMES)).filter(),
        FieldSpec::new("record", "record", Kind::Text),
        FieldSpec::new("problems", "problems", Kind::Json),
        FieldSpec::new("cells", "cells", Kind::Json),
    ];

    fn validate(&mut self) -> Result<()> {
        if self.import.is_none() {
            return Err(Error::invalid("import", "is required"));
        }
        if self.row_number < 1 {
            return Err(Error::invalid("row_number", "must be at least 1"));
        }
        Ok(())
    }
}

/// The tables of uploads, chunks, imports and import rows.
pub const SCHEMA: SchemaChange = SchemaChange::new(
    "m20261201_100001_imports",
    &[
        crm_core::resource_table!(
            "import_uploads",
            "file_name TEXT NOT NULL, content_type TEXT NOT NULL, size_bytes BIGINT NOT NULL, \
             sha256 TEXT NOT NULL, chunk_count BIGINT NOT NULL, state TEXT NOT NULL, \
             error TEXT NOT NULL, owner_id UUID NULL, territory_id UUID NULL"
        ),
        "CREATE INDEX import_uploads_owner ON import_uploads (tenant_id, owner_id, id)",
        crm_core::resource_table!(
            "import_upload_chunks",
            "upload_id UUID NULL, seq BIGINT NOT NULL, byte_offset BIGINT NOT NULL, \
             size_bytes BIGINT NOT NULL, data TEXT NOT NULL"
        ),
        "CREATE UNIQUE INDEX import_upload_chunks_seq ON import_upload_chunks (tenant_id, upload_id, seq)",
        "CREATE INDEX import_upload_chunks_offset ON import_upload_chunks (tenant_id, upload_id, byte_offset)",
        crm_core::resource_table!(
            "imports",
            "upload_id UUID NULL, target TEXT NOT NULL, mapping TEXT NOT NULL, \
             options TEXT NOT NULL, header TEXT NOT NULL, state TEXT NOT NULL, \
             operation TEXT NOT NULL, request_id TEXT NOT NULL, stats TEXT NOT NULL, \
             error TEXT NOT NULL, finish_time TIMESTAMPTZ NULL, owner_id UUID NULL, \
             territory_id UUID NULL"
        ),
        "CREATE INDEX imports_upload ON imports (tenant_id, upload_id, state, id)",
        "CREATE INDEX imports_owner ON imports (tenant_id, owner_id, id)",
        crm_core::resource_table!(
            "import_rows",
            "import_id UUID NULL, row_number BIGINT NOT NULL, byte_offset BIGINT NOT NULL, \
             outcome TEXT NOT NULL, record TEXT NOT NULL, problems TEXT NOT NULL, \
             cells TEXT NOT NULL"
        ),
        "CREATE UNIQUE INDEX import_rows_number ON import_rows (tenant_id, import_id, row_number)",
        "CREATE INDEX import_rows_outcome ON import_rows (tenant_id, import_id, outcome, row_number)",
    ],
);
