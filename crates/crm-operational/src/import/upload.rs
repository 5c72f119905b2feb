//! Uploads: a file received in pieces of any size, stored in the database as chunks of
//! [`DEFAULT_CHUNK_BYTES`], each in a short transaction of its own through crm-core (checked,
//! audited, evented); and the chunks read back in order, from any byte offset.
//!
//! A gateway holds at most one chunk of an upload in memory while it receives it; the file
//! itself is only ever in the database, so any replica may preview or import it.

use super::model::{ImportUpload, ImportUploadChunk, UploadState};
use base64::Engine as _;
use crm_core::error::{Error, Result};
use crm_core::resource::{Record, Resource};
use crm_core::service::Ctx;
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The largest file accepted: 2 GiB.
pub const MAX_UPLOAD_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// The largest stored chunk (and the largest `data` of one upload message): 1 MiB.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// The size of stored chunks (the last one of a file may be smaller).
pub const DEFAULT_CHUNK_BYTES: usize = MAX_CHUNK_BYTES;
/// The longest file name.
pub const MAX_FILE_NAME_CHARS: usize = 255;

/// What a client declares before sending a file's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadMetadata {
    /// The file name (required).
    pub file_name: String,
    /// Its MIME type, if known.
    pub content_type: String,
    /// The size the client will send, if known: more is refused as soon as it is exceeded,
    /// less when the upload ends.
    pub expected_size: Option<u64>,
}

/// A file being received: created by [`begin`], fed with [`Upload::append`], closed with
/// [`Upload::finish`] (or [`Upload::fail`]).
#[derive(Debug)]
pub struct Upload {
    id: Uuid,
    chunk_bytes: usize,
    expected: Option<u64>,
    size: u64,
    /// Bytes stored in chunks so far (the next chunk's offset).
    stored: u64,
    seq: i64,
    hasher: Sha256,
    buffer: Vec<u8>,
}

/// Starts an upload: checks the metadata and the caller's right to create uploads, and
/// stores the upload (state UPLOADING). `chunk_bytes` is the stored chunk size (1 to
/// [`MAX_CHUNK_BYTES`]; [`DEFAULT_CHUNK_BYTES`] in production, smaller in tests).
pub async fn begin(ctx: &Ctx, meta: UploadMetadata, chunk_bytes: usize) -> Result<Upload> {
    if !(1..=MAX_CHUNK_BYTES).contains(&chunk_bytes) {
        return Err(Error::invalid(
            "chunk_bytes",
            format!("must be 1 to {MAX_CHUNK_BYTES}"),
        ));
    }
    let file_name = meta.file_name.trim();
    if file_name.is_empty() {
        return Err(Error::invalid("metadata.file_name", "is required"));
    }
    if file_name.chars().count() > MAX_FILE_NAME_CHARS {
        return Err(Error::invalid(
            "metadata.file_name",
            format!("must be at most {MAX_FILE_NAME_CHARS} characters"),
        ));
    }
    if let Some(n) = meta.expected_size
        && n > MAX_UPLOAD_BYTES
    {
        return Err(too_large(n));
    }
    let rec = ctx
        .create(
            ImportUpload {
                file_name: file_name.to_owned(),
                content_type: meta.content_type.trim().to_owned(),
                state: UploadState::Uploading,
                ..Default::default()
            },
            "",
        )
        .await
        .map_err(|e| e.in_field("metadata"))?;
    Ok(Upload {
        id: rec.meta.id,
        chunk_bytes,
        expected: meta.expected_size,
        size: 0,
        stored: 0,
        seq: 0,
        hasher: Sha256::new(),
        buffer: Vec::with_capacity(chunk_bytes.min(64 * 1024)),
    })
}

fn too_large(n: u64) -> Error {
    Error::new(
        crm_core::ErrorKind::ResourceExhausted,
        "UPLOAD_TOO_LARGE",
        format!("the file has {n} bytes or more, more than the {MAX_UPLOAD_BYTES} allowed"),
    )
    .with("limit", MAX_UPLOAD_BYTES.to_string())
}

