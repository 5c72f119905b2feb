//! Mailbox connectors (C2): a tenant's IMAP accounts, polled by a durable job that ingests
//! every new message into the timeline ([`crate::intake::ingest_email`]).
//!
//! - **Accounts** are the `mailboxAccounts` resource: server, port, security (implicit TLS,
//!   or plain text for a server on a trusted network), user name, password, folder, polling
//!   interval, the user who owns what is ingested. The password is sealed with the operator's
//!   key ([`crm_core::secrets`]) by the write hook before it is stored, bound to its tenant
//!   and record; it is never returned (the gateway shows `has_password`), and audit records
//!   and events keep only its size and digest.
//! - **Polling** is the job [`POLL_JOB`], one pending per account (dedupe key
//!   `mailbox/{id}`), armed when an account is created, changed or asked to poll, and re-armed
//!   after each run at the account's interval. A run logs in, selects the folder, and fetches
//!   the messages whose UID is above the stored position, oldest first, at most
//!   [`MAX_MESSAGES_PER_RUN`] (the next run starts at once when more wait).
//! - **Position**: the folder's UIDVALIDITY and the last UID ingested are stored on the
//!   account, advanced after every [`POSITION_BATCH`] messages and at the end of a run. A
//!   restart, a killed runner or a failed run starts again after the stored position: no
//!   message is skipped. Messages between the position and the crash are fetched again, and
//!   intake is idempotent by Message-ID (a hash of the message when it has none), so none
//!   makes a second interaction. A changed UIDVALIDITY (the folder was recreated) starts the
//!   folder over, again without duplicates.
//! - **Errors**: a message intake refuses (not an e-mail, over the limits) is counted as
//!   rejected and passed over (it stays in the mailbox); a connection, login or folder error
//!   ends the run, is recorded on the account (`last_error`, `last_error_time`, cleared by the
//!   next good run), fails the run's operation with FAILED_PRECONDITION and the account is
//!   polled again at its interval.

use crate::intake::{self, Links};
use chrono::{DateTime, Utc};
use crm_core::error::{Error, ErrorKind, Result};
use crm_core::jobs::{JobContext, JobHandlers, JobOutcome, OnDuplicate, Progress, ScheduleOptions};
use crm_core::registry::SchemaChange;
use crm_core::resource::{FieldSpec, HookFuture, Kind, Record, Resource};
use crm_core::secrets::Sealer;
use crm_core::service::{Ctx, Tx};
use crm_core::validate::{self, Violations};
use futures::StreamExt;
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use uuid::Uuid;

/// The job kind of mailbox polls.
pub const POLL_JOB: &str = "crm.collaborative.mailbox_poll";
/// Most messages one run ingests; the next run starts at once when more wait.
pub const MAX_MESSAGES_PER_RUN: usize = 500;
/// The stored position advances after this many messages (and at the end of a run).
pub const POSITION_BATCH: usize = 25;
/// The shortest and longest polling intervals, in seconds; the default.
pub const MIN_POLL_SECONDS: i64 = 10;
/// See [`MIN_POLL_SECONDS`].
pub const MAX_POLL_SECONDS: i64 = 86_400;
/// See [`MIN_POLL_SECONDS`].
pub const DEFAULT_POLL_SECONDS: i64 = 60;
/// The longest password accepted, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// How long connecting, logging in or one IMAP command may take.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest message fetched (intake's own limit); larger ones are counted as rejected.
const MAX_MESSAGE_BYTES: u32 = 25 * 1024 * 1024;

crm_core::named_enum! {
    /// How the connection to the IMAP server is protected.
    pub enum Security {
        /// TLS from the first byte (IMAPS, port 993 by default); the server's certificate is
        /// checked against the Web PKI roots and the host name.
        Tls = "TLS",
        /// No encryption (port 143 by default): only for a server on a trusted network, as
        /// the password crosses it in clear.
        Plain = "PLAIN"
    }
}

