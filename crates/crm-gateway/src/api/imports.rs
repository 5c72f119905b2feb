//! ImportService: uploads stored in the database, previews, imports as long-running
//! operations, their per-row results and CSV report (crm-operational `import`).

use super::Gateway;
use crate::convert::{name, opt_ts, ts};
use crate::status::{OrStatus, status};
use crm_api::google::longrunning as lro;
use crm_api::v1 as pb;
use crm_api::v1::import_service_server::ImportService;
use crm_core::error::{Error, Result};
use crm_core::resource::Record;
use crm_core::service::Ctx;
use crm_operational::import::TargetKind;
use crm_operational::import::model::{
    Import, ImportOptions, ImportRow, ImportState, ImportStats, ImportTarget, ImportUpload,
    RowIssue, RowOutcome, UploadState,
};
use crm_operational::import::run::{self, MappingEntry, PreviewRequest, StartImport};
use crm_operational::import::upload::{self, UploadMetadata};
use futures::Stream;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

pub struct Imports(pub Gateway);

/// How long an upload waits for the client's next message.
const UPLOAD_IDLE: Duration = Duration::from_secs(60);
/// Report rows read per page (and sent per message).
const REPORT_PAGE: i32 = 500;

fn upload_state(s: UploadState) -> i32 {
    use pb::ImportUploadState as P;
    (match s {
        UploadState::Uploading => P::Uploading,
        UploadState::Ready => P::Ready,
        UploadState::Failed => P::Failed,
    }) as i32
}

fn upload_out(r: Record<ImportUpload>) -> pb::ImportUpload {
    pb::ImportUpload {
        name: name("importUploads", Some(r.meta.id)),
        etag: r.meta.etag(),
        create_time: Some(ts(r.meta.create_time)),
        file_name: r.data.file_name,
        content_type: r.data.content_type,
        size_bytes: r.data.size,
        sha256: r.data.sha256,
        state: upload_state(r.data.state),
        chunk_count: r.data.chunk_count,
        owner: name("users", r.data.owner),
    }
}

/// UNSPECIFIED means LEAD.
fn target_in(t: i32) -> Result<TargetKind> {
    use pb::ImportTarget as P;
    Ok(match P::try_from(t) {
        Ok(P::Unspecified | P::Lead) => TargetKind::Lead,
        Ok(P::Contact) => TargetKind::Contact,
        Ok(P::Account) => TargetKind::Account,
        Err(_) => return Err(crate::convert::unknown_enum("target", t)),
    })
}

fn target_out(t: ImportTarget) -> i32 {
    use pb::ImportTarget as P;
    (match t {
        ImportTarget::Lead => P::Lead,
        ImportTarget::Contact => P::Contact,
        ImportTarget::Account => P::Account,
    }) as i32
}

fn state_out(s: ImportState) -> i32 {
    use pb::ImportState as P;
    (match s {
        ImportState::Running => P::Running,
        ImportState::Succeeded => P::Succeeded,
        ImportState::Failed => P::Failed,
        ImportState::Cancelled => P::Cancelled,
    }) as i32
}

fn outcome_in(o: i32) -> Result<Option<RowOutcome>> {
    use pb::ImportRowOutcome as P;
    Ok(match P::try_from(o) {
        Ok(P::Unspecified) => None,
        Ok(P::Created) => Some(RowOutcome::Created),
        Ok(P::Flagged) => Some(RowOutcome::Flagged),
        Ok(P::Rejected) => Some(RowOutcome::Rejected),
        Err(_) => return Err(crate::convert::unknown_enum("outcome", o)),
    })
}

fn outcome_out(o: RowOutcome) -> i32 {
    use pb::ImportRowOutcome as P;
    (match o {
        RowOutcome::Created => P::Created,
        RowOutcome::Flagged => P::Flagged,
        RowOutcome::Rejected => P::Rejected,
    }) as i32
}

