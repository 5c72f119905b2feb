//! Bad bytes on the wire, and the database going away mid-flight.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::v1::*;
use crm_tests::{Backend, TestDb, TestServer, expect_code, req};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tonic::Code;
use uuid::Uuid;

#[derive(Clone, PartialEq, prost::Message)]
struct RawContact {
    #[prost(bytes = "vec", tag = "2")]
    given_name: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawCreate {
    #[prost(message, optional, tag = "1")]
    contact: Option<RawContact>,
}

async fn non_utf8_strings_are_invalid_argument(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let mut grpc = tonic::client::Grpc::new(s.channel.clone());
    grpc.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<RawCreate, Contact> = tonic_prost::ProstCodec::default();
    let path = http::uri::PathAndQuery::from_static("/crm.v1.ContactService/CreateContact");
    let r = grpc
        .unary(
            req(
                &t,
                RawCreate {
                    contact: Some(RawContact {
                        given_name: vec![0xff, 0xfe, b'a'],
                    }),
                },
            ),
            path,
            codec,
        )
        .await;
    let st = expect_code(r, Code::InvalidArgument);
    assert!(
        st.message().contains("not valid protobuf"),
        "{}",
        st.message()
    );
    assert_eq!(s.count("contacts", "acme").await, 0);
}

crm_tests::both!(non_utf8_strings_are_invalid_argument);

/// A TCP proxy in front of PostgreSQL that can be cut and restored.
struct Proxy {
    port: u16,
    target: String,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Proxy {
            port,
            target,
            tasks: Arc::new(Mutex::new(JoinSet::new())),
        };
        p.serve(listener).await;
        p
    }

    async fn serve(&self, listener: TcpListener) {
        let target = self.target.clone();
        let tasks = self.tasks.clone();
        self.tasks.lock().await.spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                tasks.lock().await.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
    }

    /// The URL of `test_db` reached through this proxy (`server` names the user).
    fn url_for(&self, server: &str, test_db: &TestDb) -> String {
        let db_name = test_db.url.rsplit('/').next().unwrap();
        let user = server
            .split("://")
            .nth(1)
            .unwrap()
            .split('@')
            .next()
            .unwrap();
        format!("postgres://{user}@127.0.0.1:{}/{db_name}", self.port)
    }

    /// Drops every connection and stops listening.
    async fn cut(&self) {
        self.tasks.lock().await.abort_all();
    }

    async fn restore(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener).await;
    }
}

/// `postgres://user@host:port` -> `host:port`.
fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap();
    let rest = rest.rsplit('@').next().unwrap();
    rest.split('/').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_is_unavailable_and_recovers() {
    let server = crm_tests::postgres_server();
    let test_db = TestDb::new(Backend::Postgres).await;
    let proxy = Proxy::start(host_port(&server)).await;
    let via_proxy = proxy.url_for(&server, &test_db);
    let s = TestServer::start_on(test_db, Some(via_proxy)).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let mut c = s.contacts();
    let body = || CreateContactRequest {
        contact: Some(Contact {
            given_name: "Ann".into(),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    c.create_contact(req(&t, body())).await.unwrap();

    proxy.cut().await;
    let r = c.create_contact(req(&t, body())).await;
    let st = expect_code(r, Code::Unavailable);
    assert!(
        !st.message().contains("postgres://"),
        "no connection details leak: {}",
        st.message()
    );
    let r = c
        .list_contacts(req(&t, ListContactsRequest::default()))
        .await;
    expect_code(r, Code::Unavailable);

    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.create_contact(req(&t, body())).await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                assert!(Instant::now() < deadline, "did not recover: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Exactly the committed creates exist, each with its event.
    let rows = s.count("contacts", "acme").await;
    assert_eq!(rows, 2);
    assert_eq!(
        crm_core::journal::list_events(&s.db.conn, "acme", 100)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.collection == "contacts")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_until_the_database_is_ready() {
    let server = crm_tests::postgres_server();
    let test_db = TestDb::new(Backend::Postgres).await;
    let proxy = Proxy::start(host_port(&server)).await;
    proxy.cut().await;
    let mut settings = crm_gateway::config::Settings::default();
    settings.database.url = proxy.url_for(&server, &test_db);
    settings.auth.hs256_secret = crm_tests::SECRET.into();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(crm_gateway::server::serve(settings, listener, async {
        let _ = rx.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let check = tonic_health::pb::HealthCheckRequest {
        service: "crm.v1.ContactService".into(),
    };
    // The port answers at once, but not as serving, and RPCs are UNAVAILABLE.
    let st = health
        .check(check.clone())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_ne!(st, serving);
    let token = {
        let p = crm_core::auth::Principal {
            tenant: "acme".into(),
            user: Uuid::now_v7(),
            roles: vec!["admin".into()],
        };
        crm_core::auth::mint_hs256(
            crm_tests::SECRET.as_bytes(),
            "crm",
            "crm-api",
            &p,
            chrono::Utc::now().timestamp(),
            60,
        )
        .unwrap()
    };
    let mut contacts = contact_service_client::ContactServiceClient::new(channel.clone());
    expect_code(
        contacts
            .list_contacts(req(&token, ListContactsRequest::default()))
            .await,
        Code::Unavailable,
    );
    // Without a token it is still UNAUTHENTICATED first.
    expect_code(
        contacts
            .list_contacts(tonic::Request::new(ListContactsRequest::default()))
            .await,
        Code::Unauthenticated,
    );

    // The database comes up: the gateway migrates it and turns SERVING.
    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while health
        .check(check.clone())
        .await
        .unwrap()
        .into_inner()
        .status
        != serving
    {
        assert!(Instant::now() < deadline, "never became SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let db = crm_core::db::Db::connect(&test_db.url, 1).await.unwrap();
    crm_core::tenant::create(&db, &crm_core::clock::SystemClock, "acme", "acme")
        .await
        .unwrap();
    contacts
        .list_contacts(req(&token, ListContactsRequest::default()))
        .await
        .unwrap();
    let _ = tx.send(());
}
