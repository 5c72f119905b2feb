//! The gRPC server: every service, health, reflection and grpc-web on one port.

use crate::api::{self, Gateway};
use crate::config::Settings;
use crm_api::v1;
use crm_core::clock::{Clock, SystemClock};
use crm_core::db::Db;
use crm_migration::{Migrator, MigratorTrait};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::ServingStatus;

/// Every service name, for health.
pub const SERVICES: &[&str] = &[
    "crm.v1.AccountService",
    "crm.v1.ContactService",
    "crm.v1.CustomFieldService",
    "crm.v1.ProductService",
    "crm.v1.OrderService",
    "crm.v1.DirectoryService",
    "crm.v1.AccessService",
    "crm.v1.AuditService",
    "crm.v1.LeadService",
    "crm.v1.ActivityService",
    "crm.v1.OpportunityService",
    "crm.v1.ConsentService",
    "crm.v1.MergeService",
    "crm.v1.DuplicateService",
    "crm.v1.AnalyticsService",
    "crm.v1.ImportService",
    "crm.v1.TimelineService",
    "crm.v1.CaseService",
    "crm.v1.MailboxService",
    "crm.v1.EventService",
    "crm.v1.WebhookService",
    "google.longrunning.Operations",
];

/// The largest TimelineService request: a raw e-mail at the intake limit
/// (`crm_collaborative::email::EmailLimits`, 25 MiB) and room for the other fields.
const TIMELINE_MAX_REQUEST_BYTES: usize = 25 * 1024 * 1024 + 64 * 1024;

/// The key of the PostgreSQL advisory lock migrators hold (any constant; "crm_migr").
const MIGRATION_LOCK_KEY: i64 = 0x6372_6d5f_6d69_6772;

/// Registers the collections of the domain crates this gateway serves (the shared model
/// registers itself).
pub fn register_domains(registry: &mut crm_core::registry::RegistryBuilder) {
    crm_operational::register(registry);
    crm_analytical::register(registry);
    crm_collaborative::register(registry);
    crm_webhooks::register(registry);
}

/// Registers the job handlers of the domain crates this gateway serves (reminders, SLA
/// clocks, imports, ...): the kinds this replica's runner claims.
pub fn register_jobs(handlers: &mut crm_core::jobs::JobHandlers) -> crm_core::Result<()> {
    crm_analytical::register_jobs(handlers)?;
    crm_operational::register_jobs(handlers)?;
    crm_collaborative::register_jobs(handlers)?;
    Ok(())
}

/// The job runner of this replica: started once the database is ready, shut down (its
/// unfinished jobs given back to the queue) when the server stops.
struct JobRunner {
    handlers: crm_core::jobs::JobHandlers,
    settings: crate::config::Jobs,
    /// Whether the server has stopped, and the runner if one was started.
    state: tokio::sync::Mutex<(bool, Option<crm_core::jobs::Runner>)>,
}

impl JobRunner {
    async fn start(&self, db: &Db) {
        let mut state = self.state.lock().await;
        if state.0 || !self.settings.enabled {
            return;
        }
        state.1 = Some(crm_core::jobs::Runner::start(
            db.clone(),
            Arc::new(SystemClock),
            self.handlers.clone(),
            self.settings.runner(),
        ));
    }

    async fn stop(&self) {
        let runner = {
            let mut state = self.state.lock().await;
            state.0 = true;
            state.1.take()
        };
        if let Some(r) = runner {
            r.shutdown().await;
        }
    }
}

/// The event relay, the outbox pruner and the webhook fan-out of this replica
/// (`crate::relay`, `crm_webhooks::fanout`): started once the database is ready, stopped
/// when the server stops.
struct EventTasks {
    settings: crate::config::Events,
    webhooks: crm_webhooks::Settings,
    /// Whether the server has stopped, and the tasks if they were started.
    state: tokio::sync::Mutex<(
        bool,
        Option<(crate::relay::Tasks, crm_webhooks::fanout::Tasks)>,
    )>,
}