/// A tenant's IMAP account (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MailboxAccount {
    /// A name for people.
    pub display_name: String,
    /// The IMAP server's host name or address.
    pub host: String,
    /// Its port; 0 takes the default of `security` (993 or 143).
    pub port: i64,
    /// Connection security.
    pub security: Security,
    /// Extra trust anchors for `TLS` (PEM certificates of a private CA), beside the Web PKI
    /// roots; empty: the Web PKI roots only.
    pub tls_ca_certificates: String,
    /// The login name.
    pub username: String,
    /// The password: plain text as written by a caller, sealed text once stored (the write
    /// hook seals it). Never returned.
    pub password: String,
    /// The folder polled (default `INBOX`).
    pub folder: String,
    /// Seconds between polls ([`MIN_POLL_SECONDS`]..=[`MAX_POLL_SECONDS`], 0 = default).
    pub poll_interval_seconds: i64,
    /// Whether the account is polled.
    pub enabled: bool,
    /// The user who owns the interactions ingested (and whose record scope they fall under).
    pub owner: Option<Uuid>,
    /// Messages are service requests: each new one opens a case, or joins the case of its
    /// conversation ([`crate::cases::case_for_message`]).
    pub open_cases: bool,
    /// The category of the cases opened (selects their SLA policy).
    pub case_category: String,
    /// Output only: the folder's UIDVALIDITY the position belongs to.
    pub uid_validity: i64,
    /// Output only: the highest UID ingested.
    pub last_uid: i64,
    /// Output only: messages made into interactions (duplicates not counted).
    pub messages_ingested: i64,
    /// Output only: the error of the last run, empty after a good one.
    pub last_error: String,
    /// Output only: when `last_error` happened.
    pub last_error_time: Option<DateTime<Utc>>,
    /// Output only: when a run last ingested a message or recovered from an error.
    pub last_success_time: Option<DateTime<Utc>>,
}

/// The fields a caller writes; the others are the poller's.
pub const OUTPUT_ONLY: &[&str] = &[
    "uid_validity",
    "last_uid",
    "messages_ingested",
    "last_error",
    "last_error_time",
    "last_success_time",
];

impl MailboxAccount {
    /// The port connected to.
    pub fn effective_port(&self) -> u16 {
        match u16::try_from(self.port) {
            Ok(p) if p > 0 => p,
            _ => match self.security {
                Security::Tls => 993,
                Security::Plain => 143,
            },
        }
    }

    /// The polling interval.
    pub fn interval(&self) -> chrono::Duration {
        let s = if self.poll_interval_seconds == 0 {
            DEFAULT_POLL_SECONDS
        } else {
            self.poll_interval_seconds
        };
        chrono::Duration::seconds(s.clamp(MIN_POLL_SECONDS, MAX_POLL_SECONDS))
    }

    /// Whether a field that re-arms the poll at once changed (server, login, folder,
    /// interval, enabled); the poller's own fields do not.
    fn connection_changed(&self, old: &MailboxAccount) -> bool {
        self.host != old.host
            || self.port != old.port
            || self.security != old.security
            || self.tls_ca_certificates != old.tls_ca_certificates
            || self.username != old.username
            || self.password != old.password
            || self.folder != old.folder
            || self.enabled != old.enabled
            || self.poll_interval_seconds != old.poll_interval_seconds
    }
}

/// The certificates of a PEM bundle (at least one, each a valid trust anchor).
fn extra_roots(
    pem: &str,
) -> std::result::Result<Vec<tokio_rustls::rustls::pki_types::TrustAnchor<'static>>, String> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut out = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let cert = cert.map_err(|e| format!("certificate {}: {e}", i + 1))?;
        let anchor = webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| format!("certificate {} is not a usable CA certificate: {e}", i + 1))?
            .to_owned();
        out.push(anchor);
    }
    if out.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(out)
}

/// True for text an IMAP quoted string can carry safely (no controls, quotes or backslashes).
fn imap_safe(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() || c == '"' || c == '\\')
}

