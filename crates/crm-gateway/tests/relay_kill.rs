//! The real binary killed with SIGKILL while its relay publishes the outbox to NATS
//! JetStream, then started again: every committed event is on the stream exactly once (a
//! batch published but not yet marked is published again and dropped by JetStream's
//! de-duplication on the event id), on SQLite and on PostgreSQL. Needs `CRM_TEST_NATS_URL`
//! (a JetStream server; scripts/test starts one) and, for PostgreSQL, `CRM_TEST_POSTGRES_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use common::{authed, free_port, serve};
use crm_api::v1::{self, contact_service_client::ContactServiceClient};
use sea_orm::{ConnectionTrait, Database, Statement};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

mod common;

const SERVICE: &str = "crm.v1.ContactService";
const CONTACTS: usize = 1_500;

#[tokio::test]
async fn the_relay_survives_kill_9_of_crm_serve_sqlite() {
    common::on_sqlite("relay", |dir, db| async move {
        killed_mid_relay(&dir, &db).await
    })
    .await;
}

#[tokio::test]
async fn the_relay_survives_kill_9_of_crm_serve_postgres() {
    common::on_postgres("relay", |dir, db| async move {
        killed_mid_relay(&dir, &db).await
    })
    .await;
}

fn nats_url() -> String {
    std::env::var("CRM_TEST_NATS_URL").expect(
        "CRM_TEST_NATS_URL must name a NATS server with JetStream (scripts/test starts one)",
    )
}

async fn jetstream() -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(nats_url()).await.unwrap())
}

/// Messages in the stream (0 before the relay made it).
async fn stream_count(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}

/// The `Nats-Msg-Id` of every message of the stream, in stream order.
async fn stream_ids(js: &async_nats::jetstream::Context, stream: &str) -> Vec<String> {
    let mut s = js.get_stream(stream).await.unwrap();
    let state = s.info().await.unwrap().state.clone();
    let mut ids = Vec::new();
    if state.messages == 0 {
        return ids;
    }
    for seq in state.first_sequence..=state.last_sequence {
        let m = s.get_raw_message(seq).await.unwrap();
        ids.push(
            m.headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default(),
        );
    }
    ids
}

async fn killed_mid_relay(dir: &std::path::Path, db_url: &str) {
    let port = free_port();
    let token = common::tenant_and_token(dir, db_url, port);
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let stream = format!("K{tag}");
    let relay_env = vec![
        ("CRM__EVENTS__NATS_URL", nats_url()),
        ("CRM__EVENTS__SUBJECT_PREFIX", format!("k{tag}")),
        ("CRM__EVENTS__STREAM", stream.clone()),
        ("CRM__EVENTS__POLL_INTERVAL_MS", "20".to_owned()),
        // Small claims, one at a time: the kill lands while most events wait.
        ("CRM__EVENTS__BATCH_SIZE", "10".to_owned()),
        ("CRM__EVENTS__CONCURRENCY", "1".to_owned()),
        ("CRM__EVENTS__RETRY_BASE_MS", "50".to_owned()),
        ("CRM__EVENTS__RETRY_MAX_MS", "300".to_owned()),
    ];

    // 1. Changes committed while no relay runs: they wait in the outbox.
    let mut quiet = serve(dir, db_url, port, "serve-1.log", SERVICE, &[]).await;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut contacts = ContactServiceClient::new(channel.clone());
        let token = token.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..CONTACTS).step_by(8) {
                contacts
                    .create_contact(authed(
                        &token,
                        v1::CreateContactRequest {
                            contact: Some(v1::Contact {
                                given_name: format!("Relay{i}"),
                                family_name: "Kill".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    quiet.kill().unwrap();
    quiet.wait().unwrap();

    let db = Database::connect(db_url).await.unwrap();
    let events: BTreeSet<String> = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id FROM outbox_events WHERE tenant_id = 'acme'",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<uuid::Uuid>("", "id").unwrap().to_string())
        .collect();
    assert!(events.len() >= CONTACTS, "{} events", events.len());

    // 2. The relay starts publishing; the process is killed once the first are out.
    let js = jetstream().await;
    let mut relaying = serve(dir, db_url, port, "serve-2.log", SERVICE, &relay_env).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let n = stream_count(&js, &stream).await;
        if n > 0 {
            relaying.kill().unwrap(); // SIGKILL
            relaying.wait().unwrap();
            break n;
        }
        assert!(Instant::now() < deadline, "the relay published nothing");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let at_kill = usize::try_from(at_kill).unwrap();
    assert!(
        at_kill < events.len(),
        "the relay had published everything ({at_kill}) before the kill"
    );

    // 3. Started again: the rest is published, nothing twice.
    let mut again = serve(dir, db_url, port, "serve-3.log", SERVICE, &relay_env).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = crm_core::outbox::pending(&db).await.unwrap();
        let n = stream_count(&js, &stream).await;
        if pending == 0 && usize::try_from(n).unwrap() >= events.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all published: {pending} pending, {n} of {} on the stream",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    again.kill().unwrap();
    again.wait().unwrap();
    let ids = stream_ids(&js, &stream).await;
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "an event was stored twice");
    assert_eq!(unique, events, "the stream and the outbox differ");
    let _ = js.delete_stream(&stream).await;
}