impl EventTasks {
    async fn start(&self, db: &Db) {
        let mut state = self.state.lock().await;
        if state.0 {
            return;
        }
        state.1 = Some((
            crate::relay::Tasks::start(db, &self.settings, self.settings.relay_in_serve()),
            crm_webhooks::fanout::Tasks::start(db, &self.webhooks),
        ));
    }

    async fn stop(&self) {
        let tasks = {
            let mut state = self.state.lock().await;
            state.0 = true;
            state.1.take()
        };
        if let Some((relay, webhooks)) = tasks {
            relay.stop().await;
            webhooks.stop().await;
        }
    }
}

/// Connects and migrates the database. Errors are for operators: they carry the cause
/// (e.g. "connection refused", "invalid peer certificate: ...").
pub async fn open_database(settings: &Settings) -> Result<Db, String> {
    let db = Db::connect_with(&settings.database.url, settings.database.options())
        .await
        .map_err(|e| format!("cannot open the database: {}", explain(&e)))?;
    let db = match settings.sealer()? {
        Some(sealer) => db.with_sealer(std::sync::Arc::new(sealer)),
        None => db,
    };
    migrate(&db)
        .await
        .map_err(|e| format!("migration failed: {}", explain(&e)))?;
    warn_without_autovacuum(&db).await;
    Ok(db)
}

/// PostgreSQL without autovacuum never refreshes the planner's statistics of tables that grow
/// (new leads, interactions, record keys): plans made for empty tables get slower with every
/// row (measured: IngestEmail at 253/s instead of 938/s after 21,000 interactions). Said once
/// at start, as a warning; the gateway runs anyway.
async fn warn_without_autovacuum(db: &Db) {
    use sea_orm::ConnectionTrait;
    if db.backend() != sea_orm::DbBackend::Postgres {
        return;
    }
    let stmt = sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, "SHOW autovacuum");
    if let Ok(Some(row)) = db.conn.query_one_raw(stmt).await
        && let Ok(v) = row.try_get_by_index::<String>(0)
        && v != "on"
    {
        tracing::warn!(
            autovacuum = %v,
            "PostgreSQL's autovacuum is off: planner statistics of growing tables go stale and \
             queries slow down; turn it on (autovacuum = on) or ANALYZE regularly"
        );
    }
}

/// Applies pending migrations: the shared model's, then the schema changes of the domain crates
/// this gateway serves. On PostgreSQL they run in one transaction holding an advisory
/// lock, so migrators started together (replicas, `crm migrate`) take turns and the later
/// ones find nothing left to do; all pending migrations apply or none. The lock wait and the
/// migrations are not bounded by `database.statement_timeout_ms` (an index on a big table
/// may take long). SQLite has one writer per file and needs no lock.
async fn migrate(db: &Db) -> Result<(), crm_core::Error> {
    use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait};
    // The domain crates' schema changes come from the registry.
    crm_core::registry::install(register_domains)
        .map_err(|e| crm_core::Error::internal(format!("registry: {e}")))?;
    if db.backend() != DbBackend::Postgres {
        return Ok(Migrator::up(&db.conn, None).await?);
    }
    let txn = db.conn.begin().await?;
    txn.execute_unprepared("SET LOCAL statement_timeout = 0")
        .await?;
    txn.execute_unprepared(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
    ))
    .await?;
    Migrator::up(&txn, None).await?;
    txn.commit().await?;
    Ok(())
}

/// An error as operators should read it: the message and, when known, its cause (which RPC
/// clients never see; they get the message only).
pub fn explain(e: &crm_core::Error) -> String {
    match e.metadata.iter().find(|(k, _)| *k == "detail") {
        Some((_, detail)) if !e.message.contains(detail.as_str()) => {
            format!("{} (cause: {detail})", e.message)
        }
        _ => e.message.clone(),
    }
}

