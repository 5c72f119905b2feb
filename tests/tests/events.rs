//! Events (P1): the outbox relay to a real NATS JetStream server (`CRM_TEST_NATS_URL`, which
//! scripts/test provides) and WatchEvents, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::v1::*;
use crm_core::journal;
use crm_tests::{Backend, TestServer, both, expect_code, req, violated_fields};
use prost::Message as _;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;
use uuid::Uuid;

both!(
    every_committed_change_is_published_once_in_order_per_record,
    events_wait_while_nats_is_down_and_are_published_after,
    watch_shows_each_role_what_it_may_read,
    watch_requests_are_validated,
);

fn nats_url() -> String {
    std::env::var("CRM_TEST_NATS_URL").expect(
        "CRM_TEST_NATS_URL must name a NATS server with JetStream (scripts/test starts one)",
    )
}

/// Event settings of one test: its own subject prefix and stream (tests share the server).
fn events(url: &str) -> crm_gateway::config::Events {
    let tag = Uuid::now_v7().simple().to_string();
    crm_gateway::config::Events {
        nats_url: url.into(),
        subject_prefix: format!("t{tag}"),
        stream: format!("T{tag}"),
        poll_interval_ms: 20,
        retry_base_ms: 50,
        retry_max_ms: 300,
        publish_timeout_ms: 2000,
        ..Default::default()
    }
}

/// Every message of a stream, in stream order (empty when the stream does not exist yet).
async fn stream_messages(url: &str, stream: &str) -> Vec<(String, String, Event)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let Ok(mut s) = js.get_stream(stream).await else {
        return vec![];
    };
    let state = s.info().await.unwrap().state.clone();
    let mut out = vec![];
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        let m = s.get_raw_message(seq).await.unwrap();
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push((m.subject.to_string(), id, Event::decode(m.payload).unwrap()));
    }
    out
}

/// Deletes a test's stream from the shared NATS server.
async fn delete_stream(url: &str, stream: &str) {
    let client = async_nats::connect(url).await.unwrap();
    let _ = async_nats::jetstream::new(client)
        .delete_stream(stream)
        .await;
}

async fn pending(s: &TestServer) -> u64 {
    crm_core::outbox::pending(&s.db.conn).await.unwrap()
}