impl Resource for MailboxAccount {
    const COLLECTION: &'static str = "mailboxAccounts";
    const TABLE: &'static str = "mailbox_accounts";
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("host", "host", Kind::Text).filter(),
        FieldSpec::new("port", "port", Kind::Int),
        FieldSpec::new("security", "security", Kind::Enum(Security::NAMES)).filter(),
        FieldSpec::new("tls_ca_certificates", "tls_ca_certificates", Kind::Text),
        FieldSpec::new("username", "username", Kind::Text).filter(),
        FieldSpec::new("password", "password_sealed", Kind::Text).bulk(),
        FieldSpec::new("folder", "folder", Kind::Text),
        FieldSpec::new("poll_interval_seconds", "poll_interval_seconds", Kind::Int),
        FieldSpec::new("enabled", "enabled", Kind::Bool).filter(),
        FieldSpec::new("owner", "owner_id", Kind::Ref("users")).filter(),
        FieldSpec::new("open_cases", "open_cases", Kind::Bool).filter(),
        FieldSpec::new("case_category", "case_category", Kind::Text),
        FieldSpec::new("uid_validity", "uid_validity", Kind::Int),
        FieldSpec::new("last_uid", "last_uid", Kind::Int),
        FieldSpec::new("messages_ingested", "messages_ingested", Kind::Int),
        FieldSpec::new("last_error", "last_error", Kind::Text),
        FieldSpec::new("last_error_time", "last_error_time", Kind::Time).sort(),
        FieldSpec::new("last_success_time", "last_success_time", Kind::Time).sort(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text(
            "display_name",
            &self.display_name,
            200,
            true,
        )) {
            self.display_name = s;
        }
        let host = self.host.trim();
        if host.is_empty() {
            v.add("host", "is required");
        } else if host.len() > 253
            || host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '@')
        {
            v.add("host", "must be a host name or an IP address");
        } else {
            self.host = host.to_ascii_lowercase();
        }
        if !(0..=65_535).contains(&self.port) {
            v.add("port", "must be 1-65535 (or 0 for the default of security)");
        }
        if !self.tls_ca_certificates.trim().is_empty() {
            if self.security != Security::Tls {
                v.add("tls_ca_certificates", "is only used with security TLS");
            } else if self.tls_ca_certificates.len() > 64 * 1024 {
                v.add("tls_ca_certificates", "at most 64 KiB of PEM");
            } else if let Err(e) = extra_roots(&self.tls_ca_certificates) {
                v.add("tls_ca_certificates", e);
            }
        }
        let user = self.username.trim();
        if user.is_empty() {
            v.add("username", "is required");
        } else if user.len() > 320 || !imap_safe(user) {
            v.add(
                "username",
                "at most 320 bytes, without control characters, quotes or backslashes",
            );
        } else {
            self.username = user.to_owned();
        }
        if self.password.is_empty() {
            v.add("password", "is required");
        } else if self.password.len() > 4 * MAX_PASSWORD_BYTES || self.password.contains('\0') {
            v.add(
                "password",
                format!("at most {MAX_PASSWORD_BYTES} bytes, without NUL"),
            );
        }
        let folder = self.folder.trim();
        if folder.is_empty() {
            self.folder = "INBOX".to_owned();
        } else if folder.len() > 200 || !imap_safe(folder) {
            v.add(
                "folder",
                "at most 200 bytes, without control characters, quotes or backslashes",
            );
        } else {
            self.folder = folder.to_owned();
        }
        if self.poll_interval_seconds != 0
            && !(MIN_POLL_SECONDS..=MAX_POLL_SECONDS).contains(&self.poll_interval_seconds)
        {
            v.add(
                "poll_interval_seconds",
                format!("must be {MIN_POLL_SECONDS}-{MAX_POLL_SECONDS} (or 0 for {DEFAULT_POLL_SECONDS})"),
            );
        }
        if let Some(s) = v.check(validate::text(
            "case_category",
            &self.case_category,
            100,
            false,
        )) {
            self.case_category = s;
        }
        if self.last_error.len() > 2_000 {
            let mut cut = 2_000;
            while !self.last_error.is_char_boundary(cut) {
                cut -= 1;
            }
            self.last_error.truncate(cut);
        }
        v.into_result()
    }

    fn before_write<'a>(
        tx: &'a Tx<'a>,
        id: Uuid,
        old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            // A password that differs from the stored (sealed) one is a caller's new plain
            // text: seal it for this tenant and record.
            if old.is_none_or(|o| o.password != data.password) {
                if data.password.len() > MAX_PASSWORD_BYTES {
                    return Err(Error::invalid(
                        "password",
                        format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
                    ));
                }
                let ctx = tx.ctx();
                let sealer = ctx.db.sealer()?;
                data.password = sealer.seal(
                    &password_context(ctx.tenant(), id),
                    data.password.as_bytes(),
                );
            }
            if data.enabled && old.is_none_or(|o| data.connection_changed(o)) {
                arm(tx, id, tx.ctx().clock.now(), None, OnDuplicate::Replace).await?;
            }
            Ok(())
        })
    }
}

