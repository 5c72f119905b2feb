//! Imports on crm-core's engine: previews, imports run as jobs (`crm.operational.import`,
//! served as long-running operations), their per-row results and the CSV report.
//!
//! **Batches.** The job streams the upload's chunks in order through [`CsvStream`] (a
//! spreadsheet is read whole, at most [`MAX_SHEET_FILE_BYTES`]) and writes the rows in
//! batches of [`ImportOptions::batch_size`] (default [`DEFAULT_BATCH_ROWS`]). Each batch is
//! ONE transaction ([`Tx`]) holding the records it creates (`Tx::create`: validation, field
//! rules, audit, outbox, the lead hooks: duplicates, grading, routing) and one
//! [`ImportRow`] per row (unique per import and row number; inserted together, derived
//! records without an audit record or event each). Contacts and accounts are written
//! [`BATCHES_IN_FLIGHT`] batches at a time; leads one batch after another, so each lead is
//! checked for duplicates against every earlier row of the file.
//!
//! **Bad rows.** Every row is checked before the batch is written: the row's own problems
//! (ragged, broken quoting), the mapping (numbers, dates), custom field types, and the
//! resource's `validate` on the decoded record; such rows are REJECTED without reaching the
//! engine. A row the engine still refuses (a duplicate under a BLOCK policy, a custom field
//! rule) rolls its batch back, and the batch is written again row by row, one transaction
//! per row, the refused row REJECTED with the engine's reason.
//!
//! **Resumption.** A row's [`ImportRow`] is committed with its record. Batches finish in
//! order ([`futures::stream::FuturesOrdered`]); once every batch up to a row has committed,
//! the job saves that row's number and byte offset as its checkpoint ([`JobContext::save`],
//! a statement of its own after the commits, so it never runs ahead of the rows). A new
//! attempt (a crash, `kill -9`, a lost lease) restarts the CSV parser at the checkpoint's
//! byte offset ([`CsvStream::resume_at`], the header and encoding from the job's payload),
//! skips rows up to its number and the rows after it that have a result (written by batches
//! then in flight), so no row is written twice and none is lost.
//!
//! **Concurrency.** At most one import of an upload runs at a time: a second start is
//! FAILED_PRECONDITION `IMPORT_RUNNING` (starts take the upload's counter lock, so two at
//! once cannot both pass). A start repeated with the same `request_id` answers the first
//! import instead.

use super::csv::{CsvHeader, CsvOptions, CsvStream};
use super::mapping::{
    ColumnMapping, CustomFieldHint, FieldProblem, TargetKind, map_row, propose_mapping_with_custom,
    typed_custom_value, validate_mapping,
};
use super::model::{
    Import, ImportOptions, ImportRow, ImportState, ImportStats, ImportUpload, RowIssue, RowOutcome,
};
use super::sheet::XlsxSheet;
use super::upload::{self, ChunkReader};
use super::{ImportError, MAX_SHEET_FILE_BYTES, RawRow, RowProblem, export_csv_line, into_core};
use crate::lead::Lead;
use crm_core::access::Action;
use crm_core::error::{Error, ErrorKind, Result};
use crm_core::jobs::rules::Interrupt;
use crm_core::jobs::{self, JobContext, JobError, JobOutcome, Progress};
use crm_core::model::custom_field::{self, CustomFieldDefinition};
use crm_core::model::{Account, Contact};
use crm_core::resource::{Collection, Page, Record, Resource};
use crm_core::service::{Ctx, ListParams, Tx};
use futures::StreamExt;
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, Condition, Expr, ExprTrait, Func, Query};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The job kind of an import.
pub const IMPORT_JOB: &str = "crm.operational.import";
/// Batches of contacts or accounts written at once, each in its own transaction. Leads are
/// written one batch after another: each new lead is checked for duplicates against every
/// lead written before it, also those of the file's earlier rows, which a batch still in
/// flight would hide.
const BATCHES_IN_FLIGHT: usize = 3;
/// Rows per transaction unless the import says otherwise.
pub const DEFAULT_BATCH_ROWS: u32 = 200;
/// The most rows per transaction.
pub const MAX_BATCH_ROWS: u32 = 1000;
/// The most rows a preview returns.
pub const MAX_PREVIEW_ROWS: usize = 100;
/// Rows a preview returns by default.
pub const DEFAULT_PREVIEW_ROWS: usize = 20;
/// How much of a CSV file a preview (and a start, for the header) reads at most.
const PREVIEW_READ_BYTES: u64 = 8 * 1024 * 1024;
/// Sample rows the proposed mapping looks at.
const SAMPLE_ROWS: usize = 50;

/// The file's format, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileFormat {
    /// Delimited text.
    Csv,
    /// A workbook (XLSX, XLS, XLSB, ODS).
    Spreadsheet,
}

fn format_of(head: &[u8]) -> FileFormat {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]) {
        FileFormat::Spreadsheet
    } else {
        FileFormat::Csv
    }
}

fn csv_options(o: &ImportOptions) -> CsvOptions {
    CsvOptions {
        encoding: (!o.encoding.trim().is_empty()).then(|| o.encoding.trim().to_owned()),
        delimiter: o.delimiter,
        region_hint: None,
    }
}

fn file_error(e: ImportError) -> Error {
    into_core(vec![e])
}

/// The start of a file as read: its header and first rows.
#[derive(Debug, Clone, Default)]
struct Head {
    format: Option<FileFormat>,
    csv_header: Option<CsvHeader>,
    columns: Vec<String>,
    encoding: String,
    delimiter: Option<char>,
    sheet: String,
    sheets: Vec<String>,
    rows: Vec<RawRow>,
}