fn options_in(o: Option<pb::ImportOptions>) -> Result<ImportOptions> {
    let Some(o) = o else {
        return Ok(ImportOptions::default());
    };
    let delimiter = {
        let mut chars = o.delimiter.chars();
        match (chars.next(), chars.next()) {
            (None, _) => None,
            (Some(c), None) => Some(c),
            _ => {
                return Err(Error::invalid("options.delimiter", "must be one character"));
            }
        }
    };
    Ok(ImportOptions {
        encoding: o.encoding,
        delimiter,
        sheet: o.sheet,
        batch_size: u32::try_from(o.batch_size)
            .map_err(|_| Error::invalid("options.batch_size", "must not be negative"))?,
    })
}

fn options_out(o: ImportOptions) -> pb::ImportOptions {
    pb::ImportOptions {
        encoding: o.encoding,
        delimiter: o.delimiter.map(String::from).unwrap_or_default(),
        sheet: o.sheet,
        batch_size: i32::try_from(o.batch_size).unwrap_or(i32::MAX),
    }
}

fn mapping_out(m: crm_operational::import::ColumnMapping) -> pb::ColumnMapping {
    pb::ColumnMapping {
        column: i32::try_from(m.column).unwrap_or(i32::MAX),
        header: m.header,
        field: m.field.unwrap_or_default(),
        confidence: m.confidence,
        reason: m.reason,
    }
}

fn mapping_in(m: Vec<pb::ColumnMapping>) -> Result<Vec<MappingEntry>> {
    m.into_iter()
        .enumerate()
        .map(|(i, e)| {
            Ok(MappingEntry {
                column: usize::try_from(e.column).map_err(|_| {
                    Error::invalid(format!("mapping[{i}].column"), "must not be negative")
                })?,
                header: e.header,
                field: e.field,
            })
        })
        .collect()
}

fn stats_out(s: ImportStats) -> pb::ImportStats {
    pb::ImportStats {
        read_count: s.read,
        created_count: s.created,
        flagged_count: s.flagged,
        rejected_count: s.rejected,
    }
}

fn problem_out(p: RowIssue) -> pb::ImportRowProblem {
    pb::ImportRowProblem {
        field: p.field,
        message: p.message,
        reason: p.reason,
    }
}

fn import_out(r: Record<Import>) -> pb::Import {
    let d = r.data;
    pb::Import {
        name: name("imports", Some(r.meta.id)),
        upload: name("importUploads", d.upload),
        target: target_out(d.target),
        mapping: d.mapping.into_iter().map(mapping_out).collect(),
        options: Some(options_out(d.options)),
        header: d.header,
        state: state_out(d.state),
        operation: d.operation,
        stats: Some(stats_out(d.stats)),
        error: d.error,
        owner: name("users", d.owner),
        create_time: Some(ts(r.meta.create_time)),
        finish_time: opt_ts(d.finish_time),
        request_id: d.request_id,
    }
}

fn row_out(r: Record<ImportRow>) -> pb::ImportRow {
    let d = r.data;
    pb::ImportRow {
        name: name("importRows", Some(r.meta.id)),
        parent: name("imports", d.import),
        row_number: d.row_number,
        byte_offset: d.offset,
        outcome: outcome_out(d.outcome),
        record: d.record,
        problems: d.problems.into_iter().map(problem_out).collect(),
        cells: d.cells,
    }
}

/// Runs a database step within the database's bound (uploads are not bounded as a whole).
async fn bounded<T>(ctx: &Ctx, f: impl Future<Output = Result<T>>) -> Result<T> {
    let limit = ctx.db.timeout();
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(crm_core::db::not_answered(limit)))
}

/// The client's next message, waiting at most [`UPLOAD_IDLE`].
async fn next_message(
    stream: &mut Streaming<pb::UploadImportFileRequest>,
) -> Result<Option<pb::UploadImportFileRequest>, Status> {
    match tokio::time::timeout(UPLOAD_IDLE, stream.message()).await {
        Ok(r) => r,
        Err(_) => Err(status(Error::aborted(
            "UPLOAD_IDLE",
            format!(
                "no data for {} s: the upload was abandoned; start it again",
                UPLOAD_IDLE.as_secs()
            ),
        ))),
    }
}