fn password_context(tenant: &str, id: Uuid) -> String {
    // Tenants are named by text ids; the context binds the value to the tenant's name.
    format!("{tenant}/{}/{id}/password", MailboxAccount::COLLECTION)
}

/// The mailbox accounts table.
pub const SCHEMA: SchemaChange = SchemaChange::new(
    "m20261205_100001_mailbox_accounts",
    &[
        crm_core::resource_table!(
            "mailbox_accounts",
            "display_name TEXT NOT NULL, host TEXT NOT NULL, port BIGINT NOT NULL, \
             security TEXT NOT NULL, tls_ca_certificates TEXT NOT NULL, username TEXT NOT NULL, password_sealed TEXT NOT NULL, \
             folder TEXT NOT NULL, poll_interval_seconds BIGINT NOT NULL, \
             enabled BOOLEAN NOT NULL, owner_id UUID NULL, open_cases BOOLEAN NOT NULL, \
             case_category TEXT NOT NULL, uid_validity BIGINT NOT NULL, \
             last_uid BIGINT NOT NULL, messages_ingested BIGINT NOT NULL, \
             last_error TEXT NOT NULL, last_error_time TIMESTAMPTZ NULL, \
             last_success_time TIMESTAMPTZ NULL"
        ),
        "CREATE INDEX mailbox_accounts_enabled ON mailbox_accounts (tenant_id, enabled)",
    ],
);

/// Schedules the account's poll at `due` (replacing the pending one), on behalf of `creator`.
async fn arm(
    tx: &Tx<'_>,
    id: Uuid,
    due: DateTime<Utc>,
    creator: Option<Uuid>,
    on_duplicate: OnDuplicate,
) -> Result<crm_core::jobs::Scheduled> {
    let ctx = tx.ctx();
    crm_core::jobs::schedule(
        tx.conn(),
        ctx.clock.as_ref(),
        ctx.tenant(),
        POLL_JOB,
        &serde_json::json!({ "account": id }),
        due,
        &ScheduleOptions {
            dedupe_key: Some(format!("mailbox/{id}")),
            collection: Some(MailboxAccount::COLLECTION.to_owned()),
            creator,
            on_duplicate,
            // A failed run is not retried by the runner: the next poll is the retry.
            max_attempts: 1,
        },
    )
    .await
}

/// Asks for a poll of the account now (the pending poll is brought forward); returns the
/// job, served as the operation whose end is that poll's end. Needs the right to update
/// the account; FAILED_PRECONDITION `MAILBOX_DISABLED` for a disabled one.
pub async fn poll_now(ctx: &Ctx, id: Uuid) -> Result<Uuid> {
    let tx = ctx.begin().await?;
    let rec = tx.get::<MailboxAccount>(id).await?;
    if ctx
        .policy
        .scopes(MailboxAccount::PERMISSION, crm_core::access::Action::Update)
        .is_empty()
    {
        return Err(Error::permission_denied(
            "ACTION_NOT_ALLOWED",
            format!(
                "polling {}/{id} needs the right to update it",
                MailboxAccount::COLLECTION
            ),
        ));
    }
    if !rec.data.enabled {
        return Err(Error::failed_precondition(
            "MAILBOX_DISABLED",
            format!(
                "{}/{id} is disabled: enable it to poll",
                MailboxAccount::COLLECTION
            ),
        ));
    }
    let s = arm(
        &tx,
        id,
        ctx.clock.now(),
        Some(ctx.principal.user),
        OnDuplicate::Replace,
    )
    .await?;
    tx.commit().await?;
    crm_core::jobs::wake();
    Ok(s.id)
}

/// Registers the poll handler.
pub fn register_jobs(h: &mut JobHandlers) -> Result<()> {
    h.register(POLL_JOB, poll_job)?;
    Ok(())
}

/// What a run did (the job's result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollReport {
    /// Messages made into new interactions.
    pub created: i64,
    /// Messages already ingested (fetched again after a restart or a UIDVALIDITY change).
    pub duplicates: i64,
    /// Messages intake refused (left in the mailbox).
    pub rejected: i64,
    /// UIDs of the refused messages (the first 100).
    pub rejected_uids: Vec<u32>,
    /// The folder's UIDVALIDITY.
    pub uid_validity: i64,
    /// The position after the run.
    pub last_uid: i64,
    /// Whether the folder was started over (a new UIDVALIDITY).
    pub restarted: bool,
    /// Whether more messages wait (the next run starts at once).
    pub more: bool,
    /// Cases opened from messages (accounts with `open_cases`).
    pub cases_opened: i64,
    /// Messages that joined their conversation's case.
    pub cases_joined: i64,
    /// Messages whose case the tenant's rules refused (left without a case).
    pub cases_refused: i64,
}