/// Reads the header and up to `rows` data rows.
async fn read_head(
    ctx: &Ctx,
    upload: &Record<ImportUpload>,
    options: &ImportOptions,
    rows: usize,
) -> Result<Head> {
    let conn = &ctx.db.conn;
    let mut reader = ChunkReader::new(ctx.tenant(), upload.meta.id);
    let first = reader.next(conn).await?;
    let head_bytes = first
        .as_ref()
        .map(|c| c.bytes.as_slice())
        .unwrap_or_default();
    if format_of(head_bytes) == FileFormat::Spreadsheet {
        let bytes = upload::read_all(conn, upload, ctx.tenant(), MAX_SHEET_FILE_BYTES).await?;
        let options = options.clone();
        // Parsing a workbook is CPU work: off the async threads.
        return tokio::task::spawn_blocking(move || sheet_head(&bytes, &options, rows))
            .await
            .map_err(|e| Error::internal(format!("reading the spreadsheet failed: {e}")))?;
    }
    let mut stream = CsvStream::new(csv_options(options)).map_err(file_error)?;
    let mut out = Vec::new();
    let mut read = 0u64;
    let mut next = first;
    loop {
        match next {
            Some(c) => {
                read += c.bytes.len() as u64;
                out.extend(stream.push(&c.bytes).map_err(file_error)?);
            }
            None => {
                out.extend(stream.finish().map_err(file_error)?);
                break;
            }
        }
        if (stream.header().is_some() && out.len() >= rows) || read >= PREVIEW_READ_BYTES {
            break;
        }
        next = reader.next(conn).await?;
    }
    let Some(header) = stream.header().cloned() else {
        // Read as far as allowed without a complete header row.
        return Err(file_error(ImportError::HeaderTooLarge {
            max: super::MAX_ROW_BYTES,
        }));
    };
    out.truncate(rows);
    Ok(Head {
        format: Some(FileFormat::Csv),
        columns: header.columns.clone(),
        encoding: header.encoding.clone(),
        delimiter: Some(header.delimiter),
        csv_header: Some(header),
        rows: out,
        ..Default::default()
    })
}

fn sheet_head(bytes: &[u8], options: &ImportOptions, rows: usize) -> Result<Head> {
    let wanted = options.sheet.trim();
    let mut sheet =
        XlsxSheet::open(bytes, (!wanted.is_empty()).then_some(wanted)).map_err(file_error)?;
    let name = sheet.name().to_owned();
    let sheets = sheet.sheet_names().to_vec();
    let mut it = sheet.rows().map_err(file_error)?;
    let columns = it.header().to_vec();
    let mut out = Vec::new();
    for r in it.by_ref().take(rows) {
        out.push(r.map_err(file_error)?);
    }
    Ok(Head {
        format: Some(FileFormat::Spreadsheet),
        columns,
        sheet: name,
        sheets,
        rows: out,
        ..Default::default()
    })
}

/// Every data row of a workbook's sheet (a spreadsheet is read from memory).
fn sheet_rows(bytes: &[u8], options: &ImportOptions) -> Result<Vec<RawRow>> {
    let wanted = options.sheet.trim();
    let mut sheet =
        XlsxSheet::open(bytes, (!wanted.is_empty()).then_some(wanted)).map_err(file_error)?;
    let it = sheet.rows().map_err(file_error)?;
    it.map(|r| r.map_err(file_error)).collect()
}

/// The tenant's custom fields of the target's collection.
async fn definitions<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    target: TargetKind,
) -> Result<Vec<CustomFieldDefinition>> {
    custom_field::definitions(conn, tenant, target.collection()).await
}

fn hints(defs: &[CustomFieldDefinition]) -> Vec<CustomFieldHint> {
    defs.iter()
        .map(|d| CustomFieldHint {
            key: d.key.clone(),
            display_name: d.display_name.clone(),
        })
        .collect()
}

/// What a preview asks.
#[derive(Debug, Clone, Default)]
pub struct PreviewRequest {
    /// The upload.
    pub upload: Uuid,
    /// What the rows would become.
    pub target: Option<TargetKind>,
    /// How to read the file.
    pub options: ImportOptions,
    /// Rows to return (1..=[`MAX_PREVIEW_ROWS`]; 0 for [`DEFAULT_PREVIEW_ROWS`]).
    pub rows: usize,
}

/// A problem a preview found in one of its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewProblem {
    /// The data row.
    pub row: u64,
    /// The problem.
    pub issue: RowIssue,
    /// Whether the row would be rejected.
    pub rejects: bool,
}

/// The start of a file as an import would read it.
#[derive(Debug, Clone)]
pub struct Preview {
    /// CSV or spreadsheet.
    pub format: FileFormat,
    /// The encoding detected or declared (CSV).
    pub encoding: String,
    /// The delimiter detected or declared (CSV).
    pub delimiter: Option<char>,
    /// The sheet read (spreadsheets).
    pub sheet: String,
    /// The workbook's sheets.
    pub sheets: Vec<String>,
    /// Column names.
    pub header: Vec<String>,
    /// The first rows.
    pub rows: Vec<RawRow>,
    /// The proposed mapping (with the tenant's custom fields).
    pub mapping: Vec<ColumnMapping>,
    /// What is wrong with the rows shown, under the proposed mapping.
    pub problems: Vec<PreviewProblem>,
}

