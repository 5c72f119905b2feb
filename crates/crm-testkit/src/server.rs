//! A real gateway on an ephemeral port, with its generated clients and tokens.

use crate::db::{Backend, TestDb};
use crate::engine;
use crm_api::v1;
use crm_core::access::Policy;
use crm_core::auth::{Principal, mint_hs256};
use crm_core::db::Db;
use crm_core::service::Ctx;
use crm_gateway::config::Settings;
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use uuid::Uuid;

/// The HS256 secret [`TestServer`]s verify tokens with.
pub const SECRET: &str = "test-secret-0123456789abcdef";
/// The issuer (`iss`) of tokens from [`mint_token`]: the gateway's default.
pub const ISSUER: &str = "crm";
/// The audience (`aud`) of tokens from [`mint_token`]: the gateway's default.
pub const AUDIENCE: &str = "crm-api";

/// A bearer token (HS256 with [`SECRET`], [`ISSUER`], [`AUDIENCE`], valid for an hour from
/// now) for `user` of `tenant` holding the role keys `roles`.
pub fn mint_token(tenant: &str, user: Uuid, roles: &[&str]) -> String {
    let p = Principal {
        tenant: tenant.into(),
        user,
        roles: roles.iter().map(|r| (*r).to_string()).collect(),
    };
    mint_hs256(
        SECRET.as_bytes(),
        ISSUER,
        AUDIENCE,
        &p,
        chrono::Utc::now().timestamp(),
        3600,
    )
    .unwrap()
}

/// A gateway (`crm_gateway::server::serve`) serving a private database on `127.0.0.1` and an
/// ephemeral port, ready (health SERVING, database migrated) when returned; stopped on drop.
///
/// Its settings: the database URL, a pool of 8, tokens verified with [`SECRET`], and no
/// policy cache (a role change or a tenant suspension applies to the next call).
pub struct TestServer {
    /// Where the gateway listens.
    pub addr: SocketAddr,
    /// The test's own connection to the database (a pool of 2), next to the gateway's.
    pub db: Db,
    /// A lazily connected channel to the gateway.
    pub channel: Channel,
    /// The settings the gateway runs with.
    pub settings: Settings,
    shutdown: Option<oneshot::Sender<()>>,
    // Declared last: dropped after the server stopped.
    /// The database behind the gateway.
    pub test_db: TestDb,
}

