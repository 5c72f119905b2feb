//! Webhooks (P1): subscriptions, signed deliveries to a loopback HTTP target started by the
//! test (which checks every signature), retries, timeouts, dead letters, redelivery and
//! replay, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::v1::*;
use crm_tests::{Backend, TestServer, both, expect_code, req, violated_fields};
use serde_json::Value as Json;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use uuid::Uuid;

both!(
    committed_changes_are_delivered_signed_and_rolled_back_ones_never,
    a_failing_target_is_retried_with_backoff_and_gone_switches_off,
    a_hanging_target_times_out_and_dead_deliveries_are_sent_again,
    events_are_replayed_from_a_point_in_time,
    subscriptions_are_tenant_scoped_checked_and_validated,
);

const SECRET: &str = "whsec_0123456789abcdef";

/// How the target answers one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Answers after a delay.
    Slow(u64, u16),
    /// Never answers (keeps the connection open).
    Hang,
}

/// A request the target received.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    /// Whether the signature verified with [`SECRET`].
    signed: bool,
}

impl Received {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A loopback HTTP/1.1 target: answers from a script, then with a default answer.
#[derive(Clone)]
struct Target {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    default: Arc<Mutex<Answer>>,
}

impl Target {
    async fn start(default: Answer) -> Target {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let t = Target {
            url: format!("http://{addr}/hooks/crm?source=test"),
            received: Arc::default(),
            script: Arc::default(),
            default: Arc::new(Mutex::new(default)),
        };
        let server = t.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(server.clone().serve(sock));
            }
        });
        t
    }

    fn set_default(&self, a: Answer) {
        *self.default.lock().unwrap() = a;
    }

    fn then(&self, a: Answer) {
        self.script.lock().unwrap().push_back(a);
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    async fn serve(self, mut sock: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        assert!(
            request_line.starts_with("POST /hooks/crm?source=test HTTP/1.1"),
            "{request_line}"
        );
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < len {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        let signed = headers.get("crm-signature").is_some_and(|h| {
            crm_webhooks::rules::verify(
                SECRET.as_bytes(),
                h,
                &body,
                chrono::Utc::now().timestamp(),
                300,
            )
            .is_ok()
        });
        self.received.lock().unwrap().push(Received {
            headers,
            body,
            signed,
        });
        let answer = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(*self.default.lock().unwrap());
        let status = match answer {
            Answer::Status(s) => s,
            Answer::Slow(ms, s) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                s
            }
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
        };
        let text = format!("answer {status}");
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        let _ = sock.shutdown().await;
    }
}

/// Short retry settings for tests, loopback targets allowed.
fn fast(s: &mut crm_gateway::config::Settings) {
    s.webhooks.allow_private_targets = true;
    s.webhooks.poll_interval_ms = 50;
    s.webhooks.timeout_ms = 500;
    s.webhooks.retry_base_ms = 200;
    s.webhooks.retry_max_ms = 400;
    s.webhooks.max_attempts = 3;
    s.jobs.poll_interval_ms = 50;
}

/// Polls `check` every 50 ms until it gives a value (panics after `secs` seconds).
async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn subscription(url: &str, types: &[&str], verbs: &[EventVerb]) -> WebhookSubscription {
    WebhookSubscription {
        display_name: "Billing".into(),
        url: url.into(),
        resource_types: types.iter().map(|t| (*t).to_owned()).collect(),
        verbs: verbs.iter().map(|v| *v as i32).collect(),
        secret: SECRET.into(),
        active: true,
        ..Default::default()
    }
}