/// Reads the start of an upload: encoding, delimiter, header, the first rows, the proposed
/// mapping and the problems the rows shown would have. Needs read access to the upload.
pub async fn preview(ctx: &Ctx, req: PreviewRequest) -> Result<Preview> {
    let target = req.target.unwrap_or(TargetKind::Lead);
    let rows = match req.rows {
        0 => DEFAULT_PREVIEW_ROWS,
        n if n > MAX_PREVIEW_ROWS => {
            return Err(Error::invalid(
                "rows",
                format!("must be at most {MAX_PREVIEW_ROWS}"),
            ));
        }
        n => n,
    };
    check_options(&req.options)?;
    let upload = upload::ready_upload(ctx, req.upload, "upload").await?;
    let head = read_head(ctx, &upload, &req.options, rows.max(SAMPLE_ROWS)).await?;
    let defs = definitions(&ctx.db.conn, ctx.tenant(), target).await?;
    let mapping = propose_mapping_with_custom(target, &head.columns, &head.rows, &hints(&defs));
    let mut shown = head.rows;
    shown.truncate(rows);
    let mut problems = Vec::new();
    for r in &shown {
        let (rejects, issues) = match plan_row(target, &mapping, &defs, r) {
            Ok((_, warnings)) => (false, warnings),
            Err(issues) => (true, issues),
        };
        problems.extend(issues.into_iter().map(|issue| PreviewProblem {
            row: r.number,
            issue,
            rejects,
        }));
    }
    Ok(Preview {
        format: head.format.unwrap_or(FileFormat::Csv),
        encoding: head.encoding,
        delimiter: head.delimiter,
        sheet: head.sheet,
        sheets: head.sheets,
        header: head.columns,
        rows: shown,
        mapping,
        problems,
    })
}