impl TestServer {
    /// Starts a gateway on a fresh database of `backend`.
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts with adjusted settings (applied after the kit's own).
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestServer {
        let test_db = TestDb::new(backend).await;
        Self::start_configured(test_db, None, adjust).await
    }

    /// Starts on a database; `gateway_url` overrides the URL the gateway uses (e.g. through
    /// a proxy) while the test keeps its own connection.
    pub async fn start_on(test_db: TestDb, gateway_url: Option<String>) -> TestServer {
        Self::start_configured(test_db, gateway_url, |_| {}).await
    }

    /// [`TestServer::start_on`] with adjusted settings (applied after the kit's own).
    pub async fn start_on_with(
        test_db: TestDb,
        gateway_url: Option<String>,
        adjust: impl FnOnce(&mut Settings),
    ) -> TestServer {
        Self::start_configured(test_db, gateway_url, adjust).await
    }

    async fn start_configured(
        test_db: TestDb,
        gateway_url: Option<String>,
        adjust: impl FnOnce(&mut Settings),
    ) -> TestServer {
        let mut settings = Settings::default();
        settings.database.url = gateway_url.unwrap_or_else(|| test_db.url.clone());
        settings.database.max_connections = 8;
        // Tests share two cores with each other and with their databases: a call may wait
        // longer than production's bound without anything being wrong. Tests of the bound
        // itself set their own.
        settings.database.statement_timeout_ms = 30_000;
        settings.auth.hs256_secret = SECRET.into();
        // Tests change roles and suspend tenants and expect the next call to see it.
        settings.auth.policy_cache_ms = 0;
        adjust(&mut settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let s = settings.clone();
        tokio::spawn(async move {
            if let Err(e) = crm_gateway::server::serve(s, listener, async {
                let _ = rx.await;
            })
            .await
            {
                eprintln!("server failed: {e}");
            }
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        // Wait for SERVING.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if let Ok(r) = r
                && r.get_ref().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gateway did not become ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let db = Db::connect(&test_db.url, 2).await.unwrap();
        TestServer {
            addr,
            db,
            channel,
            settings,
            shutdown: Some(tx),
            test_db,
        }
    }

    /// Creates a tenant (with its admin role).
    pub async fn tenant(&self, id: &str) {
        engine::create_tenant(&self.db, id).await;
    }

    /// A token for `user` of `tenant` with the role keys `roles` ([`mint_token`]).
    pub fn token(&self, tenant: &str, user: Uuid, roles: &[&str]) -> String {
        mint_token(tenant, user, roles)
    }

    /// A superuser context on the same database, bypassing the gateway
    /// ([`superuser_ctx`](crate::superuser_ctx)).
    pub fn admin_ctx(&self, tenant: &str) -> Ctx {
        engine::superuser_ctx(&self.db, tenant)
    }

    /// A context for `user` of `tenant` with `policy` on the same database, bypassing the
    /// gateway ([`policy_ctx`](crate::policy_ctx)).
    pub fn ctx(&self, tenant: &str, user: Uuid, policy: Policy) -> Ctx {
        engine::policy_ctx(&self.db, tenant, user, policy)
    }

    /// A context for `user` of `tenant` with the tenant's roles `roles` on the same database,
    /// bypassing the gateway ([`roles_ctx`](crate::roles_ctx)).
    pub async fn ctx_for_roles(&self, tenant: &str, user: Uuid, roles: &[&str]) -> Ctx {
        engine::roles_ctx(&self.db, tenant, user, roles).await
    }

    /// A client of `crm.v1.AccountService`.
    pub fn accounts(&self) -> v1::account_service_client::AccountServiceClient<Channel> {
        v1::account_service_client::AccountServiceClient::new(self.channel.clone())
    }
    /// A client of `crm.v1.ContactService`.
    pub fn contacts(&self) -> v1::contact_service_client::ContactServiceClient<Channel> {
        v1::contact_service_client::ContactServiceClient::new(self.channel.clone())
    }
    /// A client of `crm.v1.ProductService`.
    pub fn products(&self) -> v1::product_service_client::ProductServiceClient<Channel> {
        v1::product_service_client::ProductServiceClient::new(self.channel.clone())
    }
    /// A client of `crm.v1.OrderService`.
    pub fn orders(&self) -> v1::order_service_client::OrderServiceClient<Channel> {
        v1::order_service_client::OrderServiceClient::new(self.channel.clone())
    }
    /// A client of `crm.v1.DirectoryService`.
    pub fn directory(&self) -> v1::directory_service_client::DirectoryServiceClient<Channel> {
        v1::directory_service_client::DirectoryServiceClient::new(self.channel.clone())
    }
    /// A client of `crm.v1.AccessService`.
    pub fn access(&self) -> v1::access_service_client::AccessServiceClient<Channel> {
        v1::access_service_client::AccessServiceClient::new(self.channel.clone())
    }
    /// A client of `crm.v1.AuditService`.
    pub fn audit(&self) -> v1::audit_service_client::AuditServiceClient<Channel> {
        v1::audit_service_client::AuditServiceClient::new(self.channel.clone())
    }
    /// A client of `crm.v1.CustomFieldService`.
    pub fn custom_fields(
        &self,
    ) -> v1::custom_field_service_client::CustomFieldServiceClient<Channel> {
        v1::custom_field_service_client::CustomFieldServiceClient::new(self.channel.clone())
    }

    /// A client of `crm.v1.ActivityService`.
    pub fn activities(&self) -> v1::activity_service_client::ActivityServiceClient<Channel> {
        v1::activity_service_client::ActivityServiceClient::new(self.channel.clone())
    }

    /// A client of `crm.v1.OpportunityService`.
    pub fn opportunities(
        &self,
    ) -> v1::opportunity_service_client::OpportunityServiceClient<Channel> {
        v1::opportunity_service_client::OpportunityServiceClient::new(self.channel.clone())
    }

    /// A client of `crm.v1.LeadService`.
    pub fn leads(&self) -> v1::lead_service_client::LeadServiceClient<Channel> {
        v1::lead_service_client::LeadServiceClient::new(self.channel.clone())
    }

    /// A client of `crm.v1.DuplicateService`.
    pub fn duplicates(&self) -> v1::duplicate_service_client::DuplicateServiceClient<Channel> {
        v1::duplicate_service_client::DuplicateServiceClient::new(self.channel.clone())
    }

    /// A client of `crm.v1.MergeService`.
    pub fn merges(&self) -> v1::merge_service_client::MergeServiceClient<Channel> {
        v1::merge_service_client::MergeServiceClient::new(self.channel.clone())
    }

    /// A client of `crm.v1.AnalyticsService`.
    pub fn analytics(&self) -> v1::analytics_service_client::AnalyticsServiceClient<Channel> {
        v1::analytics_service_client::AnalyticsServiceClient::new(self.channel.clone())
    }

    /// A client of `crm.v1.ImportService`.
    pub fn imports(&self) -> v1::import_service_client::ImportServiceClient<Channel> {
        v1::import_service_client::ImportServiceClient::new(self.channel.clone())
    }

    /// A client of `crm.v1.TimelineService`.
    pub fn timeline(&self) -> v1::timeline_service_client::TimelineServiceClient<Channel> {
        v1::timeline_service_client::TimelineServiceClient::new(self.channel.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// A client of `crm.v1.CaseService`.
    pub fn cases(&self) -> v1::case_service_client::CaseServiceClient<Channel> {
        v1::case_service_client::CaseServiceClient::new(self.channel.clone())
    }

    /// A client of `crm.v1.MailboxService`.
    pub fn mailboxes(&self) -> v1::mailbox_service_client::MailboxServiceClient<Channel> {
        v1::mailbox_service_client::MailboxServiceClient::new(self.channel.clone())
    }

    /// A client of `crm.v1.WebhookService`.
    pub fn webhooks(&self) -> v1::webhook_service_client::WebhookServiceClient<Channel> {
        v1::webhook_service_client::WebhookServiceClient::new(self.channel.clone())
    }

    /// The operation `name` once it is done, waited for with `WaitOperation` in 2 s steps
    /// (panics after two minutes).
    pub async fn wait_operation(
        &self,
        token: &str,
        name: &str,
    ) -> crm_api::google::longrunning::Operation {
        use crm_api::google::longrunning as lro;
        let mut ops = lro::operations_client::OperationsClient::new(self.channel.clone());
        for _ in 0..60 {
            let op = ops
                .wait_operation(crate::req(
                    token,
                    lro::WaitOperationRequest {
                        name: name.into(),
                        timeout: Some(prost_types::Duration {
                            seconds: 2,
                            nanos: 0,
                        }),
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            if op.done {
                return op;
            }
        }
        panic!("operation {name} did not finish")
    }

    /// Rows of a table for a tenant (deleted ones included).
    pub async fn count(&self, table: &str, tenant: &str) -> i64 {
        crm_core::store::count(&self.db.conn, table, tenant)
            .await
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