/// The poll job: one run over the account's folder (see the module docs).
pub async fn poll_job(job: JobContext) -> Result<JobOutcome> {
    #[derive(Deserialize)]
    struct Payload {
        account: Uuid,
    }
    let p: Payload = job.payload_as()?;
    let ctx = job.system_ctx(None);
    match find_account(&ctx, p.account).await? {
        // Deleted or disabled since: nothing to poll, nothing to re-arm.
        Some(rec) if rec.data.enabled => {}
        _ => return Ok(JobOutcome::done()),
    }
    // One run at a time per account: a poll asked for while another runs waits for it.
    take_turn(&job, &ctx, p.account).await?;
    let mut report = PollReport::default();
    // Read again now that it is this run's turn: the previous run moved the position.
    let run = match find_account(&ctx, p.account).await? {
        Some(rec) if rec.data.enabled => run_poll(&job, &ctx, &rec, &mut report).await,
        _ => Ok(()),
    };
    let now = ctx.clock.now();
    // Record the outcome, re-arm and end the turn, in one transaction (again when an edit
    // of the account got in between).
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tx = ctx.begin().await?;
        let Some(cur) = stored(&tx, p.account).await? else {
            return Ok(JobOutcome::done());
        };
        let mut patch = MailboxAccount::default();
        let mut mask: Vec<String> = Vec::new();
        match &run {
            Ok(()) => {
                if !cur.data.last_error.is_empty() || report.created > 0 {
                    patch.last_error = String::new();
                    patch.last_success_time = Some(now);
                    mask.extend(["last_error".to_owned(), "last_success_time".to_owned()]);
                }
            }
            Err(e) => {
                let message = e.message.clone();
                if cur.data.last_error != message {
                    patch.last_error = message;
                    patch.last_error_time = Some(now);
                    mask.extend(["last_error".to_owned(), "last_error_time".to_owned()]);
                }
            }
        }
        if !mask.is_empty() {
            match tx.update(cur.meta.id, patch, &mask, &cur.meta.etag()).await {
                Err(e) if e.kind == ErrorKind::Aborted && attempt < 5 => continue,
                r => r?,
            };
        }
        if cur.data.enabled {
            let due = if run.is_ok() && report.more {
                now
            } else {
                now + cur.data.interval()
            };
            // A poll asked for meanwhile (or an edit's) stays as it is: it is due already.
            arm(&tx, cur.meta.id, due, None, OnDuplicate::Keep).await?;
        }
        hold_turn(&tx, p.account, 0).await?;
        tx.commit().await?;
        break;
    }
    match run {
        _ if job.is_cancelled() => Ok(JobOutcome::Cancelled),
        Ok(()) => Ok(JobOutcome::Done(
            serde_json::to_value(&report).map_err(|e| Error::internal(e.to_string()))?,
        )),
        Err(e) => Err(Error::failed_precondition("MAILBOX_POLL_FAILED", e.message)),
    }
}

/// How long a run holds its account's turn without renewing it (a runner that died frees
/// it after this), in milliseconds; renewed whenever the position is stored.
const TURN_MS: i64 = 5 * 60 * 1000;

fn turn_key(id: Uuid) -> String {
    format!("mailbox-poll/{id}")
}

/// The stored account, read as the system in `tx`.
async fn stored(tx: &Tx<'_>, id: Uuid) -> Result<Option<Record<MailboxAccount>>> {
    Ok(tx
        .find::<MailboxAccount>(Condition::all().add(Expr::col("id").eq(id)), 1)
        .await?
        .into_iter()
        .next())
}

/// The stored account, as the system.
async fn find_account(ctx: &Ctx, id: Uuid) -> Result<Option<Record<MailboxAccount>>> {
    stored(&ctx.begin().await?, id).await
}

/// Sets the account's turn to `until` (Unix milliseconds; 0 frees it) in `tx`.
async fn hold_turn(tx: &Tx<'_>, id: Uuid, until: i64) -> Result<()> {
    let key = turn_key(id);
    tx.lock_counter(&key).await?;
    tx.set_counter(&key, until).await
}

