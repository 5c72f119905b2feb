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
use tower_http::cors::{Any, CorsLayer};

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
];

/// Connects and migrates the database.
pub async fn open_database(settings: &Settings) -> Result<Db, String> {
    let db = Db::connect(&settings.database.url, settings.database.max_connections)
        .await
        .map_err(|e| format!("cannot open the database: {e}"))?;
    Migrator::up(&db.conn, None)
        .await
        .map_err(|e| format!("migration failed: {e}"))?;
    Ok(db)
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
    let (reporter, health) = tonic_health::server::health_reporter();
    set_all(&reporter, ServingStatus::NotServing).await;

    let db = Arc::new(std::sync::OnceLock::new());
    tokio::spawn(prepare_database(settings.clone(), db.clone(), reporter));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gw = Gateway {
        db,
        verifier,
        clock,
        policies: Arc::new(crm_core::tenant::PolicyCache::new(Duration::from_millis(
            settings.auth.policy_cache_ms,
        ))),
    };

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crm_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;

    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_headers(Any)
        .allow_methods(Any)
        .expose_headers(Any);
    // No Nagle delay: small responses must not wait for the peer's delayed ACK.
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    Server::builder()
        .accept_http1(true)
        .layer(cors)
        .layer(tonic_web::GrpcWebLayer::new())
        .add_service(health)
        .add_service(reflection)
        .add_service(v1::account_service_server::AccountServiceServer::new(
            api::accounts::Accounts(gw.clone()),
        ))
        .add_service(v1::contact_service_server::ContactServiceServer::new(
            api::contacts::Contacts(gw.clone()),
        ))
        .add_service(
            v1::custom_field_service_server::CustomFieldServiceServer::new(
                api::custom_fields::CustomFields(gw.clone()),
            ),
        )
        .add_service(v1::product_service_server::ProductServiceServer::new(
            api::products::Products(gw.clone()),
        ))
        .add_service(v1::order_service_server::OrderServiceServer::new(
            api::orders::Orders(gw.clone()),
        ))
        .add_service(v1::directory_service_server::DirectoryServiceServer::new(
            api::directory::Directory(gw.clone()),
        ))
        .add_service(v1::access_service_server::AccessServiceServer::new(
            api::access::Access(gw.clone()),
        ))
        .add_service(v1::audit_service_server::AuditServiceServer::new(
            api::audit::Audit(gw),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| format!("server: {e}"))
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
    watch_database(db, reporter).await;
}

/// Pings the database every few seconds and mirrors the result in health.
async fn watch_database(db: Db, reporter: tonic_health::server::HealthReporter) {
    let mut last: Option<bool> = None;
    loop {
        let ok = db.ping().await.is_ok();
        if last != Some(ok) {
            if ok {
                tracing::info!("database reachable: serving");
                set_all(&reporter, ServingStatus::Serving).await;
            } else {
                tracing::warn!("database unreachable: not serving");
                set_all(&reporter, ServingStatus::NotServing).await;
            }
            last = Some(ok);
        }
        tokio::time::sleep(Duration::from_secs(if ok { 5 } else { 1 })).await;
    }
}
