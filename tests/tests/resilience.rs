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

/// A TCP proxy in front of PostgreSQL that can be cut and restored, or stalled: a stalled
/// proxy forwards no byte in either direction but keeps every socket open (no RST, no FIN),
/// as a network partition looks to both ends.
struct Proxy {
    port: u16,
    target: String,
    tasks: Arc<Mutex<JoinSet<()>>>,
    stalled: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Proxy {
            port,
            target,
            tasks: Arc::new(Mutex::new(JoinSet::new())),
            stalled: Arc::new(tokio::sync::watch::channel(false).0),
        };
        p.serve(listener).await;
        p
    }

    async fn serve(&self, listener: TcpListener) {
        let target = self.target.clone();
        let tasks = self.tasks.clone();
        let stalled = self.stalled.clone();
        self.tasks.lock().await.spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                let stalled = stalled.clone();
                tasks.lock().await.spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(&target).await {
                        let (from_client, to_client) = inbound.into_split();
                        let (from_server, to_server) = outbound.into_split();
                        tokio::join!(
                            pump(from_client, to_server, stalled.subscribe()),
                            pump(from_server, to_client, stalled.subscribe()),
                        );
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

    /// Stops forwarding bytes; sockets stay open and new connections are still accepted.
    fn stall(&self) {
        self.stalled.send_replace(true);
    }

    fn unstall(&self) {
        self.stalled.send_replace(false);
    }
}

/// Copies `from` to `to` while the proxy is not stalled; passes EOF on as a FIN.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Bytes read just as the stall began are held back too.
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
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

/// One call of the background load.
#[derive(Debug, Clone)]
struct Call {
    #[allow(dead_code)] // shown when an assertion fails
    rpc: &'static str,
    start: Instant,
    took: Duration,
    code: Code,
    message: String,
}

fn outcome<T>(rpc: &'static str, start: Instant, r: Result<T, tonic::Status>) -> Call {
    let took = start.elapsed();
    match r {
        Ok(_) => Call {
            rpc,
            start,
            took,
            code: Code::Ok,
            message: String::new(),
        },
        Err(s) => Call {
            rpc,
            start,
            took,
            code: s.code(),
            message: s.message().to_owned(),
        },
    }
}

/// A database that stops answering without closing anything (a partition: no RST, no FIN):
/// every call ends within a bound instead of hanging, health turns NOT_SERVING, a client's
/// deadline is honoured, and everything recovers by itself when the partition heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_partition_is_bounded_and_recovers() {
    const STATEMENT_TIMEOUT_MS: u64 = 1500;
    // No call may take longer than this during the partition (the bound is 1.5 s).
    const CALL_BOUND: Duration = Duration::from_secs(8);
    let server = crm_tests::postgres_server();
    let test_db = TestDb::new(Backend::Postgres).await;
    let proxy = Proxy::start(host_port(&server)).await;
    let via_proxy = proxy.url_for(&server, &test_db);
    let s = TestServer::start_on_with(test_db, Some(via_proxy), |st| {
        st.database.statement_timeout_ms = STATEMENT_TIMEOUT_MS;
    })
    .await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let body = || CreateContactRequest {
        contact: Some(Contact {
            given_name: "Ann".into(),
            ..Default::default()
        }),
        request_id: String::new(),
    };

    // A light load: two clients, each a create and a list about every 100 ms.
    let calls = Arc::new(std::sync::Mutex::new(Vec::<Call>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = JoinSet::new();
    for _ in 0..2 {
        let (calls, stop, t, mut c) = (calls.clone(), stop.clone(), t.clone(), s.contacts());
        load.spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let start = Instant::now();
                let r = c.create_contact(req(&t, body())).await;
                calls.lock().unwrap().push(outcome("create", start, r));
                let start = Instant::now();
                let r = c
                    .list_contacts(req(&t, ListContactsRequest::default()))
                    .await;
                calls.lock().unwrap().push(outcome("list", start, r));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    {
        let calls = calls.lock().unwrap();
        assert!(calls.len() >= 4, "the load runs: {calls:?}");
        assert!(calls.iter().all(|c| c.code == Code::Ok), "{calls:?}");
    }
    let health = tonic_health::pb::health_client::HealthClient::new(s.channel.clone());
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let check = tonic_health::pb::HealthCheckRequest {
        service: "crm.v1.ContactService".into(),
    };
    let status_now = |mut h: tonic_health::pb::health_client::HealthClient<_>| {
        let check = check.clone();
        async move { h.check(check).await.unwrap().into_inner().status }
    };
    assert_eq!(status_now(health.clone()).await, serving);

    proxy.stall();
    let stalled_at = Instant::now();
    let mut c = s.contacts();

    // (3) A call with a 1 s deadline ends at its deadline, not later.
    let mut r = req(&t, ListContactsRequest::default());
    r.set_timeout(Duration::from_secs(1));
    let start = Instant::now();
    let res = c.list_contacts(r).await;
    let deadline_call = start.elapsed();
    let st = res.expect_err("the database does not answer");
    assert!(
        matches!(st.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{st:?}"
    );
    assert!(
        deadline_call < Duration::from_millis(1500),
        "{deadline_call:?}"
    );

    // (2) Health turns NOT_SERVING within about 5 s.
    let not_serving_after = loop {
        if status_now(health.clone()).await != serving {
            break stalled_at.elapsed();
        }
        assert!(
            stalled_at.elapsed() < Duration::from_secs(7),
            "health stayed SERVING during the partition"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // (1) A new call answers UNAVAILABLE within the bound, saying why.
    let start = Instant::now();
    let res = c.create_contact(req(&t, body())).await;
    let new_call = start.elapsed();
    let st = expect_code(res, Code::Unavailable);
    assert!(st.message().contains("did not answer"), "{}", st.message());
    assert!(new_call < CALL_BOUND, "{new_call:?}");

    // The partition lasts 6 s in all.
    tokio::time::sleep_until((stalled_at + Duration::from_secs(6)).into()).await;
    proxy.unstall();
    let healed_at = Instant::now();

    // (4) Health turns SERVING again and calls succeed, without a restart.
    let serving_after = loop {
        if status_now(health.clone()).await == serving {
            break healed_at.elapsed();
        }
        assert!(
            healed_at.elapsed() < Duration::from_secs(15),
            "health did not return to SERVING"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let recovered_after = loop {
        match c.create_contact(req(&t, body())).await {
            Ok(_) => break healed_at.elapsed(),
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                assert!(
                    healed_at.elapsed() < Duration::from_secs(15),
                    "did not recover: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    c.list_contacts(req(&t, ListContactsRequest::default()))
        .await
        .unwrap();
    // Let the load see the recovery too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while load.join_next().await.is_some() {}

    let calls = calls.lock().unwrap().clone();
    let mut in_partition = 0;
    let mut slowest = Duration::ZERO;
    for call in &calls {
        assert!(call.took < CALL_BOUND, "a call hung: {call:?}");
        let end = call.start + call.took;
        if end > stalled_at && call.start < healed_at {
            // Started or ended during the partition.
            slowest = slowest.max(call.took);
            if call.code != Code::Ok {
                in_partition += 1;
                assert_eq!(call.code, Code::Unavailable, "{call:?}");
                assert!(call.message.contains("did not answer"), "{call:?}");
            }
        } else if end <= stalled_at {
            assert_eq!(call.code, Code::Ok, "before the partition: {call:?}");
        }
    }
    assert!(in_partition > 0, "the load met the partition: {calls:?}");
    assert!(
        calls
            .iter()
            .any(|c| c.start >= healed_at + recovered_after && c.code == Code::Ok),
        "the load recovered: {calls:?}"
    );
    eprintln!(
        "partition: client deadline call ended after {deadline_call:?}; \
         NOT_SERVING after {not_serving_after:?}; new call UNAVAILABLE after {new_call:?}; \
         slowest load call {slowest:?} ({in_partition} failed); \
         healed: SERVING after {serving_after:?}, first create OK after {recovered_after:?}"
    );
}