/// Serves until `shutdown` resolves. The port answers at once: health reports NOT_SERVING
/// (and RPCs UNAVAILABLE) until the database is reachable and migrated, and NOT_SERVING again
/// whenever a periodic ping fails.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let verifier = Arc::new(settings.verifier()?);
    // Every linked crate's collections, checked against each other before serving.
    crm_core::registry::install(register_domains).map_err(|e| format!("registry: {e}"))?;
    let (reporter, health) = tonic_health::server::health_reporter();
    set_all(&reporter, ServingStatus::NotServing).await;

    let mut handlers = crm_core::jobs::JobHandlers::new();
    register_jobs(&mut handlers).map_err(|e| format!("job handlers: {}", e.message))?;
    // Webhook attempts take the delivery settings.
    crm_webhooks::register_jobs(&mut handlers, settings.webhooks.delivery())
        .map_err(|e| format!("job handlers: {}", e.message))?;
    let jobs = Arc::new(JobRunner {
        handlers,
        settings: settings.jobs.clone(),
        state: tokio::sync::Mutex::new((false, None)),
    });
    let events = Arc::new(EventTasks {
        settings: settings.events.clone(),
        webhooks: settings.webhooks.delivery(),
        state: tokio::sync::Mutex::new((false, None)),
    });
    let db = Arc::new(std::sync::OnceLock::new());
    tokio::spawn(prepare_database(
        settings.clone(),
        db.clone(),
        reporter,
        jobs.clone(),
        events.clone(),
    ));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gw = Gateway {
        db,
        verifier,
        clock,
        policies: Arc::new(crm_core::tenant::PolicyCache::new(Duration::from_millis(
            settings.auth.policy_cache_ms,
        ))),
    };

    // Both reflection versions: grpcurl and buf speak v1, Python's grpcio-reflection and the
    // tools built on it still speak v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crm_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| format!("reflection: {e}"))?;

    let cors = crate::web::cors(&settings.server.cors_origins);
    let limit = settings.server.max_request_bytes;
    // No Nagle delay: small responses must not wait for the peer's delayed ACK.
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let served = Server::builder()
        .accept_http1(true)
        // Room for large bearer tokens: an oversized header block would otherwise make
        // HTTP/2 drop the whole connection; tokens over the limit get a clean
        // UNAUTHENTICATED instead (see Gateway::ctx).
        .http2_max_header_list_size(settings.server.max_header_bytes)
        .layer(cors)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(crate::trace::RequestSpanLayer)
        .layer(crate::web::TooLargeLayer { limit })
        .layer(crate::deadline::DeadlineLayer::from(&settings.database))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            v1::account_service_server::AccountServiceServer::new(api::accounts::Accounts(
                gw.clone(),
            ))
            .max_decoding_message_size(limit),
        )
        .add_service(
            v1::contact_service_server::ContactServiceServer::new(api::contacts::Contacts(
                gw.clone(),
            ))
            .max_decoding_message_size(limit),
        )
        .add_service(
            v1::custom_field_service_server::CustomFieldServiceServer::new(
                api::custom_fields::CustomFields(gw.clone()),
            )
            .max_decoding_message_size(limit),
        )
        .add_service(
            v1::product_service_server::ProductServiceServer::new(api::products::Products(
                gw.clone(),
            ))
            .max_decoding_message_size(limit),
        )
        .add_service(
            v1::order_service_server::OrderServiceServer::new(api::orders::Orders(gw.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            v1::directory_service_server::DirectoryServiceServer::new(api::directory::Directory(
                gw.clone(),
            ))
            .max_decoding_message_size(limit),
        )
        .add_service(
            v1::access_service_server::AccessServiceServer::new(api::access::Access(gw.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            crm_api::google::longrunning::operations_server::OperationsServer::new(
                api::operations::Operations(gw.clone()),
            )
            .max_decoding_message_size(limit),
        )
        .add_service(
            v1::lead_service_server::LeadServiceServer::new(api::leads::Leads(gw.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            v1::analytics_service_server::AnalyticsServiceServer::new(api::analytics::Analytics(
                gw.clone(),
            ))
            .max_decoding_message_size(limit),
        )
        .add_service(
            v1::import_service_server::ImportServiceServer::new(api::imports::Imports(gw.clone()))
                // Upload messages carry up to a chunk of bytes, whatever the general limit.
                .max_decoding_message_size(
                    limit.max(crm_operational::import::upload::MAX_CHUNK_BYTES + 64 * 1024),
                ),
        )
        .add_service(
            v1::activity_service_server::ActivityServiceServer::new(api::activities::Activities(
                gw.clone(),
            ))
            .max_decoding_message_size(limit),
        )
        .add_service(
            v1::opportunity_service_server::OpportunityServiceServer::new(
                api::opportunities::Opportunities(gw.clone()),
            )
            .max_decoding_message_size(limit),
        )
        .add_service(
            v1::consent_service_server::ConsentServiceServer::new(api::consents::Consents(
                gw.clone(),
            ))
            .max_decoding_message_size(limit),
        )
        .add_service(
            v1::duplicate_service_server::DuplicateServiceServer::new(api::duplicates::Duplicates(
                gw.clone(),
            ))
            .max_decoding_message_size(limit),
        )
        .add_service(
            v1::merge_service_server::MergeServiceServer::new(api::merges::Merges(gw.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            // Raw e-mails are accepted up to the intake limit (25 MiB), above the general one.
            v1::timeline_service_server::TimelineServiceServer::new(api::timeline::Timeline(
                gw.clone(),
            ))
            .max_decoding_message_size(limit.max(TIMELINE_MAX_REQUEST_BYTES)),
        )
        .add_service(
            v1::case_service_server::CaseServiceServer::new(api::cases::Cases(gw.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            v1::webhook_service_server::WebhookServiceServer::new(api::webhooks::Webhooks(
                gw.clone(),
            ))
            .max_decoding_message_size(limit),
        )
        .add_service(
            v1::mailbox_service_server::MailboxServiceServer::new(api::mailboxes::Mailboxes(
                gw.clone(),
            ))
            .max_decoding_message_size(limit),
        )
        .add_service(
            v1::event_service_server::EventServiceServer::new(api::events::Events(gw.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            v1::audit_service_server::AuditServiceServer::new(api::audit::Audit(gw))
                .max_decoding_message_size(limit),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    // In-flight RPCs are drained; now the jobs (handlers told to stop, the unfinished given
    // back to the queue).
    jobs.stop().await;
    events.stop().await;
    served.map_err(|e| format!("server: {e}"))
}

async fn set_all(reporter: &tonic_health::server::HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for s in SERVICES {
        reporter.set_service_status(*s, status).await;
    }
}

/// Opens and migrates the database, retrying with backoff until it works, then publishes it to
/// the services and keeps health in step with it.
async fn prepare_database(
    settings: Settings,
    cell: Arc<std::sync::OnceLock<Db>>,
    reporter: tonic_health::server::HealthReporter,
    jobs: Arc<JobRunner>,
    events: Arc<EventTasks>,
) {
    let mut delay = Duration::from_millis(500);
    let db = loop {
        match open_database(&settings).await {
            Ok(db) => break db,
            Err(e) => {
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "database not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let _ = cell.set(db.clone());
    jobs.start(&db).await;
    events.start(&db).await;
    watch_database(db, reporter).await;
}

/// How often health pings the database while it answers, and while it does not.
const PING_EVERY: Duration = Duration::from_secs(2);
const PING_EVERY_WHILE_DOWN: Duration = Duration::from_secs(1);
/// The longest a health ping may take (or `database.statement_timeout_ms` if smaller).
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Pings the database every 2 s (every second while it fails) and mirrors the result in
/// health. Each ping is bounded, so a partition (no answer, no reset) turns health
/// NOT_SERVING within about 4 s, and SERVING again within about a second of it healing.
async fn watch_database(db: Db, reporter: tonic_health::server::HealthReporter) {
    let ping_timeout = PING_TIMEOUT.min(db.timeout());
    let mut last: Option<bool> = None;
    loop {
        let result = db.ping_within(ping_timeout).await;
        let ok = result.is_ok();
        if last != Some(ok) {
            match &result {
                Ok(()) => {
                    tracing::info!("database reachable: serving");
                    set_all(&reporter, ServingStatus::Serving).await;
                }
                Err(e) => {
                    tracing::warn!(error = %explain(e), "database unreachable: not serving");
                    set_all(&reporter, ServingStatus::NotServing).await;
                }
            }
            last = Some(ok);
        }
        let pause = if ok {
            PING_EVERY
        } else {
            PING_EVERY_WHILE_DOWN
        };
        tokio::time::sleep(pause).await;
    }
}