/// Takes the account's turn (a tenant counter holding the deadline of the run that has it,
/// in Unix milliseconds; 0 when free), waiting while another run holds it.
async fn take_turn(job: &JobContext, ctx: &Ctx, id: Uuid) -> Result<()> {
    let key = turn_key(id);
    loop {
        let tx = ctx.begin().await?;
        let until = tx.lock_counter(&key).await?;
        let now = ctx.clock.now().timestamp_millis();
        if until <= now {
            tx.set_counter(&key, now + TURN_MS).await?;
            tx.commit().await?;
            return Ok(());
        }
        drop(tx);
        if job.is_cancelled() {
            return Err(Error::failed_precondition(
                "MAILBOX_POLL_CANCELLED",
                "cancelled while another poll of the account ran",
            ));
        }
        job.heartbeat().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A stream to the server, plain or TLS.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Conn for T {}

/// An IMAP error as the account's `last_error`.
fn imap_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::unavailable(format!("IMAP {what}: {e}"))
}

async fn within<T, F: std::future::Future<Output = T>>(what: &str, f: F) -> Result<T> {
    tokio::time::timeout(NETWORK_TIMEOUT, f).await.map_err(|_| {
        imap_error(
            what,
            format!("no answer within {} s", NETWORK_TIMEOUT.as_secs()),
        )
    })
}

async fn connect(account: &MailboxAccount) -> Result<Box<dyn Conn>> {
    let addr = (account.host.as_str(), account.effective_port());
    let tcp = within("connect", TcpStream::connect(addr))
        .await?
        .map_err(|e| imap_error("connect", e))?;
    match account.security {
        Security::Plain => Ok(Box::new(tcp)),
        Security::Tls => {
            use tokio_rustls::rustls;
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            if !account.tls_ca_certificates.trim().is_empty() {
                roots.roots.extend(
                    extra_roots(&account.tls_ca_certificates)
                        .map_err(|e| imap_error("TLS", format!("tls_ca_certificates: {e}")))?,
                );
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| imap_error("TLS", e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(account.host.clone())
                .map_err(|e| imap_error("TLS", e))?;
            let tls = within(
                "TLS handshake",
                tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
            )
            .await?
            .map_err(|e| imap_error("TLS handshake", e))?;
            Ok(Box::new(tls))
        }
    }
}

/// One run: log in, select, fetch new messages, ingest them, advance the position.
async fn run_poll(
    job: &JobContext,
    ctx: &Ctx,
    rec: &Record<MailboxAccount>,
    report: &mut PollReport,
) -> Result<()> {
    let account = &rec.data;
    let id = rec.meta.id;
    let sealer: &Sealer = ctx.db.sealer()?;
    let password = sealer.open(&password_context(ctx.tenant(), id), &account.password)?;
    let password = String::from_utf8(password)
        .map_err(|_| Error::failed_precondition("SECRET_UNREADABLE", "the password is not text"))?;

    let stream = connect(account).await?;
    let mut client = async_imap::Client::new(stream);
    match within("greeting", client.read_response()).await? {
        Ok(Some(_)) => {}
        Ok(None) => return Err(imap_error("greeting", "the server closed the connection")),
        Err(e) => return Err(imap_error("greeting", e)),
    }
    let mut session = within("login", client.login(&account.username, &password))
        .await?
        .map_err(|(e, _)| imap_error("login", e))?;
    let mailbox = within("select", session.select(&account.folder))
        .await?
        .map_err(|e| imap_error(&format!("select {}", account.folder), e))?;
    let validity = i64::from(mailbox.uid_validity.unwrap_or(0));
    report.uid_validity = validity;
    let mut last_uid = account.last_uid;
    if account.uid_validity != validity {
        // A new folder (or the first run): start it over; intake drops what it has seen.
        report.restarted = account.uid_validity != 0 || account.last_uid != 0;
        last_uid = 0;
        save_position(ctx, id, validity, 0, 0).await?;
    }
    report.last_uid = last_uid;

    let from = u32::try_from(last_uid + 1).unwrap_or(u32::MAX);
    let found = within("search", session.uid_search(format!("UID {from}:*")))
        .await?
        .map_err(|e| imap_error("search", e))?;
    // `n:*` always matches the last message, even below n.
    let mut uids: Vec<u32> = found
        .into_iter()
        .filter(|u| i64::from(*u) > last_uid)
        .collect();
    uids.sort_unstable();
    report.more = uids.len() > MAX_MESSAGES_PER_RUN;
    uids.truncate(MAX_MESSAGES_PER_RUN);
    let total = i64::try_from(uids.len()).unwrap_or(i64::MAX);

    let owner_ctx = job.system_ctx(account.owner);
    let links = Links {
        owner: account.owner,
        ..Default::default()
    };
    let mut since_saved = 0usize;
    let mut created_unsaved = 0i64;
    for uid in uids {
        if job.is_cancelled() {
            break;
        }
        let raw = fetch(&mut session, uid).await?;
        match raw {
            None => reject(report, uid),
            Some(raw) => match intake::ingest_email(&owner_ctx, &raw, links.clone()).await {
                Ok(done) => {
                    if done.created {
                        report.created += 1;
                        created_unsaved += 1;
                    } else {
                        report.duplicates += 1;
                    }
                    // Also for a message fetched again: one that missed its case then
                    // gets it now, one that has it is skipped.
                    if account.open_cases {
                        use crate::cases::MessageCase as M;
                        match crate::cases::case_for_message(
                            &owner_ctx,
                            done.interaction.meta.id,
                            &account.case_category,
                        )
                        .await
                        {
                            Ok(M::Opened(_)) => report.cases_opened += 1,
                            Ok(M::Joined(_) | M::Resumed(_) | M::Reopened(_)) => {
                                report.cases_joined += 1
                            }
                            Ok(M::Skipped) => {}
                            // Refused by the tenant's rules: the message stays on the
                            // timeline without a case, as it would by hand.
                            Err(e)
                                if matches!(
                                    e.kind,
                                    ErrorKind::InvalidArgument
                                        | ErrorKind::FailedPrecondition
                                        | ErrorKind::PermissionDenied
                                        | ErrorKind::NotFound
                                ) =>
                            {
                                report.cases_refused += 1
                            }
                            Err(e) => {
                                save_position(ctx, id, validity, last_uid, created_unsaved).await?;
                                report.last_uid = last_uid;
                                return Err(e);
                            }
                        }
                    }
                }
                Err(e) if e.kind == ErrorKind::InvalidArgument => reject(report, uid),
                Err(e) => {
                    // The position stays before this message: the next run tries it again.
                    save_position(ctx, id, validity, last_uid, created_unsaved).await?;
                    report.last_uid = last_uid;
                    return Err(e);
                }
            },
        }
        last_uid = i64::from(uid);
        since_saved += 1;
        if since_saved >= POSITION_BATCH {
            save_position(ctx, id, validity, last_uid, created_unsaved).await?;
            created_unsaved = 0;
            since_saved = 0;
            job.progress(&Progress {
                done: report.created + report.duplicates + report.rejected,
                total,
                counts: [
                    ("created".to_owned(), report.created),
                    ("duplicates".to_owned(), report.duplicates),
                    ("rejected".to_owned(), report.rejected),
                ]
                .into_iter()
                .collect(),
            })
            .await?;
        }
    }
    if since_saved > 0 {
        save_position(ctx, id, validity, last_uid, created_unsaved).await?;
    }
    report.last_uid = last_uid;
    // A failed logout loses nothing: the position is stored.
    let _ = within("logout", session.logout()).await;
    Ok(())
}

fn reject(report: &mut PollReport, uid: u32) {
    report.rejected += 1;
    if report.rejected_uids.len() < 100 {
        report.rejected_uids.push(uid);
    }
}

/// The raw message of `uid`; None when it is too large or has no body (rejected).
async fn fetch<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug>(
    session: &mut async_imap::Session<T>,
    uid: u32,
) -> Result<Option<Vec<u8>>> {
    let size: Option<u32> = {
        let mut s = within("fetch", session.uid_fetch(uid.to_string(), "RFC822.SIZE"))
            .await?
            .map_err(|e| imap_error("fetch", e))?;
        let mut size = None;
        while let Some(f) = within("fetch", s.next()).await? {
            let f = f.map_err(|e| imap_error("fetch", e))?;
            if f.uid == Some(uid) || f.uid.is_none() {
                size = size.or(f.size);
            }
        }
        size
    };
    if size.is_some_and(|s| s > MAX_MESSAGE_BYTES) {
        return Ok(None);
    }
    let mut s = within("fetch", session.uid_fetch(uid.to_string(), "BODY.PEEK[]"))
        .await?
        .map_err(|e| imap_error("fetch", e))?;
    let mut body = None;
    while let Some(f) = within("fetch", s.next()).await? {
        let f = f.map_err(|e| imap_error("fetch", e))?;
        if (f.uid == Some(uid) || f.uid.is_none())
            && body.is_none()
            && let Some(b) = f.body()
        {
            body = Some(b.to_vec());
        }
    }
    Ok(body)
}

/// Stores the position (and adds `created` to the count), as the system.
async fn save_position(
    ctx: &Ctx,
    id: Uuid,
    validity: i64,
    last_uid: i64,
    created: i64,
) -> Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_save_position(ctx, id, validity, last_uid, created).await {
            // An edit of the account got in between: read it again.
            Err(e) if e.kind == ErrorKind::Aborted && attempt < 5 => continue,
            r => return r,
        }
    }
}

async fn try_save_position(
    ctx: &Ctx,
    id: Uuid,
    validity: i64,
    last_uid: i64,
    created: i64,
) -> Result<()> {
    let tx = ctx.begin().await?;
    // The run still holds the turn: renew it.
    hold_turn(&tx, id, ctx.clock.now().timestamp_millis() + TURN_MS).await?;
    let Some(cur) = stored(&tx, id).await? else {
        return Ok(());
    };
    if cur.data.uid_validity == validity && cur.data.last_uid == last_uid && created == 0 {
        return Ok(());
    }
    let patch = MailboxAccount {
        uid_validity: validity,
        last_uid,
        messages_ingested: cur.data.messages_ingested.saturating_add(created),
        ..Default::default()
    };
    let mask = ["uid_validity", "last_uid", "messages_ingested"].map(str::to_owned);
    tx.update(id, patch, &mask, &cur.meta.etag()).await?;
    tx.commit().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_intervals_default_by_security() {
        let mut a = MailboxAccount::default();
        assert_eq!(a.effective_port(), 993);
        a.security = Security::Plain;
        assert_eq!(a.effective_port(), 143);
        a.port = 1143;
        assert_eq!(a.effective_port(), 1143);
        assert_eq!(
            a.interval(),
            chrono::Duration::seconds(DEFAULT_POLL_SECONDS)
        );
        a.poll_interval_seconds = 15;
        assert_eq!(a.interval(), chrono::Duration::seconds(15));
    }

    #[test]
    fn validation_names_the_field() {
        let ok = MailboxAccount {
            display_name: "Support".into(),
            host: " IMAP.Example.com ".into(),
            username: "support@example.com".into(),
            password: "secret".into(),
            ..Default::default()
        };
        let mut a = ok.clone();
        a.validate().unwrap();
        assert_eq!(a.host, "imap.example.com");
        assert_eq!(a.folder, "INBOX");
        for (field, change) in [
            (
                "host",
                Box::new(|a: &mut MailboxAccount| a.host = "a b".into())
                    as Box<dyn Fn(&mut MailboxAccount)>,
            ),
            (
                "host",
                Box::new(|a: &mut MailboxAccount| a.host = String::new()),
            ),
            ("port", Box::new(|a: &mut MailboxAccount| a.port = 70_000)),
            (
                "username",
                Box::new(|a: &mut MailboxAccount| a.username = "a\"b".into()),
            ),
            (
                "password",
                Box::new(|a: &mut MailboxAccount| a.password = String::new()),
            ),
            (
                "folder",
                Box::new(|a: &mut MailboxAccount| a.folder = "in\r\nbox".into()),
            ),
            (
                "poll_interval_seconds",
                Box::new(|a: &mut MailboxAccount| a.poll_interval_seconds = 5),
            ),
        ] {
            let mut a = ok.clone();
            change(&mut a);
            let e = a.validate().unwrap_err();
            assert!(
                e.violations.iter().any(|v| v.field == field),
                "{field}: {e:?}"
            );
        }
    }

    #[test]
    fn connection_changes_are_seen() {
        let a = MailboxAccount {
            host: "h".into(),
            ..Default::default()
        };
        let mut b = a.clone();
        assert!(!b.connection_changed(&a));
        b.last_uid = 9;
        b.last_error = "x".into();
        assert!(
            !b.connection_changed(&a),
            "the poller's fields do not re-arm"
        );
        b.folder = "Support".into();
        assert!(b.connection_changed(&a));
    }
}