impl Upload {
    /// The upload's id (`importUploads/{id}`).
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Takes the next bytes of the file (any size up to [`MAX_CHUNK_BYTES`]); every full
    /// chunk is stored at once.
    pub async fn append(&mut self, ctx: &Ctx, bytes: &[u8]) -> Result<()> {
        if bytes.len() > MAX_CHUNK_BYTES {
            return Err(Error::invalid(
                "data",
                format!(
                    "a message carries at most {MAX_CHUNK_BYTES} bytes; send the file in smaller pieces"
                ),
            ));
        }
        let size = self.size + bytes.len() as u64;
        if size > MAX_UPLOAD_BYTES {
            return Err(too_large(size));
        }
        if let Some(n) = self.expected
            && size > n
        {
            return Err(Error::invalid(
                "metadata.expected_size",
                format!("the file is larger than the {n} bytes declared"),
            ));
        }
        self.size = size;
        self.hasher.update(bytes);
        let mut rest = bytes;
        while !rest.is_empty() {
            let take = rest.len().min(self.chunk_bytes - self.buffer.len());
            self.buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buffer.len() == self.chunk_bytes {
                self.flush(ctx).await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self, ctx: &Ctx) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let len = self.buffer.len();
        let offset = self.stored;
        let chunk = ImportUploadChunk {
            upload: Some(self.id),
            seq: self.seq,
            offset: i64::try_from(offset).unwrap_or(i64::MAX),
            size: i64::try_from(len).unwrap_or(i64::MAX),
            data: base64::engine::general_purpose::STANDARD.encode(&self.buffer),
        };
        let tx = ctx.begin().await?;
        tx.create(chunk).await?;
        tx.commit().await?;
        self.seq += 1;
        self.stored += len as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Stores the last chunk and marks the upload READY with its size and SHA-256.
    pub async fn finish(mut self, ctx: &Ctx) -> Result<Record<ImportUpload>> {
        if let Some(n) = self.expected
            && self.size != n
        {
            return Err(Error::invalid(
                "metadata.expected_size",
                format!("{n} bytes were declared, {} were sent", self.size),
            ));
        }
        self.flush(ctx).await?;
        let sha = hex::encode(self.hasher.clone().finalize());
        let tx = ctx.begin().await?;
        let current = tx.get::<ImportUpload>(self.id).await?;
        tx.update(
            self.id,
            ImportUpload {
                size: i64::try_from(self.size).unwrap_or(i64::MAX),
                sha256: sha,
                chunk_count: self.seq,
                state: UploadState::Ready,
                ..Default::default()
            },
            &[
                "size".into(),
                "sha256".into(),
                "chunk_count".into(),
                "state".into(),
            ],
            &current.meta.etag(),
        )
        .await?;
        tx.commit().await?;
        ctx.get::<ImportUpload>(self.id).await
    }

    /// Marks the upload FAILED (best effort: the caller reports its own error; an upload
    /// left UPLOADING cannot be imported either).
    pub async fn fail(self, ctx: &Ctx, why: &str) {
        let _ = async {
            let current = ctx.get::<ImportUpload>(self.id).await?;
            ctx.update(
                self.id,
                ImportUpload {
                    size: i64::try_from(self.size).unwrap_or(i64::MAX),
                    chunk_count: self.seq,
                    state: UploadState::Failed,
                    error: why.chars().take(1000).collect(),
                    ..Default::default()
                },
                &[
                    "size".into(),
                    "chunk_count".into(),
                    "state".into(),
                    "error".into(),
                ],
                &current.meta.etag(),
            )
            .await
        }
        .await;
    }
}

/// A READY upload the caller may read (NOT_FOUND for another tenant's, the caller's scope
/// applies), for previews and imports; `field` names the request field.
pub async fn ready_upload(ctx: &Ctx, id: Uuid, field: &str) -> Result<Record<ImportUpload>> {
    let u = ctx
        .get::<ImportUpload>(id)
        .await
        .map_err(|e| e.in_field(field))?;
    if u.data.state != UploadState::Ready {
        return Err(Error::failed_precondition(
            "UPLOAD_NOT_READY",
            format!(
                "importUploads/{id} is {}: only a completely uploaded file can be read",
                u.data.state.as_str()
            ),
        )
        .with("upload", format!("importUploads/{id}")));
    }
    Ok(u)
}

/// One stored chunk, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position among the upload's chunks.
    pub seq: i64,
    /// Offset of its first byte in the file.
    pub offset: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Reads an upload's chunks in order, one at a time, as the system: the caller checks the
/// upload itself first ([`ready_upload`]).
#[derive(Debug, Clone)]
pub struct ChunkReader {
    tenant: String,
    upload: Uuid,
    next_seq: i64,
    skip: usize,
}

impl ChunkReader {
    /// From the first byte.
    pub fn new(tenant: &str, upload: Uuid) -> Self {
        Self {
            tenant: tenant.to_owned(),
            upload,
            next_seq: 0,
            skip: 0,
        }
    }

    /// From byte `offset` of the file: the first piece returned starts there.
    pub async fn at<C: ConnectionTrait>(
        conn: &C,
        tenant: &str,
        upload: Uuid,
        offset: u64,
    ) -> Result<Self> {
        let mut q = Query::select();
        q.columns(["seq", "byte_offset"])
            .from(ImportUploadChunk::TABLE)
            .and_where(Expr::col("tenant_id").eq(tenant))
            .and_where(Expr::col("upload_id").eq(upload))
            .and_where(Expr::col("delete_time").is_null())
            .and_where(Expr::col("byte_offset").lte(i64::try_from(offset).unwrap_or(i64::MAX)))
            .order_by("byte_offset", Order::Desc)
            .limit(1);
        let Some(row) = conn.query_one(&q).await? else {
            return Ok(Self::new(tenant, upload));
        };
        let seq: i64 = row.try_get("", "seq")?;
        let start: i64 = row.try_get("", "byte_offset")?;
        let skip = offset.saturating_sub(u64::try_from(start).unwrap_or(0));
        Ok(Self {
            tenant: tenant.to_owned(),
            upload,
            next_seq: seq,
            skip: usize::try_from(skip).unwrap_or(usize::MAX),
        })
    }

    /// The next piece of the file, `None` after the last.
    pub async fn next<C: ConnectionTrait>(&mut self, conn: &C) -> Result<Option<Chunk>> {
        let mut q = Query::select();
        q.columns(["seq", "byte_offset", "data"])
            .from(ImportUploadChunk::TABLE)
            .and_where(Expr::col("tenant_id").eq(self.tenant.as_str()))
            .and_where(Expr::col("upload_id").eq(self.upload))
            .and_where(Expr::col("delete_time").is_null())
            .and_where(Expr::col("seq").eq(self.next_seq));
        let Some(row) = conn.query_one(&q).await? else {
            return Ok(None);
        };
        let data: String = row.try_get("", "data")?;
        let offset: i64 = row.try_get("", "byte_offset")?;
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(data.as_bytes())
            .map_err(|e| {
                Error::internal(format!(
                    "chunk {} of importUploads/{} does not decode: {e}",
                    self.next_seq, self.upload
                ))
            })?;
        let skip = std::mem::take(&mut self.skip).min(bytes.len());
        bytes.drain(..skip);
        let chunk = Chunk {
            seq: self.next_seq,
            offset: u64::try_from(offset).unwrap_or(0) + skip as u64,
            bytes,
        };
        self.next_seq += 1;
        Ok(Some(chunk))
    }
}

/// The whole file in memory, for spreadsheets (which cannot be read as a stream); refused
/// beyond `max` bytes.
pub async fn read_all<C: ConnectionTrait>(
    conn: &C,
    upload: &Record<ImportUpload>,
    tenant: &str,
    max: usize,
) -> Result<Vec<u8>> {
    let size = usize::try_from(upload.data.size).unwrap_or(usize::MAX);
    if size > max {
        return Err(super::into_core(vec![super::ImportError::FileTooLarge {
            size,
            max,
        }]));
    }
    let mut out = Vec::with_capacity(size);
    let mut r = ChunkReader::new(tenant, upload.meta.id);
    while let Some(c) = r.next(conn).await? {
        out.extend_from_slice(&c.bytes);
        if out.len() > max {
            return Err(super::into_core(vec![super::ImportError::FileTooLarge {
                size: out.len(),
                max,
            }]));
        }
    }
    Ok(out)
}