/// Receives the file's bytes after the metadata.
async fn receive(
    ctx: &Ctx,
    stream: &mut Streaming<pb::UploadImportFileRequest>,
    upload: &mut upload::Upload,
) -> Result<(), Status> {
    use pb::upload_import_file_request::Content;
    while let Some(m) = next_message(stream).await? {
        match m.content {
            Some(Content::Data(bytes)) => {
                bounded(ctx, upload.append(ctx, &bytes)).await.or_status()?;
            }
            Some(Content::Metadata(_)) => {
                return Err(status(Error::invalid(
                    "metadata",
                    "only the first message carries metadata",
                )));
            }
            None => {}
        }
    }
    Ok(())
}

fn ref_id(field: &str, collection: &str, value: &str) -> Result<Uuid, Status> {
    crm_core::ids::parse_name(field, collection, value.trim()).or_status()
}

type ReportStream =
    Pin<Box<dyn Stream<Item = Result<pb::ExportImportReportResponse, Status>> + Send>>;

/// Where the report stream is.
enum Report {
    Header,
    Rows(String),
    Done,
}

#[tonic::async_trait]
impl ImportService for Imports {
    async fn upload_import_file(
        &self,
        r: Request<Streaming<pb::UploadImportFileRequest>>,
    ) -> Result<Response<pb::ImportUpload>, Status> {
        use pb::upload_import_file_request::Content;
        let ctx = self.0.ctx(&r).await?;
        let mut stream = r.into_inner();
        let meta = match next_message(&mut stream).await? {
            Some(pb::UploadImportFileRequest {
                content: Some(Content::Metadata(m)),
            }) => m,
            _ => {
                return Err(status(Error::invalid(
                    "metadata",
                    "the first message must carry the file's metadata",
                )));
            }
        };
        let expected_size = match meta.expected_size {
            None => None,
            Some(n) => Some(u64::try_from(n).map_err(|_| {
                status(Error::invalid(
                    "metadata.expected_size",
                    "must not be negative",
                ))
            })?),
        };
        let mut up = bounded(
            &ctx,
            upload::begin(
                &ctx,
                UploadMetadata {
                    file_name: meta.file_name,
                    content_type: meta.content_type,
                    expected_size,
                },
                upload::DEFAULT_CHUNK_BYTES,
            ),
        )
        .await
        .or_status()?;
        if let Err(s) = receive(&ctx, &mut stream, &mut up).await {
            up.fail(&ctx, s.message()).await;
            return Err(s);
        }
        let rec = bounded(&ctx, up.finish(&ctx)).await.or_status()?;
        Ok(Response::new(upload_out(rec)))
    }