/// Waits until the outbox has nothing unpublished and the stream holds `n` messages.
async fn wait_published(
    s: &TestServer,
    url: &str,
    stream: &str,
    n: usize,
) -> Vec<(String, String, Event)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if pending(s).await == 0 {
            let m = stream_messages(url, stream).await;
            if m.len() >= n {
                return m;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events not published: {} pending, {} in the stream, {n} expected",
            pending(s).await,
            stream_messages(url, stream).await.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_contact(s: &TestServer, token: &str, given: &str, owner: &str) -> Contact {
    s.contacts()
        .create_contact(req(
            token,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: given.into(),
                    family_name: "Muster".into(),
                    owner: owner.into(),
                    phones: vec![Phone {
                        number: "+4930123456".into(),
                        ..Default::default()
                    }],
                    birth_date: Some(crm_api::google::r#type::Date {
                        year: 1980,
                        month: 5,
                        day: 17,
                    }),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn rename(s: &TestServer, token: &str, c: &Contact, given: &str) -> Contact {
    s.contacts()
        .update_contact(req(
            token,
            UpdateContactRequest {
                contact: Some(Contact {
                    name: c.name.clone(),
                    given_name: given.into(),
                    etag: c.etag.clone(),
                    ..Default::default()
                }),
                update_mask: crm_tests::mask(&["given_name"]),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

/// "Every committed change appears exactly once on the stream, none for a rolled-back one, in
/// order per record", and a relay that published without marking (it died in between)
/// publishes again without a second copy on the stream.
async fn every_committed_change_is_published_once_in_order_per_record(backend: Backend) {
    let url = nats_url();
    let ev = events(&url);
    let stream = ev.stream.clone();
    let prefix = ev.subject_prefix.clone();
    let s = TestServer::start_with(backend, |st| st.events = ev).await;
    s.tenant("acme").await;
    let admin = s.token("acme", Uuid::nil(), &["admin"]);
    // The tenant's admin role was evented too.
    let before = journal::list_events(&s.db.conn, "acme", 100)
        .await
        .unwrap()
        .len();
    wait_published(&s, &url, &stream, before).await;
    // A change rolled back (its row and event were written, then the transaction dropped):
    // its event never reaches the stream because it never became visible. (Written while
    // the relay is idle: on SQLite the test's own connection is a second writer.)
    {
        let ctx = s.admin_ctx("acme");
        let tx = ctx.begin().await.unwrap();
        tx.create(crm_core::model::Contact {
            given_name: "Ghost".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        drop(tx);
    }
    let mut contacts = vec![];
    for i in 0..12 {
        contacts.push(create_contact(&s, &admin, &format!("Anna{i}"), "").await);
    }
    // Updates of the same records, interleaved, while the relay publishes.
    for round in 0..3 {
        for c in contacts.iter_mut() {
            *c = rename(&s, &admin, c, &format!("{}-{round}", c.given_name)).await;
        }
    }
    for c in contacts.iter().take(4) {
        s.contacts()
            .delete_contact(req(
                &admin,
                DeleteContactRequest {
                    name: c.name.clone(),
                    etag: c.etag.clone(),
                },
            ))
            .await
            .unwrap();
    }
    let outbox = journal::list_events(&s.db.conn, "acme", 10_000)
        .await
        .unwrap();
    let expected = before + 12 + 12 * 3 + 4;
    assert_eq!(outbox.len(), expected);
    let msgs = wait_published(&s, &url, &stream, expected).await;
    assert_eq!(msgs.len(), expected, "each event exactly once");
    let ids: HashSet<String> = msgs.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(ids.len(), expected, "no event twice");
    let want: HashSet<String> = outbox.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, want, "the message ids are the event ids");
    let mut revisions: HashMap<String, Vec<i64>> = HashMap::new();
    for (subject, id, e) in &msgs {
        assert_eq!(*id, e.id);
        assert_eq!(e.tenant, "acme");
        if e.resource_type != "contacts" {
            continue;
        }
        let verb = match EventVerb::try_from(e.verb).unwrap() {
            EventVerb::Created => "created",
            EventVerb::Updated => "updated",
            EventVerb::Deleted => "deleted",
            other => panic!("unexpected verb {other:?}"),
        };
        assert_eq!(*subject, format!("{prefix}.acme.contacts.{verb}"));
        assert_eq!(e.subject, *subject);
        let data = format!("{:?}", e.data);
        assert!(
            !data.contains("Ghost"),
            "a rolled-back change was published"
        );
        if verb != "deleted" {
            // The relay publishes the whole record, phones and birth date included.
            let d = e.data.as_ref().unwrap();
            assert!(d.fields.contains_key("phones"), "{data}");
            assert!(d.fields.contains_key("birth_date"), "{data}");
        }
        revisions
            .entry(e.resource.clone())
            .or_default()
            .push(e.revision);
    }
    assert_eq!(revisions.len(), 12);
    for (r, revs) in &revisions {
        let mut sorted = revs.clone();
        sorted.sort();
        assert_eq!(*revs, sorted, "events of {r} out of order: {revs:?}");
        assert_eq!(revs[0], 1, "{r} starts with its create");
    }
    // The relay died after JetStream acknowledged and before the rows were marked: the
    // rows are published again, and JetStream's de-duplication keeps one copy.
    let mut q = sea_orm::sea_query::Query::update();
    q.table(sea_orm::sea_query::Alias::new("outbox_events"))
        .value(
            sea_orm::sea_query::Alias::new("published_time"),
            None::<chrono::DateTime<chrono::Utc>>,
        );
    use sea_orm::ConnectionTrait;
    s.db.conn.execute(&q).await.unwrap();
    crm_core::outbox::wake();
    let again = wait_published(&s, &url, &stream, expected).await;
    assert_eq!(again.len(), expected, "a republished event is stored once");
    // Published rows are pruned after the retention.
    let n = crm_core::outbox::prune(
        &s.db,
        chrono::Utc::now() + chrono::Duration::seconds(1),
        false,
        1000,
    )
    .await
    .unwrap();
    assert_eq!(n as usize, expected);
    assert_eq!(s.count("outbox_events", "acme").await, 0);
    delete_stream(&url, &stream).await;
}

/// A NATS server of the test's own on a free port, stopped on drop.
struct PrivateNats {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl PrivateNats {
    fn start(port: u16, dir: &std::path::Path) -> PrivateNats {
        let bin = [
            "nats-server",
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
        ]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok()
        })
        .expect("nats-server is installed (scripts/test installs it)");
        let child = std::process::Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        PrivateNats {
            child,
            dir: dir.to_owned(),
        }
    }

    async fn wait_ready(port: u16) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(mut self) -> std::path::PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.clone()
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// NATS not running when the gateway starts, then started, stopped and started again: the
/// API answers throughout, events wait in the outbox, and every one reaches the stream once.
async fn events_wait_while_nats_is_down_and_are_published_after(backend: Backend) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("nats://127.0.0.1:{port}");
    let dir = crm_tests::temp_dir();
    let ev = events(&url);
    let stream = ev.stream.clone();
    let s = TestServer::start_with(backend, |st| st.events = ev).await;
    s.tenant("acme").await;
    let admin = s.token("acme", Uuid::nil(), &["admin"]);
    let before = journal::list_events(&s.db.conn, "acme", 100)
        .await
        .unwrap()
        .len();
    for i in 0..5 {
        create_contact(&s, &admin, &format!("Down{i}"), "").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pending(&s).await as usize,
        before + 5,
        "events wait while NATS is down"
    );

    let nats = PrivateNats::start(port, &dir.0);
    PrivateNats::wait_ready(port).await;
    wait_published(&s, &url, &stream, before + 5).await;

    // Stopped mid-stream: writes go on; started again on the same store: caught up.
    nats.stop();
    for i in 0..5 {
        create_contact(&s, &admin, &format!("Again{i}"), "").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pending(&s).await > 0, "events wait again");
    let _nats = PrivateNats::start(port, &dir.0);
    PrivateNats::wait_ready(port).await;
    let msgs = wait_published(&s, &url, &stream, before + 10).await;
    let ids: HashSet<String> = msgs.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(msgs.len(), before + 10, "each event once");
    assert_eq!(ids.len(), before + 10);
}

async fn next(
    w: &mut tonic::Streaming<Event>,
    within: Duration,
) -> Option<Result<Event, tonic::Status>> {
    tokio::time::timeout(within, w.next()).await.ok().flatten()
}

/// Reads events until none came for a while.
async fn drain(w: &mut tonic::Streaming<Event>) -> Vec<Event> {
    let mut out = vec![];
    while let Some(e) = next(w, Duration::from_millis(1500)).await {
        out.push(e.unwrap());
    }
    out
}

async fn watch(
    s: &TestServer,
    token: &str,
    r: WatchEventsRequest,
) -> Result<tonic::Streaming<Event>, tonic::Status> {
    crm_api::v1::event_service_client::EventServiceClient::new(s.channel.clone())
        .watch_events(req(token, r))
        .await
        .map(|r| r.into_inner())
}

async fn user(s: &TestServer, token: &str, n: &str, manager: &str) -> String {
    s.directory()
        .create_user(req(
            token,
            CreateUserRequest {
                user: Some(User {
                    display_name: n.into(),
                    email: format!("{n}@acme.example"),
                    manager: manager.into(),
                    active: true,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .name
}

fn id_of(name: &str) -> Uuid {
    Uuid::parse_str(name.rsplit('/').next().unwrap()).unwrap()
}

/// WatchEvents with the demo roles: the admin sees every event, a manager those of their
/// team's records, a rep only their own, without the fields the rep's role hides; another
/// tenant's events never appear; resuming continues after the given event.
async fn watch_shows_each_role_what_it_may_read(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("other").await;
    for r in crm_gateway::demo::roles() {
        s.admin_ctx("acme").create(r, "").await.unwrap();
    }
    let admin = s.token("acme", Uuid::nil(), &["admin"]);
    let boss = user(&s, &admin, "boss", "").await;
    let r1 = user(&s, &admin, "rep1", &boss).await;
    let r2 = user(&s, &admin, "rep2", &boss).await;
    let manager = s.token("acme", id_of(&boss), &["manager"]);
    let rep1 = s.token("acme", id_of(&r1), &["rep"]);
    let other = s.token("other", Uuid::nil(), &["admin"]);
    let contacts = || WatchEventsRequest {
        resource_types: vec!["contacts".into()],
        ..Default::default()
    };
    let mut w_admin = watch(&s, &admin, WatchEventsRequest::default())
        .await
        .unwrap();
    let mut w_manager = watch(&s, &manager, contacts()).await.unwrap();
    let mut w_rep = watch(&s, &rep1, contacts()).await.unwrap();
    let mut w_updates = watch(
        &s,
        &manager,
        WatchEventsRequest {
            resource_types: vec!["contacts".into()],
            verbs: vec![EventVerb::Updated as i32],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut w_other = watch(&s, &other, WatchEventsRequest::default())
        .await
        .unwrap();

    let mine = create_contact(&s, &admin, "Mine", &r1).await;
    let theirs = create_contact(&s, &admin, "Theirs", &r2).await;
    let mine = rename(&s, &admin, &mine, "Mine2").await;
    let outsider = create_contact(&s, &other, "Outsider", "").await;

    let all = drain(&mut w_admin).await;
    let names: Vec<&str> = all.iter().map(|e| e.resource.as_str()).collect();
    assert_eq!(names, [&mine.name, &theirs.name, &mine.name], "{all:?}");
    assert!(all.iter().all(|e| e.hidden_fields.is_empty()));
    assert!(all[0].data.as_ref().unwrap().fields.contains_key("phones"));

    let team = drain(&mut w_manager).await;
    assert_eq!(team.len(), 3, "the manager's team owns both: {team:?}");
    assert!(team[0].data.as_ref().unwrap().fields.contains_key("phones"));

    let own = drain(&mut w_rep).await;
    let names: Vec<&str> = own.iter().map(|e| e.resource.as_str()).collect();
    assert_eq!(names, [&mine.name, &mine.name], "only the rep's own record");
    for e in &own {
        let d = e.data.as_ref().unwrap();
        assert!(!d.fields.contains_key("phones"), "phones withheld: {d:?}");
        assert!(!d.fields.contains_key("birth_date"), "birth date withheld");
        assert!(d.fields.contains_key("given_name"));
        assert!(e.hidden_fields.contains(&"phones".to_string()));
        assert!(e.hidden_fields.contains(&"birth_date".to_string()));
    }
    assert_eq!(own[1].verb, EventVerb::Updated as i32);
    assert_eq!(own[1].revision, 2);
    assert_eq!(own[1].changed_fields, ["given_name"]);

    let updates = drain(&mut w_updates).await;
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].resource, mine.name);

    let theirs_events = drain(&mut w_other).await;
    assert_eq!(theirs_events.len(), 1, "{theirs_events:?}");
    assert_eq!(theirs_events[0].resource, outsider.name);
    assert_eq!(theirs_events[0].tenant, "other");

    // Resuming after the first event gives the two after it.
    let mut resumed = watch(
        &s,
        &admin,
        WatchEventsRequest {
            resume_token: all[0].id.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let rest = drain(&mut resumed).await;
    let ids: Vec<&str> = rest.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [all[1].id.as_str(), all[2].id.as_str()]);
    // Another tenant's event id is unknown here.
    let st = expect_code(
        watch(
            &s,
            &other,
            WatchEventsRequest {
                resume_token: all[0].id.clone(),
                ..Default::default()
            },
        )
        .await,
        Code::NotFound,
    );
    assert!(st.message().contains(&all[0].id), "{}", st.message());
}

async fn watch_requests_are_validated(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    for r in crm_gateway::demo::roles() {
        s.admin_ctx("acme").create(r, "").await.unwrap();
    }
    let admin = s.token("acme", Uuid::nil(), &["admin"]);
    let rep = s.token("acme", Uuid::now_v7(), &["rep"]);
    let bad = |r: WatchEventsRequest| {
        let s = &s;
        let admin = admin.clone();
        async move { expect_code(watch(s, &admin, r).await, Code::InvalidArgument) }
    };
    let st = bad(WatchEventsRequest {
        resource_types: vec!["contacts".into(), "nonsense".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(violated_fields(&st), ["resource_types[1]"]);
    let st = bad(WatchEventsRequest {
        verbs: vec![EventVerb::Created as i32, 0],
        ..Default::default()
    })
    .await;
    assert_eq!(violated_fields(&st), ["verbs[1]"]);
    let st = bad(WatchEventsRequest {
        verbs: vec![77],
        ..Default::default()
    })
    .await;
    assert_eq!(violated_fields(&st), ["verbs[0]"]);
    let st = bad(WatchEventsRequest {
        resume_token: "not-an-id".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(violated_fields(&st), ["resume_token"]);
    let st = bad(WatchEventsRequest {
        resource_types: vec!["contacts".into(); 51],
        ..Default::default()
    })
    .await;
    assert_eq!(violated_fields(&st), ["resource_types"]);
    expect_code(
        watch(
            &s,
            &admin,
            WatchEventsRequest {
                resume_token: Uuid::now_v7().to_string(),
                ..Default::default()
            },
        )
        .await,
        Code::NotFound,
    );
    // A rep may not read roles, so may not watch their events.
    expect_code(
        watch(
            &s,
            &rep,
            WatchEventsRequest {
                resource_types: vec!["roles".into()],
                ..Default::default()
            },
        )
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        watch(&s, "nope", WatchEventsRequest::default()).await,
        Code::Unauthenticated,
    );
}

/// Two relays (the gateway's and a second replica's) on one PostgreSQL database while
/// records are updated concurrently: each event reaches the stream once, and every record's
/// events are in revision order. (SQLite runs one relay per file.)
#[test]
fn two_relays_share_the_work_in_order_per_record() {
    crm_tests::block_on(async {
        let url = nats_url();
        let ev = events(&url);
        let stream = ev.stream.clone();
        let second = ev.clone();
        let s = TestServer::start_with(Backend::Postgres, |st| st.events = ev).await;
        s.tenant("acme").await;
        let db = crm_core::db::Db::connect(&s.test_db.url, 4).await.unwrap();
        let other = crm_gateway::relay::Tasks::start(&db, &second, true);
        let admin = s.token("acme", Uuid::nil(), &["admin"]);
        let mut writers = vec![];
        for i in 0..8 {
            let s = &s;
            let admin = admin.clone();
            writers.push(async move {
                let mut c = create_contact(s, &admin, &format!("Par{i}"), "").await;
                for round in 0..8 {
                    c = rename(s, &admin, &c, &format!("Par{i}-{round}")).await;
                }
            });
        }
        futures::future::join_all(writers).await;
        let outbox = journal::list_events(&s.db.conn, "acme", 10_000)
            .await
            .unwrap();
        let msgs = wait_published(&s, &url, &stream, outbox.len()).await;
        other.stop().await;
        assert_eq!(msgs.len(), outbox.len(), "each event once");
        let mut revisions: HashMap<String, Vec<i64>> = HashMap::new();
        for (_, _, e) in msgs
            .iter()
            .filter(|(_, _, e)| e.resource_type == "contacts")
        {
            revisions
                .entry(e.resource.clone())
                .or_default()
                .push(e.revision);
        }
        assert_eq!(revisions.len(), 8);
        for (r, revs) in &revisions {
            assert_eq!(*revs, (1..=9).collect::<Vec<i64>>(), "events of {r}");
        }
        delete_stream(&url, &stream).await;
    });
}

/// A change whose transaction commits well after later changes were sent (it wrote for
/// longer than the watch's margin): a running watch still sends it, as the transaction
/// holds the watch's look-back open. PostgreSQL only: SQLite's one writer commits in id
/// order.
#[test]
fn a_late_commit_is_not_missed_by_a_running_watch() {
    crm_tests::block_on(late_commit(Backend::Postgres));
}

async fn late_commit(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let mut w = watch(
        &s,
        &admin,
        WatchEventsRequest {
            resource_types: vec!["contacts".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // A writer takes its event id now and commits seconds later.
    let ctx = s.admin_ctx("acme");
    let slow = ctx.begin().await.unwrap();
    let late = slow
        .create(crm_core::model::Contact {
            given_name: "Late".into(),
            family_name: "Writer".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let early = create_contact(&s, &admin, "Early", "").await;
    let first = next(&mut w, Duration::from_secs(10))
        .await
        .expect("the committed change was not sent")
        .unwrap();
    assert_eq!(first.resource, early.name);
    // The watch polls on, well past the margin behind the last event it sent.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    slow.commit().await.unwrap();
    let second = next(&mut w, Duration::from_secs(10))
        .await
        .expect("the late commit was missed")
        .unwrap();
    assert_eq!(second.resource, format!("contacts/{}", late.meta.id));
}