fn check_options(o: &ImportOptions) -> Result<()> {
    if o.batch_size > MAX_BATCH_ROWS {
        return Err(Error::invalid(
            "options.batch_size",
            format!("must be at most {MAX_BATCH_ROWS}"),
        ));
    }
    if !o.encoding.trim().is_empty() {
        super::encoding::resolve_label(o.encoding.trim())
            .map_err(|e| file_error(e).in_field("options"))?;
    }
    if o.encoding.chars().count() > 100 || o.sheet.chars().count() > 300 {
        return Err(Error::invalid("options", "encoding or sheet name too long"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rows -> records

fn problem_reason<T: Serialize>(p: &T) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.get("kind").and_then(Json::as_str).map(str::to_owned))
        .unwrap_or_else(|| "INVALID".to_owned())
}

fn row_issue(p: &RowProblem) -> RowIssue {
    RowIssue {
        field: p
            .column()
            .map(|c| format!("column[{c}]"))
            .unwrap_or_default(),
        message: p.to_string(),
        reason: problem_reason(p),
    }
}

fn field_issue(p: &FieldProblem) -> RowIssue {
    RowIssue {
        field: p
            .field
            .clone()
            .or_else(|| p.column.map(|c| format!("column[{c}]")))
            .unwrap_or_default(),
        message: p.to_string(),
        reason: problem_reason(&p.kind),
    }
}

/// The issues of an engine error: one per field violation, else its message.
fn error_issues(e: &Error) -> Vec<RowIssue> {
    let reason = if e.reason.is_empty() {
        format!("{:?}", e.kind)
    } else {
        e.reason.to_owned()
    };
    if e.violations.is_empty() {
        return vec![RowIssue {
            field: String::new(),
            message: e.message.clone(),
            reason,
        }];
    }
    e.violations
        .iter()
        .map(|v| RowIssue {
            field: v.field.clone(),
            message: v.description.clone(),
            reason: reason.clone(),
        })
        .collect()
}

/// A row planned: the record's JSON object and the row's warnings (replaced characters...),
/// or why the row is rejected.
type Plan = std::result::Result<(Map<String, Json>, Vec<RowIssue>), Vec<RowIssue>>;

/// A mapped record, or why the row is rejected.
fn plan_row(
    target: TargetKind,
    mapping: &[ColumnMapping],
    defs: &[CustomFieldDefinition],
    row: &RawRow,
) -> Plan {
    let row_issues: Vec<RowIssue> = row.problems.iter().map(row_issue).collect();
    if row.is_rejected() {
        return Err(row_issues);
    }
    let mut obj = match map_row(target, mapping, row) {
        Ok(o) => o,
        Err(ps) => {
            let mut all = row_issues;
            all.extend(ps.iter().map(field_issue));
            return Err(all);
        }
    };
    let mut issues = Vec::new();
    if let Some(Json::Object(custom)) = obj.get_mut("custom_fields") {
        for (key, value) in custom.iter_mut() {
            let text = value
                .get("text")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned();
            match defs.iter().find(|d| &d.key == key) {
                None => issues.push(RowIssue {
                    field: format!("custom_fields.{key}"),
                    message: "no such custom field".into(),
                    reason: "UNKNOWN_FIELD".into(),
                }),
                Some(d) => match typed_custom_value(&d.value_type, &text) {
                    Ok(v) => *value = v,
                    Err(kind) => issues.push(RowIssue {
                        field: format!("custom_fields.{key}"),
                        message: kind.to_string(),
                        reason: problem_reason(&kind),
                    }),
                },
            }
        }
    }
    if issues.is_empty()
        && let Err(e) = custom_field::validate_values(defs, obj.get("custom_fields"))
    {
        issues.extend(error_issues(&e));
    }
    if target == TargetKind::Lead && !obj.contains_key("source") {
        obj.insert("source".into(), Json::String("import".into()));
    }
    if issues.is_empty()
        && let Err(e) = prevalidate(target, &obj)
    {
        issues.extend(error_issues(&e));
    }
    if issues.is_empty() {
        Ok((obj, row_issues))
    } else {
        let mut all = row_issues;
        all.extend(issues);
        Err(all)
    }
}

fn decode<R: Resource>(obj: &Map<String, Json>) -> Result<R> {
    serde_json::from_value(Json::Object(obj.clone()))
        .map_err(|e| Error::invalid("", format!("the mapped row is not a record: {e}")))
}

/// The resource's own validation of the decoded record.
fn prevalidate(target: TargetKind, obj: &Map<String, Json>) -> Result<()> {
    match target {
        TargetKind::Lead => decode::<Lead>(obj)?.validate(),
        TargetKind::Contact => decode::<Contact>(obj)?.validate(),
        TargetKind::Account => decode::<Account>(obj)?.validate(),
    }
}

/// Errors that concern the row (it is REJECTED); any other fails the batch (and the attempt).
fn is_row_error(e: &Error) -> bool {
    matches!(
        e.kind,
        ErrorKind::InvalidArgument
            | ErrorKind::NotFound
            | ErrorKind::AlreadyExists
            | ErrorKind::FailedPrecondition
            | ErrorKind::PermissionDenied
    )
}

/// Creates the record of a row; returns its name and, for a lead matching existing records,
/// the duplicates it was flagged with.
async fn create_record(
    tx: &Tx<'_>,
    target: TargetKind,
    obj: &Map<String, Json>,
) -> Result<(String, Vec<RowIssue>)> {
    match target {
        TargetKind::Lead => {
            let rec = tx.create(decode::<Lead>(obj)?).await?;
            let d = &rec.data.duplicates;
            let flagged = if d.status == "MATCH" {
                d.candidates
                    .iter()
                    .filter(|c| c.decision == "MATCH")
                    .map(|c| RowIssue {
                        field: String::new(),
                        message: format!("likely duplicate of {} (score {:.2})", c.record, c.score),
                        reason: "DUPLICATE".into(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Ok((format!("leads/{}", rec.meta.id), flagged))
        }
        TargetKind::Contact => {
            let rec = tx.create(decode::<Contact>(obj)?).await?;
            Ok((format!("contacts/{}", rec.meta.id), Vec::new()))
        }
        TargetKind::Account => {
            let rec = tx.create(decode::<Account>(obj)?).await?;
            Ok((format!("accounts/{}", rec.meta.id), Vec::new()))
        }
    }
}

/// Writes batches of one import as its creator.
struct Writer<'a> {
    ctx: &'a Ctx,
    import: Uuid,
    target: TargetKind,
    mapping: &'a [ColumnMapping],
    defs: &'a [CustomFieldDefinition],
}

fn result_row(import: Uuid, row: &RawRow, outcome: RowOutcome) -> ImportRow {
    ImportRow {
        import: Some(import),
        row_number: i64::try_from(row.number).unwrap_or(i64::MAX),
        offset: i64::try_from(row.byte_offset).unwrap_or(i64::MAX),
        outcome,
        ..Default::default()
    }
}

impl Writer<'_> {
    fn rejected(&self, row: &RawRow, issues: Vec<RowIssue>) -> ImportRow {
        ImportRow {
            problems: issues,
            cells: row.fields.clone(),
            ..result_row(self.import, row, RowOutcome::Rejected)
        }
    }

    fn created(
        &self,
        row: &RawRow,
        record: String,
        warnings: &[RowIssue],
        flagged: Vec<RowIssue>,
    ) -> ImportRow {
        let outcome = if flagged.is_empty() {
            RowOutcome::Created
        } else {
            RowOutcome::Flagged
        };
        let mut problems = warnings.to_vec();
        problems.extend(flagged);
        ImportRow {
            record,
            problems,
            ..result_row(self.import, row, outcome)
        }
    }

    /// Writes a batch: one transaction, or one per row when the engine refuses a row;
    /// returns the batch's counts.
    async fn write(&self, rows: &[RawRow]) -> Result<ImportStats> {
        let plans: Vec<Plan> = rows
            .iter()
            .map(|r| plan_row(self.target, self.mapping, self.defs, r))
            .collect();
        let mut batch = ImportStats::default();
        if !self.write_together(rows, &plans, &mut batch).await? {
            batch = ImportStats::default();
            self.write_one_by_one(rows, &plans, &mut batch).await?;
        }
        Ok(batch)
    }

    /// The batch in one transaction, its row results inserted together; false (nothing
    /// written) when the engine refused a row.
    async fn write_together(
        &self,
        rows: &[RawRow],
        plans: &[Plan],
        stats: &mut ImportStats,
    ) -> Result<bool> {
        let tx = self.ctx.begin().await?;
        let mut results = Vec::with_capacity(rows.len());
        for (row, plan) in rows.iter().zip(plans) {
            let result = match plan {
                Ok((obj, warnings)) => match create_record(&tx, self.target, obj).await {
                    Ok((name, flagged)) => self.created(row, name, warnings, flagged),
                    Err(e) if is_row_error(&e) => return Ok(false),
                    Err(e) => return Err(e),
                },
                Err(issues) => self.rejected(row, issues.clone()),
            };
            count(stats, result.outcome);
            results.push((crm_core::ids::new_id(), result));
        }
        tx.create_many(results).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn write_one_by_one(
        &self,
        rows: &[RawRow],
        plans: &[Plan],
        stats: &mut ImportStats,
    ) -> Result<()> {
        for (row, plan) in rows.iter().zip(plans) {
            let result = match plan {
                Ok((obj, warnings)) => {
                    let tx = self.ctx.begin().await?;
                    match create_record(&tx, self.target, obj).await {
                        Ok((name, flagged)) => {
                            let r = self.created(row, name, warnings, flagged);
                            count(stats, r.outcome);
                            tx.create(r).await?;
                            tx.commit().await?;
                            continue;
                        }
                        Err(e) if is_row_error(&e) => {
                            drop(tx);
                            let mut issues = warnings.clone();
                            issues.extend(error_issues(&e));
                            self.rejected(row, issues)
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(issues) => self.rejected(row, issues.clone()),
            };
            count(stats, result.outcome);
            let tx = self.ctx.begin().await?;
            tx.create(result).await?;
            tx.commit().await?;
        }
        Ok(())
    }
}

fn count(stats: &mut ImportStats, outcome: RowOutcome) {
    stats.read += 1;
    match outcome {
        RowOutcome::Created => stats.created += 1,
        RowOutcome::Flagged => {
            stats.created += 1;
            stats.flagged += 1;
        }
        RowOutcome::Rejected => stats.rejected += 1,
    }
}

fn progress_of(stats: &ImportStats) -> Progress {
    let mut counts = BTreeMap::new();
    counts.insert("read".to_owned(), stats.read);
    counts.insert("created".to_owned(), stats.created);
    counts.insert("flagged".to_owned(), stats.flagged);
    counts.insert("rejected".to_owned(), stats.rejected);
    Progress {
        done: stats.read,
        total: 0,
        counts,
    }
}

// ---------------------------------------------------------------------------------------
// Starting an import

/// What a caller asks to import.
#[derive(Debug, Clone)]
pub struct StartImport {
    /// The upload.
    pub upload: Uuid,
    /// What the rows become.
    pub target: TargetKind,
    /// The mapping; empty to use the proposed one.
    pub mapping: Vec<MappingEntry>,
    /// How to read the file.
    pub options: ImportOptions,
    /// Idempotency key: a start repeated with it answers the same import.
    pub request_id: String,
}

/// One entry of a requested mapping: a column, by position or by header name, and the
/// field it goes to (none: left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingEntry {
    /// The column, 0-based (used when `header` is empty).
    pub column: usize,
    /// The column's header name; when set, it names the column.
    pub header: String,
    /// The target field, empty to leave the column out.
    pub field: String,
}

/// An import started, or the one a repeated request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The import (`imports/{id}`).
    pub import: Uuid,
    /// Its job (`operations/{id}`).
    pub job: Uuid,
    /// The request repeated an earlier one (same `request_id`).
    pub repeated: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    import: Uuid,
    creator: Uuid,
    roles: Vec<String>,
    format: FileFormat,
    /// The CSV header, encoding and delimiter, to resume mid-file.
    header: Option<CsvHeader>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    /// The last row written.
    row: i64,
    /// Its byte offset.
    offset: i64,
}

fn ops_id(operation: &str) -> Option<Uuid> {
    operation
        .strip_prefix("operations/")
        .and_then(|s| Uuid::try_parse(s).ok())
}

/// Resolves a requested mapping against the header; every error names its entry.
fn resolve_mapping(
    target: TargetKind,
    header: &[String],
    entries: &[MappingEntry],
) -> Result<Vec<ColumnMapping>> {
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let name = e.header.trim();
        let column = if name.is_empty() {
            e.column
        } else {
            match header.iter().position(|h| h == name).or_else(|| {
                header
                    .iter()
                    .position(|h| h.to_lowercase() == name.to_lowercase())
            }) {
                Some(c) => c,
                None => {
                    errors.push(crm_core::FieldViolation::new(
                        format!("mapping[{i}].column"),
                        format!("the file has no column named {name:?}"),
                    ));
                    continue;
                }
            }
        };
        let field = e.field.trim();
        out.push(ColumnMapping {
            column,
            header: header.get(column).cloned().unwrap_or_default(),
            field: (!field.is_empty()).then(|| field.to_owned()),
            confidence: 1.0,
            reason: "given".into(),
        });
    }
    if !errors.is_empty() {
        return Err(Error::invalid_fields(errors));
    }
    if let Err(es) = validate_mapping(target, header, &out) {
        return Err(into_core(es));
    }
    Ok(out)
}

/// Starts an import of a READY upload as a job, or answers the import an earlier start with
/// the same `request_id` made. Needs read access to the upload, `create` on `imports` and on
/// the target collection. The header is read and the mapping checked before anything is
/// written: a mapping naming a column the file does not have is INVALID_ARGUMENT on
/// `mapping[i].column`.
pub async fn start(ctx: &Ctx, req: StartImport) -> Result<Started> {
    let target_collection = match req.target {
        TargetKind::Lead => Collection::of::<Lead>(),
        TargetKind::Contact => Collection::of::<Contact>(),
        TargetKind::Account => Collection::of::<Account>(),
    };
    ctx.scopes_of(&target_collection, Action::Create)?;
    ctx.scopes_of(&Collection::of::<Import>(), Action::Create)?;
    check_options(&req.options)?;
    let request_id = req.request_id.trim().to_owned();
    if request_id.chars().count() > 100 {
        return Err(Error::invalid(
            "request_id",
            "must be at most 100 characters",
        ));
    }
    let upload = upload::ready_upload(ctx, req.upload, "upload").await?;
    let head = read_head(ctx, &upload, &req.options, SAMPLE_ROWS).await?;
    let mapping = if req.mapping.is_empty() {
        let defs = definitions(&ctx.db.conn, ctx.tenant(), req.target).await?;
        propose_mapping_with_custom(req.target, &head.columns, &head.rows, &hints(&defs))
    } else {
        resolve_mapping(req.target, &head.columns, &req.mapping)?
    };
    if !mapping.iter().any(|m| m.field.is_some()) {
        return Err(Error::invalid(
            "mapping",
            "maps no column to a field: nothing would be imported",
        ));
    }
    let payload = Payload {
        import: crm_core::ids::new_id(),
        creator: ctx.principal.user,
        roles: ctx.principal.roles.clone(),
        format: head.format.unwrap_or(FileFormat::Csv),
        header: head.csv_header.clone(),
    };
    let import = Import {
        upload: Some(req.upload),
        target: req.target.into(),
        mapping,
        options: req.options.clone(),
        header: head.columns.clone(),
        state: ImportState::Running,
        request_id,
        ..Default::default()
    };
    let started = try_start(ctx, payload, import).await?;
    jobs::wake();
    Ok(started)
}

async fn try_start(ctx: &Ctx, payload: Payload, mut import: Import) -> Result<Started> {
    let upload = import.upload.unwrap_or_default();
    let now = ctx.clock.now();
    let tx = ctx.begin().await?;
    // Starts of the same upload take turns, so two at once cannot both find none running.
    tx.lock_counter(&format!("import-upload:{upload}")).await?;
    if !import.request_id.is_empty() {
        let same = tx
            .find::<Import>(
                Condition::all()
                    .add(Expr::col("upload_id").eq(upload))
                    .add(Expr::col("request_id").eq(import.request_id.as_str())),
                1,
            )
            .await?;
        if let Some(r) = same.into_iter().next() {
            let job = ops_id(&r.data.operation)
                .ok_or_else(|| Error::internal("an import without its operation"))?;
            return Ok(Started {
                import: r.meta.id,
                job,
                repeated: true,
            });
        }
    }
    let running = tx
        .find::<Import>(
            Condition::all()
                .add(Expr::col("upload_id").eq(upload))
                .add(Expr::col("state").eq(ImportState::Running.as_str())),
            10,
        )
        .await?;
    for r in running {
        let job = match ops_id(&r.data.operation) {
            Some(job) => jobs::get(tx.conn(), ctx.tenant(), job).await?,
            None => None,
        };
        if job.as_ref().is_some_and(|j| !j.state.is_done()) {
            return Err(Error::failed_precondition(
                "IMPORT_RUNNING",
                format!(
                    "imports/{} of this upload is still running: wait for it or cancel {}",
                    r.meta.id, r.data.operation
                ),
            )
            .with("import", format!("imports/{}", r.meta.id))
            .with("operation", r.data.operation.clone()));
        }
        // Its job ended without finishing it (cancelled before it ran, or a crash between
        // the two): record how it ended.
        let cancelled = job.is_some_and(|j| j.state == jobs::JobState::Cancelled);
        tx.update(
            r.meta.id,
            Import {
                state: if cancelled {
                    ImportState::Cancelled
                } else {
                    ImportState::Failed
                },
                error: if cancelled {
                    "cancelled before it ran".into()
                } else {
                    "the import's job ended before the import was finished".into()
                },
                finish_time: Some(now),
                ..Default::default()
            },
            &["state".into(), "error".into(), "finish_time".into()],
            &r.meta.etag(),
        )
        .await?;
    }
    let id = payload.import;
    let payload_json =
        serde_json::to_value(&payload).map_err(|e| Error::internal(e.to_string()))?;
    let job = jobs::schedule(
        tx.conn(),
        ctx.clock.as_ref(),
        ctx.tenant(),
        IMPORT_JOB,
        &payload_json,
        now,
        &jobs::ScheduleOptions {
            max_attempts: 5,
            collection: Some(Import::COLLECTION.into()),
            creator: Some(ctx.principal.user),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| {
        if e.kind == ErrorKind::InvalidArgument {
            Error::invalid("file", "the header row is too large to import")
        } else {
            e
        }
    })?;
    import.operation = format!("operations/{}", job.id);
    tx.create_with_id(id, import).await?;
    tx.commit().await?;
    Ok(Started {
        import: id,
        job: job.id,
        repeated: false,
    })
}

// ---------------------------------------------------------------------------------------
// The job

/// Fault injection for tests of resumption: the attempt numbered `attempt` stops with a
/// retryable error right after the commit of its batch number `after_batches` (1-based),
/// before anything else is recorded (the job's checkpoint and progress included), as a
/// process killed at that instant would.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// The attempt to stop (1-based); 0 for none.
    pub attempt: u32,
    /// Batches it commits before stopping.
    pub after_batches: u32,
}

/// The job handler of [`IMPORT_JOB`].
pub async fn run_job(job: JobContext) -> Result<JobOutcome> {
    run_job_with(job, Faults::default()).await
}

/// [`run_job`] with injected faults (tests only: see [`Faults`]).
pub async fn run_job_with(job: JobContext, faults: Faults) -> Result<JobOutcome> {
    let p: Payload = job.payload_as()?;
    let system = job.system_ctx(Some(p.creator));
    let import = match system.get::<Import>(p.import).await {
        Ok(r) => r,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(JobOutcome::done()),
        Err(e) => return Err(e),
    };
    if import.data.state != ImportState::Running {
        return Ok(JobOutcome::Done(summary(
            import.meta.id,
            &import.data.stats,
        )));
    }
    let result = run(&job, &p, &import, faults).await;
    match result {
        Ok(Some(stats)) => {
            finish(&system, import.meta.id, ImportState::Succeeded, &stats, "").await?;
            Ok(JobOutcome::Done(summary(import.meta.id, &stats)))
        }
        Ok(None) => {
            if job.interrupt() == Some(Interrupt::CancelRequested) {
                let stats = written_stats(&system, import.meta.id).await?;
                finish(
                    &system,
                    import.meta.id,
                    ImportState::Cancelled,
                    &stats,
                    "cancelled",
                )
                .await?;
            }
            Ok(JobOutcome::Cancelled)
        }
        Err(e) => {
            let code = JobError::from_error(&e).code;
            if !jobs::rules::retryable(&code) || job.attempt >= job.max_attempts {
                // Best effort: a start also marks it failed when it finds the job ended.
                let stats = written_stats(&system, import.meta.id)
                    .await
                    .unwrap_or_default();
                let _ = finish(
                    &system,
                    import.meta.id,
                    ImportState::Failed,
                    &stats,
                    &e.message,
                )
                .await;
            }
            Err(e)
        }
    }
}

fn summary(import: Uuid, stats: &ImportStats) -> Json {
    json!({ "import": format!("imports/{import}"), "stats": stats })
}

async fn finish(
    ctx: &Ctx,
    import: Uuid,
    state: ImportState,
    stats: &ImportStats,
    error: &str,
) -> Result<()> {
    let tx = ctx.begin().await?;
    let current = tx.get::<Import>(import).await?;
    tx.update(
        import,
        Import {
            state,
            stats: stats.clone(),
            error: error.chars().take(1000).collect(),
            finish_time: Some(ctx.clock.now()),
            ..Default::default()
        },
        &[
            "state".into(),
            "stats".into(),
            "error".into(),
            "finish_time".into(),
        ],
        &current.meta.etag(),
    )
    .await?;
    tx.commit().await
}

/// Where an attempt starts: after the last row of the batches written in order (the job's
/// checkpoint, saved once every batch up to it had committed), skipping the rows after it
/// that batches then in flight wrote (a row result is committed with its record, so these
/// are exactly the rows written after the checkpoint).
struct Resume {
    start: Option<(u64, u64)>,
    written_after: std::collections::HashSet<u64>,
}

async fn resume_point<C: ConnectionTrait>(
    job: &JobContext,
    conn: &C,
    import: Uuid,
) -> Result<Resume> {
    let start = job
        .checkpoint_as::<Checkpoint>()?
        .map(|c| {
            (
                u64::try_from(c.row).unwrap_or(0),
                u64::try_from(c.offset).unwrap_or(0),
            )
        })
        .filter(|(row, _)| *row > 0);
    let mut q = Query::select();
    q.column("row_number")
        .from(ImportRow::TABLE)
        .and_where(Expr::col("tenant_id").eq(job.tenant.as_str()))
        .and_where(Expr::col("import_id").eq(import))
        .and_where(Expr::col("delete_time").is_null())
        .and_where(
            Expr::col("row_number").gt(i64::try_from(start.map_or(0, |s| s.0)).unwrap_or(i64::MAX)),
        );
    let mut written_after = std::collections::HashSet::new();
    for r in conn.query_all(&q).await? {
        written_after.insert(u64::try_from(r.try_get::<i64>("", "row_number")?).unwrap_or(0));
    }
    Ok(Resume {
        start,
        written_after,
    })
}

/// The counts of the rows written so far, read as the system.
async fn written_stats(ctx: &Ctx, import: Uuid) -> Result<ImportStats> {
    let mut q = Query::select();
    q.column("outcome")
        .expr_as(Func::count(Expr::col("id")), Alias::new("n"))
        .from(ImportRow::TABLE)
        .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
        .and_where(Expr::col("import_id").eq(import))
        .and_where(Expr::col("delete_time").is_null())
        .group_by_col("outcome");
    let mut s = ImportStats::default();
    for r in ctx.db.conn.query_all(&q).await? {
        let n: i64 = r.try_get("", "n")?;
        let outcome: String = r.try_get("", "outcome")?;
        s.read += n;
        match RowOutcome::parse(&outcome) {
            Some(RowOutcome::Created) => s.created += n,
            Some(RowOutcome::Flagged) => {
                s.created += n;
                s.flagged += n;
            }
            Some(RowOutcome::Rejected) => s.rejected += n,
            None => {}
        }
    }
    Ok(s)
}

/// Reads and writes every row not written yet; `None` when told to stop.
async fn run(
    job: &JobContext,
    p: &Payload,
    import: &Record<Import>,
    faults: Faults,
) -> Result<Option<ImportStats>> {
    let system = job.system_ctx(Some(p.creator));
    let upload_id = import
        .data
        .upload
        .ok_or_else(|| Error::invalid("upload", "the import names no upload"))?;
    let upload = upload::ready_upload(&system, upload_id, "upload").await?;
    // Records are written as the import's creator: their rights, scope and field rules.
    let principal = crm_core::auth::Principal {
        tenant: job.tenant.clone(),
        user: p.creator,
        roles: p.roles.clone(),
    };
    let policy = crm_core::tenant::authorize(&job.db, &principal).await?;
    let ctx = Ctx::new(job.db.clone(), principal, policy, job.clock.clone());
    let target: TargetKind = import.data.target.into();
    let defs = definitions(&job.db.conn, &job.tenant, target).await?;
    let writer = Writer {
        ctx: &ctx,
        import: import.meta.id,
        target,
        mapping: &import.data.mapping,
        defs: &defs,
    };
    let batch_rows = match import.data.options.batch_size {
        0 => DEFAULT_BATCH_ROWS,
        n => Ord::min(n, MAX_BATCH_ROWS),
    } as usize;
    let conn = &job.db.conn;
    // The resume point: the end of the batches known written in order (the checkpoint),
    // and the rows written after it by batches that were in flight (skipped).
    let resume = resume_point(job, conn, import.meta.id).await?;
    let done_through = resume.start.map_or(0, |(n, _)| n);
    let skip = resume.written_after;
    let mut stats = written_stats(&system, import.meta.id).await?;
    job.progress(&progress_of(&stats)).await?;
    let mut batches = 0u32;
    let mut pending: Vec<RawRow> = Vec::new();
    let write_batch = |rows: Vec<RawRow>| {
        let writer = &writer;
        async move {
            let batch = writer.write(&rows).await?;
            Ok::<_, Error>((batch, rows.last().map(|r| (r.number, r.byte_offset))))
        }
    };
    let mut in_flight = futures::stream::FuturesOrdered::new();
    let in_flight_max = match target {
        TargetKind::Lead => 1,
        TargetKind::Contact | TargetKind::Account => BATCHES_IN_FLIGHT,
    };
    let todo = |r: &RawRow| r.number > done_through && !skip.contains(&r.number);

    // One batch finished (the earliest in flight), then its checkpoint: every batch up to
    // it is written, so a later attempt may resume after its last row.
    macro_rules! finished {
        ($done:expr) => {{
            let (batch, lastrow): (ImportStats, Option<(u64, u64)>) = $done?;
            stats.read += batch.read;
            stats.created += batch.created;
            stats.flagged += batch.flagged;
            stats.rejected += batch.rejected;
            batches += 1;
            if faults.attempt != 0
                && faults.attempt == job.attempt
                && batches >= faults.after_batches
            {
                return Err(Error::unavailable(
                    "the import stopped after a batch (injected fault)",
                ));
            }
            if let Some((row, offset)) = lastrow {
                let cp = serde_json::to_value(Checkpoint {
                    row: i64::try_from(row).unwrap_or(i64::MAX),
                    offset: i64::try_from(offset).unwrap_or(i64::MAX),
                })
                .map_err(|e| Error::internal(e.to_string()))?;
                job.save(&cp, &progress_of(&stats)).await?;
            }
            if job.is_cancelled() {
                return Ok(None);
            }
        }};
    }

    // One batch handed to a writer; when as many as allowed are in flight, the earliest
    // is waited for first.
    macro_rules! flush {
        ($rows:expr) => {{
            let rows: Vec<RawRow> = $rows;
            if !rows.is_empty() {
                if job.is_cancelled() {
                    return Ok(None);
                }
                in_flight.push_back(write_batch(rows));
                if in_flight.len() >= in_flight_max {
                    if let Some(done) = in_flight.next().await {
                        finished!(done);
                    }
                }
            }
        }};
    }

    match p.format {
        FileFormat::Spreadsheet => {
            let bytes = upload::read_all(conn, &upload, &job.tenant, MAX_SHEET_FILE_BYTES).await?;
            let options = import.data.options.clone();
            // Parsed off the async threads; the lease is renewed while it takes.
            let mut parse = tokio::task::spawn_blocking(move || sheet_rows(&bytes, &options));
            let rows = loop {
                tokio::select! {
                    r = &mut parse => break r.map_err(|e| {
                        Error::internal(format!("reading the spreadsheet failed: {e}"))
                    })??,
                    () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
                        job.heartbeat().await?;
                    }
                }
            };
            let mut rows = rows.into_iter().filter(|r| todo(r)).peekable();
            while rows.peek().is_some() {
                let batch: Vec<RawRow> = rows.by_ref().take(batch_rows).collect();
                flush!(batch);
            }
        }
        FileFormat::Csv => {
            let (mut stream, mut reader) = match (resume.start, &p.header) {
                (Some((number, offset)), Some(header)) => (
                    CsvStream::resume_at(offset, number, header.clone()).map_err(file_error)?,
                    ChunkReader::at(conn, &job.tenant, upload.meta.id, offset).await?,
                ),
                _ => (
                    CsvStream::new(csv_options(&import.data.options)).map_err(file_error)?,
                    ChunkReader::new(&job.tenant, upload.meta.id),
                ),
            };
            loop {
                let (rows, end) = match reader.next(conn).await? {
                    Some(c) => (stream.push(&c.bytes).map_err(file_error)?, false),
                    None => (stream.finish().map_err(file_error)?, true),
                };
                pending.extend(rows.into_iter().filter(|r| todo(r)));
                while pending.len() >= batch_rows {
                    let rest = pending.split_off(batch_rows);
                    let batch = std::mem::replace(&mut pending, rest);
                    flush!(batch);
                }
                if end {
                    break;
                }
            }
            let batch = std::mem::take(&mut pending);
            flush!(batch);
        }
    }
    while let Some(done) = in_flight.next().await {
        finished!(done);
    }
    Ok(Some(stats))
}

// ---------------------------------------------------------------------------------------
// Reading results

/// A page of an import's row results, optionally of one outcome, in row order. Needs read
/// access to the import (NOT_FOUND for another tenant's).
pub async fn list_rows(
    ctx: &Ctx,
    import: Uuid,
    outcome: Option<RowOutcome>,
    page_size: i32,
    page_token: String,
) -> Result<Page<ImportRow>> {
    ctx.get::<Import>(import)
        .await
        .map_err(|e| e.in_field("import"))?;
    let mut filter = format!("import = \"imports/{import}\"");
    if let Some(o) = outcome {
        filter.push_str(&format!(" AND outcome = {}", o.as_str()));
    }
    ctx.list::<ImportRow>(&ListParams {
        page_size,
        page_token,
        filter,
        order_by: "row_number".into(),
        parent: None,
    })
    .await
}

/// The CSV report's first line: `row`, `outcome`, `record`, `problems`, then the file's
/// columns (filled for rejected rows, so they can be fixed and imported again).
pub fn report_header(import: &Import) -> Vec<u8> {
    let mut cells: Vec<String> = ["row", "outcome", "record", "problems"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    cells.extend(import.header.iter().cloned());
    export_csv_line(&cells)
}

/// One row's line of the CSV report (cells escaped against CSV injection).
pub fn report_line(row: &ImportRow, columns: usize) -> Vec<u8> {
    let problems: Vec<String> = row
        .problems
        .iter()
        .map(|p| {
            if p.field.is_empty() {
                p.message.clone()
            } else {
                format!("{}: {}", p.field, p.message)
            }
        })
        .collect();
    let mut cells = vec![
        row.row_number.to_string(),
        row.outcome.as_str().to_owned(),
        row.record.clone(),
        problems.join("; "),
    ];
    let mut data = row.cells.clone();
    data.resize(columns.max(data.len()), String::new());
    cells.extend(data);
    export_csv_line(&cells)
}