    async fn get_import_upload(
        &self,
        r: Request<pb::GetImportUploadRequest>,
    ) -> Result<Response<pb::ImportUpload>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let id = ref_id("name", "importUploads", &r.get_ref().name)?;
        let rec = ctx.get::<ImportUpload>(id).await.or_status()?;
        Ok(Response::new(upload_out(rec)))
    }

    async fn preview_import(
        &self,
        r: Request<pb::PreviewImportRequest>,
    ) -> Result<Response<pb::PreviewImportResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let upload = ref_id("upload", "importUploads", &r.upload)?;
        let rows = usize::try_from(r.row_count)
            .map_err(|_| status(Error::invalid("row_count", "must not be negative")))?;
        let p = run::preview(
            &ctx,
            PreviewRequest {
                upload,
                target: Some(target_in(r.target).or_status()?),
                options: options_in(r.options).or_status()?,
                rows,
            },
        )
        .await
        .or_status()?;
        Ok(Response::new(pb::PreviewImportResponse {
            format: match p.format {
                run::FileFormat::Csv => "csv",
                run::FileFormat::Spreadsheet => "spreadsheet",
            }
            .into(),
            encoding: p.encoding,
            delimiter: p.delimiter.map(String::from).unwrap_or_default(),
            sheet: p.sheet,
            sheets: p.sheets,
            header: p.header,
            rows: p
                .rows
                .into_iter()
                .map(|r| pb::ImportPreviewRow {
                    row_number: i64::try_from(r.number).unwrap_or(i64::MAX),
                    cells: r.fields,
                })
                .collect(),
            mapping: p.mapping.into_iter().map(mapping_out).collect(),
            problems: p
                .problems
                .into_iter()
                .map(|p| pb::ImportPreviewProblem {
                    row_number: i64::try_from(p.row).unwrap_or(i64::MAX),
                    problem: Some(problem_out(p.issue)),
                    rejects_row: p.rejects,
                })
                .collect(),
        }))
    }

    async fn start_import(
        &self,
        r: Request<pb::StartImportRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let req = StartImport {
            upload: ref_id("upload", "importUploads", &r.upload)?,
            target: target_in(r.target).or_status()?,
            mapping: mapping_in(r.mapping).or_status()?,
            options: options_in(r.options).or_status()?,
            request_id: r.request_id,
        };
        let started = run::start(&ctx, req).await.or_status()?;
        let job = crm_core::jobs::get(&ctx.db.conn, ctx.tenant(), started.job)
            .await
            .or_status()?
            .ok_or_else(|| Error::internal("the import's job vanished"))
            .or_status()?;
        Ok(Response::new(super::operations::operation(&job)))
    }

    async fn get_import(
        &self,
        r: Request<pb::GetImportRequest>,
    ) -> Result<Response<pb::Import>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let id = ref_id("name", "imports", &r.get_ref().name)?;
        let rec = ctx.get::<Import>(id).await.or_status()?;
        Ok(Response::new(import_out(rec)))
    }

    async fn list_imports(
        &self,
        r: Request<pb::ListImportsRequest>,
    ) -> Result<Response<pb::ListImportsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let p = super::params(r.page_size, r.page_token, r.filter, r.order_by);
        let page = ctx.list::<Import>(&p).await.or_status()?;
        Ok(Response::new(pb::ListImportsResponse {
            imports: page.items.into_iter().map(import_out).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_import_rows(
        &self,
        r: Request<pb::ListImportRowsRequest>,
    ) -> Result<Response<pb::ListImportRowsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let import = ref_id("parent", "imports", &r.parent)?;
        let outcome = outcome_in(r.outcome).or_status()?;
        let page = run::list_rows(&ctx, import, outcome, r.page_size, r.page_token)
            .await
            .map_err(|e| {
                if e.violations.iter().any(|v| v.field.starts_with("import")) {
                    e.in_field("parent")
                } else {
                    e
                }
            })
            .or_status()?;
        Ok(Response::new(pb::ListImportRowsResponse {
            rows: page.items.into_iter().map(row_out).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    type ExportImportReportStream = ReportStream;

    async fn export_import_report(
        &self,
        r: Request<pb::ExportImportReportRequest>,
    ) -> Result<Response<Self::ExportImportReportStream>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let id = ref_id("name", "imports", &r.get_ref().name)?;
        // Checked before the stream starts: NOT_FOUND, PERMISSION_DENIED answer at once.
        let import = ctx.get::<Import>(id).await.or_status()?.data;
        let columns = import.header.len();
        let stream = futures::stream::unfold((ctx, Report::Header), move |(ctx, state)| {
            let header = run::report_header(&import);
            async move {
                match state {
                    Report::Done => None,
                    Report::Header => Some((
                        Ok(pb::ExportImportReportResponse { data: header }),
                        (ctx, Report::Rows(String::new())),
                    )),
                    Report::Rows(token) => {
                        match run::list_rows(&ctx, id, None, REPORT_PAGE, token).await {
                            Err(e) => Some((Err(status(e)), (ctx, Report::Done))),
                            Ok(page) => {
                                if page.items.is_empty() {
                                    return None;
                                }
                                let mut data = Vec::new();
                                for r in &page.items {
                                    data.extend(run::report_line(&r.data, columns));
                                }
                                let next = if page.next_page_token.is_empty() {
                                    Report::Done
                                } else {
                                    Report::Rows(page.next_page_token)
                                };
                                Some((Ok(pb::ExportImportReportResponse { data }), (ctx, next)))
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