async fn subscribe(s: &TestServer, token: &str, sub: WebhookSubscription) -> WebhookSubscription {
    s.webhooks()
        .create_webhook_subscription(req(
            token,
            CreateWebhookSubscriptionRequest {
                subscription: Some(sub),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn contact(s: &TestServer, token: &str, given: &str) -> Contact {
    s.contacts()
        .create_contact(req(
            token,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: given.into(),
                    family_name: "Muster".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn deliveries(
    s: &TestServer,
    token: &str,
    sub: &str,
    state: WebhookDeliveryState,
) -> Vec<WebhookDelivery> {
    s.webhooks()
        .list_webhook_deliveries(req(
            token,
            ListWebhookDeliveriesRequest {
                parent: sub.into(),
                page_size: 100,
                page_token: String::new(),
                state: state as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

async fn committed_changes_are_delivered_signed_and_rolled_back_ones_never(backend: Backend) {
    let s = TestServer::start_with(backend, fast).await;
    s.tenant("acme").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    // A slow target: answers after 150 ms, within the timeout.
    let target = Target::start(Answer::Slow(150, 200)).await;
    let sub = subscribe(
        &s,
        &admin,
        subscription(
            &target.url,
            &["contacts"],
            &[EventVerb::Created, EventVerb::Updated],
        ),
    )
    .await;
    assert!(sub.has_secret);
    assert!(sub.secret.is_empty(), "the secret is never returned");
    assert_eq!(sub.verbs.len(), 2);

    let anna = contact(&s, &admin, "Anna").await;
    s.contacts()
        .update_contact(req(
            &admin,
            UpdateContactRequest {
                contact: Some(Contact {
                    name: anna.name.clone(),
                    given_name: "Anne".into(),
                    etag: anna.etag.clone(),
                    ..Default::default()
                }),
                update_mask: crm_tests::mask(&["given_name"]),
            },
        ))
        .await
        .unwrap();
    // A rolled-back change: its event never existed, so nothing is delivered for it.
    // (On SQLite this second connection competes with the gateway's writers: retried while
    // the file is locked.)
    let ctx = s.admin_ctx("acme");
    let mut tries = 0;
    loop {
        let written = async {
            let tx = ctx.begin().await?;
            tx.create(crm_core::model::Contact {
                given_name: "Ghost".into(),
                family_name: "Never".into(),
                ..Default::default()
            })
            .await?;
            Ok::<_, crm_core::Error>(tx)
        }
        .await;
        match written {
            Ok(tx) => {
                drop(tx);
                break;
            }
            Err(e) if e.kind == crm_core::ErrorKind::Unavailable && tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // Not wanted: a delete (verb filter) and an account (type filter).
    s.accounts()
        .create_account(req(
            &admin,
            CreateAccountRequest {
                account: Some(Account {
                    display_name: "Acme GmbH".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let bert = contact(&s, &admin, "Bert").await;
    s.contacts()
        .delete_contact(req(
            &admin,
            DeleteContactRequest {
                name: bert.name.clone(),
                etag: bert.etag.clone(),
            },
        ))
        .await
        .unwrap();

    let got = wait_for(30, "three deliveries", || async {
        let r = target.received();
        (r.len() >= 3).then_some(r)
    })
    .await;
    // Give a stray delivery (the ghost, the account, the delete) time to show up.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = if target.received().len() > got.len() {
        target.received()
    } else {
        got
    };
    let kinds: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let j = r.json();
            (
                j["type"].as_str().unwrap().to_owned(),
                j["data"]["given_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            ("contacts.created".to_owned(), "Anna".to_owned()),
            ("contacts.created".to_owned(), "Bert".to_owned()),
            ("contacts.updated".to_owned(), "Anne".to_owned()),
        ],
        "{kinds:?}"
    );
    for r in &got {
        assert!(r.signed, "signature must verify: {:?}", r.headers);
        let j = r.json();
        assert_eq!(r.headers["crm-event-id"], j["id"].as_str().unwrap());
        assert_eq!(r.headers["crm-event-type"], j["type"].as_str().unwrap());
        assert_eq!(r.headers["content-type"], "application/json");
        let t = &r.headers["crm-timestamp"];
        assert!(r.headers["crm-signature"].starts_with(&format!("t={t},v1=")));
        assert!(
            r.headers["crm-delivery"].starts_with(&format!("{}/deliveries/", sub.name)),
            "{}",
            r.headers["crm-delivery"]
        );
        assert_eq!(j["tenant"], "acme");
        assert_eq!(j["resource_type"], "contacts");
        assert!(j["resource"].as_str().unwrap().starts_with("contacts/"));
        assert!(j["actor"].as_str().unwrap().starts_with("users/"));
        // A tampered body does not verify.
        let mut tampered = r.body.clone();
        tampered.push(b' ');
        assert!(
            crm_webhooks::rules::verify(
                SECRET.as_bytes(),
                &r.headers["crm-signature"],
                &tampered,
                chrono::Utc::now().timestamp(),
                300
            )
            .is_err()
        );
    }
    let updated = got
        .iter()
        .map(Received::json)
        .find(|j| j["type"] == "contacts.updated")
        .unwrap();
    assert_eq!(updated["resource"], anna.name.as_str());
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["changed_fields"], serde_json::json!(["given_name"]));

    // The log: three deliveries, each delivered at the first attempt, latency measured.
    let log = wait_for(10, "the log records the deliveries", || async {
        let d = deliveries(&s, &admin, &sub.name, WebhookDeliveryState::Delivered).await;
        (d.len() == 3).then_some(d)
    })
    .await;
    for d in &log {
        assert_eq!(d.attempt_count, 1);
        assert_eq!(d.status_code, 200);
        assert!(d.error.is_empty());
        assert!(d.latency_ms >= 100, "latency {}", d.latency_ms);
        assert!(d.delivered_time.is_some());
        assert!(!d.replay);
        assert!(d.name.starts_with(&sub.name));
    }
    assert!(
        deliveries(&s, &admin, &sub.name, WebhookDeliveryState::Unspecified)
            .await
            .len()
            == 3
    );
    // One delivery by name.
    let one = s
        .webhooks()
        .get_webhook_delivery(req(
            &admin,
            GetWebhookDeliveryRequest {
                name: log[0].name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one, log[0]);
}

async fn a_failing_target_is_retried_with_backoff_and_gone_switches_off(backend: Backend) {
    let s = TestServer::start_with(backend, fast).await;
    s.tenant("acme").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let target = Target::start(Answer::Status(200)).await;
    target.then(Answer::Status(500));
    let sub = subscribe(&s, &admin, subscription(&target.url, &["contacts"], &[])).await;
    contact(&s, &admin, "Anna").await;

    let d = wait_for(30, "delivered after a retry", || async {
        deliveries(&s, &admin, &sub.name, WebhookDeliveryState::Delivered)
            .await
            .pop()
    })
    .await;
    assert_eq!(d.attempt_count, 2);
    assert_eq!(d.status_code, 200);
    let got = target.received();
    assert_eq!(got.len(), 2);
    // The same event both times, each attempt signed afresh.
    assert_eq!(
        got[0].headers["crm-event-id"],
        got[1].headers["crm-event-id"]
    );
    assert!(got.iter().all(|r| r.signed));
    // The retry waited (base 200 ms, less up to a quarter of jitter).
    let t0 = got[0].headers["crm-timestamp"].parse::<i64>().unwrap();
    let t1 = got[1].headers["crm-timestamp"].parse::<i64>().unwrap();
    assert!(t1 >= t0);

    // 410 Gone: the delivery dies and the subscription is switched off.
    target.set_default(Answer::Status(410));
    contact(&s, &admin, "Bert").await;
    let dead = wait_for(30, "dead after 410", || async {
        deliveries(&s, &admin, &sub.name, WebhookDeliveryState::Dead)
            .await
            .pop()
    })
    .await;
    assert_eq!(dead.attempt_count, 1);
    assert_eq!(dead.status_code, 410);
    let off = s
        .webhooks()
        .get_webhook_subscription(req(
            &admin,
            GetWebhookSubscriptionRequest {
                name: sub.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!off.active);
    assert!(
        off.disabled_reason.contains("410"),
        "{}",
        off.disabled_reason
    );
    // Inactive: nothing more is recorded.
    contact(&s, &admin, "Carl").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        deliveries(&s, &admin, &sub.name, WebhookDeliveryState::Unspecified)
            .await
            .len(),
        2
    );
    // Switched on again: the reason is cleared.
    let on = s
        .webhooks()
        .update_webhook_subscription(req(
            &admin,
            UpdateWebhookSubscriptionRequest {
                subscription: Some(WebhookSubscription {
                    name: off.name.clone(),
                    active: true,
                    etag: off.etag.clone(),
                    ..Default::default()
                }),
                update_mask: crm_tests::mask(&["active"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(on.active);
    assert!(on.disabled_reason.is_empty());
    let secs = |t: &Option<prost_types::Timestamp>| {
        let t = t.as_ref().unwrap();
        (t.seconds, t.nanos)
    };
    assert!(secs(&on.activate_time) > secs(&off.activate_time));
    // Carl's event was written while it was off: not delivered now either.
    target.set_default(Answer::Status(200));
    contact(&s, &admin, "Dora").await;
    let d = wait_for(30, "Dora delivered", || async {
        deliveries(&s, &admin, &sub.name, WebhookDeliveryState::Delivered)
            .await
            .into_iter()
            .find(|d| d.event_type == "contacts.created" && d.attempt_count == 1)
    })
    .await;
    let all = deliveries(&s, &admin, &sub.name, WebhookDeliveryState::Unspecified).await;
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.iter().any(|x| x.name == d.name));
}

async fn a_hanging_target_times_out_and_dead_deliveries_are_sent_again(backend: Backend) {
    let s = TestServer::start_with(backend, fast).await;
    s.tenant("acme").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let target = Target::start(Answer::Hang).await;
    let sub = subscribe(&s, &admin, subscription(&target.url, &["contacts"], &[])).await;
    contact(&s, &admin, "Anna").await;
    contact(&s, &admin, "Bert").await;

    let dead = wait_for(60, "both deliveries dead", || async {
        let d = deliveries(&s, &admin, &sub.name, WebhookDeliveryState::Dead).await;
        (d.len() == 2).then_some(d)
    })
    .await;
    for d in &dead {
        assert_eq!(d.attempt_count, 3, "{d:?}");
        assert_eq!(d.status_code, 0);
        assert!(d.error.contains("no answer within 500 ms"), "{}", d.error);
        assert!(d.latency_ms >= 450, "{}", d.latency_ms);
        assert!(d.next_attempt_time.is_none());
    }
    assert_eq!(target.received().len(), 6);

    // Redelivering a dead delivery: a fresh budget, and the target answers now.
    target.set_default(Answer::Status(204));
    let first = s
        .webhooks()
        .redeliver_webhook_delivery(req(
            &admin,
            RedeliverWebhookDeliveryRequest {
                name: dead[0].name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // PENDING with a fresh budget, or already delivered by the attempt it started.
    assert_ne!(first.state, WebhookDeliveryState::Dead as i32);
    let done = wait_for(30, "redelivered", || async {
        let d = deliveries(&s, &admin, &sub.name, WebhookDeliveryState::Delivered).await;
        (d.len() == 1).then_some(d)
    })
    .await;
    assert_eq!(done[0].name, dead[0].name);
    assert_eq!(done[0].status_code, 204);
    // Only dead deliveries are sent again.
    let e = expect_code(
        s.webhooks()
            .redeliver_webhook_delivery(req(
                &admin,
                RedeliverWebhookDeliveryRequest {
                    name: dead[0].name.clone(),
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(crm_tests::reason(&e), "DELIVERY_NOT_DEAD");
    // The rest of the dead-letter list at once.
    let n = s
        .webhooks()
        .retry_dead_webhook_deliveries(req(
            &admin,
            RetryDeadWebhookDeliveriesRequest {
                parent: sub.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .retried_count;
    assert_eq!(n, 1);
    wait_for(30, "all delivered", || async {
        let d = deliveries(&s, &admin, &sub.name, WebhookDeliveryState::Delivered).await;
        (d.len() == 2).then_some(())
    })
    .await;
    assert!(
        deliveries(&s, &admin, &sub.name, WebhookDeliveryState::Dead)
            .await
            .is_empty()
    );
    assert!(target.received().iter().all(|r| r.signed));
}

async fn events_are_replayed_from_a_point_in_time(backend: Backend) {
    let s = TestServer::start_with(backend, fast).await;
    s.tenant("acme").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let target = Target::start(Answer::Status(200)).await;
    let before = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Written before the subscription: not delivered, but replayable.
    contact(&s, &admin, "Anna").await;
    contact(&s, &admin, "Bert").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let sub = subscribe(
        &s,
        &admin,
        subscription(&target.url, &["contacts"], &[EventVerb::Created]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(target.received().is_empty());

    let replay = |start: Option<chrono::DateTime<chrono::Utc>>, after: &str| {
        let mut w = s.webhooks();
        let r = ReplayWebhookEventsRequest {
            name: sub.name.clone(),
            start_time: start.map(|t| prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: t.timestamp_subsec_nanos() as i32,
            }),
            after_event: after.into(),
            end_time: None,
        };
        let token = admin.clone();
        async move { w.replay_webhook_events(req(&token, r)).await }
    };
    let out = replay(Some(before), "").await.unwrap().into_inner();
    assert_eq!(out.scheduled_count, 2);
    assert!(!out.more);
    let got = wait_for(30, "two replayed deliveries", || async {
        let r = target.received();
        (r.len() == 2).then_some(r)
    })
    .await;
    let mut names: Vec<String> = got
        .iter()
        .map(|r| r.json()["data"]["given_name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["Anna", "Bert"]);
    assert!(got.iter().all(|r| r.signed));
    let log = wait_for(10, "logged as replays", || async {
        let d = deliveries(&s, &admin, &sub.name, WebhookDeliveryState::Delivered).await;
        (d.len() == 2).then_some(d)
    })
    .await;
    assert!(log.iter().all(|d| d.replay));
    // Continuing after the last event: nothing more.
    let more = replay(None, &out.last_event).await.unwrap().into_inner();
    assert_eq!(more.scheduled_count, 0);
    // Bad requests name the field.
    let e = expect_code(replay(None, "").await, Code::InvalidArgument);
    assert_eq!(violated_fields(&e), ["start_time"]);
    let e = expect_code(
        replay(Some(chrono::Utc::now() + chrono::Duration::hours(1)), "").await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["start_time"]);
    let e = expect_code(replay(None, "not-a-uuid").await, Code::InvalidArgument);
    assert_eq!(violated_fields(&e), ["after_event"]);
    expect_code(
        replay(None, &Uuid::now_v7().to_string()).await,
        Code::NotFound,
    );
}

async fn subscriptions_are_tenant_scoped_checked_and_validated(backend: Backend) {
    // Default settings: targets on private addresses are refused at delivery time.
    let s = TestServer::start_with(backend, |c| {
        c.webhooks.poll_interval_ms = 50;
        c.webhooks.max_attempts = 1;
        c.jobs.poll_interval_ms = 50;
    })
    .await;
    s.tenant("acme").await;
    s.tenant("other").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let other_admin = s.token("other", Uuid::now_v7(), &["admin"]);
    let target = Target::start(Answer::Status(200)).await;
    let theirs = subscribe(&s, &other_admin, subscription(&target.url, &[], &[])).await;
    let mine = subscribe(&s, &admin, subscription(&target.url, &["contacts"], &[])).await;

    // Another tenant's subscription is not found, whatever the call.
    let mut w = s.webhooks();
    expect_code(
        w.get_webhook_subscription(req(
            &admin,
            GetWebhookSubscriptionRequest {
                name: theirs.name.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        w.list_webhook_deliveries(req(
            &admin,
            ListWebhookDeliveriesRequest {
                parent: theirs.name.clone(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        w.retry_dead_webhook_deliveries(req(
            &admin,
            RetryDeadWebhookDeliveriesRequest {
                parent: theirs.name.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        w.redeliver_webhook_delivery(req(
            &admin,
            RedeliverWebhookDeliveryRequest {
                name: format!("{}/deliveries/{}", theirs.name, Uuid::now_v7()),
            },
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        w.replay_webhook_events(req(
            &admin,
            ReplayWebhookEventsRequest {
                name: theirs.name.clone(),
                start_time: Some(prost_types::Timestamp {
                    seconds: chrono::Utc::now().timestamp() - 60,
                    nanos: 0,
                }),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        w.delete_webhook_subscription(req(
            &admin,
            DeleteWebhookSubscriptionRequest {
                name: theirs.name.clone(),
                etag: String::new(),
            },
        ))
        .await,
        Code::NotFound,
    );
    let listed = w
        .list_webhook_subscriptions(req(&admin, ListWebhookSubscriptionsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, mine.name);
    assert!(listed[0].secret.is_empty() && listed[0].has_secret);

    // Without a token: UNAUTHENTICATED; a role without rights: PERMISSION_DENIED.
    expect_code(
        w.list_webhook_subscriptions(tonic::Request::new(
            ListWebhookSubscriptionsRequest::default(),
        ))
        .await,
        Code::Unauthenticated,
    );
    s.access()
        .create_role(req(
            &admin,
            CreateRoleRequest {
                role_id: "rep".into(),
                role: Some(Role {
                    display_name: "Rep".into(),
                    grants: vec![Grant {
                        collection: "contacts".into(),
                        actions: vec![Action::Read as i32, Action::Create as i32],
                        scope: Scope::Own as i32,
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let rep = s.token("acme", Uuid::now_v7(), &["rep"]);
    expect_code(
        w.create_webhook_subscription(req(
            &rep,
            CreateWebhookSubscriptionRequest {
                subscription: Some(subscription(&target.url, &["contacts"], &[])),
                request_id: String::new(),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        w.list_webhook_deliveries(req(
            &rep,
            ListWebhookDeliveriesRequest {
                parent: mine.name.clone(),
                ..Default::default()
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    // Rights on subscriptions alone are not enough: a subscription delivers whole records.
    s.access()
        .create_role(req(
            &admin,
            CreateRoleRequest {
                role_id: "integrator".into(),
                role: Some(Role {
                    display_name: "Integrator".into(),
                    grants: vec![
                        Grant {
                            collection: "webhookSubscriptions".into(),
                            actions: vec![
                                Action::Read as i32,
                                Action::Create as i32,
                                Action::Update as i32,
                            ],
                            scope: Scope::All as i32,
                        },
                        Grant {
                            collection: "contacts".into(),
                            actions: vec![Action::Read as i32],
                            scope: Scope::Own as i32,
                        },
                        Grant {
                            collection: "accounts".into(),
                            actions: vec![Action::Read as i32],
                            scope: Scope::All as i32,
                        },
                    ],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let integrator = s.token("acme", Uuid::now_v7(), &["integrator"]);
    let e = expect_code(
        w.create_webhook_subscription(req(
            &integrator,
            CreateWebhookSubscriptionRequest {
                subscription: Some(subscription(&target.url, &["contacts"], &[])),
                request_id: String::new(),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    assert_eq!(crm_tests::reason(&e), "WEBHOOK_NEEDS_FULL_READ");
    w.create_webhook_subscription(req(
        &integrator,
        CreateWebhookSubscriptionRequest {
            subscription: Some(subscription(&target.url, &["accounts"], &[])),
            request_id: String::new(),
        },
    ))
    .await
    .unwrap();

    // Bad input names the field.
    let bad = |f: fn(&mut WebhookSubscription)| {
        let mut sub = subscription(&target.url, &["contacts"], &[]);
        f(&mut sub);
        sub
    };
    let cases: Vec<(WebhookSubscription, &str)> = vec![
        (
            bad(|s| s.url = "ftp://example.com/x".into()),
            "subscription.url",
        ),
        (
            bad(|s| s.url = "https://user:pw@example.com/x".into()),
            "subscription.url",
        ),
        (bad(|s| s.url = "not a url".into()), "subscription.url"),
        (bad(|s| s.url = String::new()), "subscription.url"),
        (
            bad(|s| s.resource_types = vec!["nonsense".into()]),
            "subscription.resource_types[0]",
        ),
        (
            bad(|s| s.resource_types = vec!["contacts".into(), "a b".into()]),
            "subscription.resource_types[1]",
        ),
        (bad(|s| s.verbs = vec![0]), "subscription.verbs[0]"),
        (bad(|s| s.verbs = vec![1, 99]), "subscription.verbs[1]"),
        (bad(|s| s.secret = "short".into()), "subscription.secret"),
        (bad(|s| s.secret = String::new()), "subscription.secret"),
        (
            bad(|s| s.display_name = String::new()),
            "subscription.display_name",
        ),
    ];
    for (sub, field) in cases {
        let e = expect_code(
            w.create_webhook_subscription(req(
                &admin,
                CreateWebhookSubscriptionRequest {
                    subscription: Some(sub),
                    request_id: String::new(),
                },
            ))
            .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&e), [field], "{e:?}");
    }
    let e = expect_code(
        w.update_webhook_subscription(req(
            &admin,
            UpdateWebhookSubscriptionRequest {
                subscription: Some(WebhookSubscription {
                    name: mine.name.clone(),
                    etag: mine.etag.clone(),
                    ..Default::default()
                }),
                update_mask: crm_tests::mask(&["disabled_reason"]),
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["update_mask"]);
    let e = expect_code(
        w.list_webhook_deliveries(req(
            &admin,
            ListWebhookDeliveriesRequest {
                parent: mine.name.clone(),
                page_token: "garbage".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["page_token"]);
    let e = expect_code(
        w.get_webhook_delivery(req(
            &admin,
            GetWebhookDeliveryRequest {
                name: "webhookSubscriptions/x".into(),
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["name"]);
    // Nothing of the failed creates was kept.
    assert_eq!(
        w.list_webhook_subscriptions(req(&admin, ListWebhookSubscriptionsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .subscriptions
            .len(),
        2
    );

    // A loopback target without webhooks.allow_private_targets: refused, never called.
    contact(&s, &admin, "Anna").await;
    let dead = wait_for(30, "refused as private", || async {
        deliveries(&s, &admin, &mine.name, WebhookDeliveryState::Dead)
            .await
            .pop()
    })
    .await;
    assert!(
        dead.error.contains("allow_private_targets"),
        "{}",
        dead.error
    );
    assert!(target.received().is_empty());
}
