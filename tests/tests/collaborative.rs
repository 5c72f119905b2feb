//! TimelineService and CaseService (crm-collaborative): channel intake matched to contacts,
//! the timeline, service cases with SLA clocks on durable timers, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::v1::*;
use crm_core::clock::{Clock, ManualClock, SystemClock};
use crm_core::jobs::{JobHandlers, Runner, RunnerSettings};
use crm_tests::{Backend, TestServer, both, expect_code, req, violated_fields};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use uuid::Uuid;

fn ts(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

fn rfc2822(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

fn email(
    message_id: &str,
    from: &str,
    subject: &str,
    date: chrono::DateTime<chrono::Utc>,
) -> Vec<u8> {
    format!(
        "From: \"Li Lei\" <{from}>\r\n\
         To: support@acme.example\r\n\
         Subject: {subject}\r\n\
         Date: {}\r\n\
         Message-ID: <{message_id}>\r\n\
         \r\n\
         Hello, the printer is broken.\r\n",
        rfc2822(date)
    )
    .into_bytes()
}

async fn ingest(s: &TestServer, t: &str, raw: Vec<u8>) -> Result<IngestResponse, tonic::Status> {
    s.timeline()
        .ingest_email(req(t, IngestEmailRequest { raw, links: None }))
        .await
        .map(|r| r.into_inner())
}

async fn user(s: &TestServer, t: &str, n: &str, manager: &str) -> String {
    s.directory()
        .create_user(req(
            t,
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

async fn roles(s: &TestServer, tenant: &str) {
    for r in crm_gateway::demo::roles() {
        s.admin_ctx(tenant).create(r, "").await.unwrap();
    }
}

async fn contact(s: &TestServer, t: &str, email: &str, phone: &str) -> Contact {
    s.contacts()
        .create_contact(req(
            t,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: "Lei".into(),
                    family_name: "Li".into(),
                    emails: vec![crm_api::v1::Email {
                        address: email.into(),
                        ..Default::default()
                    }],
                    phones: vec![Phone {
                        number: phone.into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

/// Open around the clock in UTC, so the test does not depend on the weekday it runs on.
fn always_open() -> BusinessCalendar {
    BusinessCalendar {
        time_zone: "UTC".into(),
        weekly_hours: (1..=7)
            .map(|d| WorkingHours {
                day: d,
                start: "00:00".into(),
                end: "24:00".into(),
            })
            .collect(),
        ..Default::default()
    }
}

fn policy_set(calendar: BusinessCalendar) -> SlaPolicySet {
    SlaPolicySet {
        display_name: "Support".into(),
        active: true,
        policies: vec![
            SlaPolicy {
                id: "standard".into(),
                first_response_minutes: 60,
                resolution_minutes: 480,
                warning_percent: 50,
                ..Default::default()
            },
            SlaPolicy {
                id: "urgent".into(),
                first_response_minutes: 15,
                resolution_minutes: 120,
                warning_percent: 50,
                ..Default::default()
            },
        ],
        rules: vec![SlaRule {
            priorities: vec![CasePriority::Urgent as i32],
            policy: "urgent".into(),
            ..Default::default()
        }],
        default_policy: "standard".into(),
        calendar: Some(calendar),
        ..Default::default()
    }
}

async fn create_case(s: &TestServer, t: &str, c: Case) -> Result<Case, tonic::Status> {
    s.cases()
        .create_case(req(
            t,
            CreateCaseRequest {
                case: Some(c),
                request_id: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn get_case(s: &TestServer, t: &str, name: &str) -> Case {
    s.cases()
        .get_case(req(t, GetCaseRequest { name: name.into() }))
        .await
        .unwrap()
        .into_inner()
}

fn runner_settings() -> RunnerSettings {
    RunnerSettings {
        poll_interval: Duration::from_millis(50),
        retention: Duration::ZERO,
        ..Default::default()
    }
}

/// Waits (real time) until the case satisfies `done`.
async fn wait_case(s: &TestServer, t: &str, name: &str, done: impl Fn(&Case) -> bool) -> Case {
    for _ in 0..200 {
        let c = get_case(s, t, name).await;
        if done(&c) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the case never got there: {:?}", get_case(s, t, name).await);
}

async fn a_customer_emails_calls_and_gets_a_case_resolved(backend: Backend) {
    // The gateway runs no jobs: SLA timers run on a runner with a clock the test moves.
    let s = TestServer::start_with(backend, |st| st.jobs.enabled = false).await;
    s.tenant("acme").await;
    roles(&s, "acme").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let boss = user(&s, &admin, "boss", "").await;
    let agent_name = user(&s, &admin, "agent", &boss).await;
    let agent = s.token("acme", id_of(&agent_name), &["manager"]);

    // The agent's own customer (a manager reads their subtree's records).
    let account = s
        .accounts()
        .create_account(req(
            &agent,
            CreateAccountRequest {
                account: Some(Account {
                    display_name: "Muster GmbH".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let li = contact(&s, &agent, "li.lei@example.com", "+49 30 1234567").await;
    s.admin_ctx("acme")
        .create(
            crm_core::model::Position {
                contact: Some(id_of(&li.name)),
                account: Some(id_of(&account.name)),
                ..Default::default()
            },
            "",
        )
        .await
        .unwrap();
    s.cases()
        .create_sla_policy_set(req(
            &admin,
            CreateSlaPolicySetRequest {
                policy_set: Some(policy_set(always_open())),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();

    // The customer writes (two hours ago), then calls (an hour ago).
    let now = SystemClock.now();
    let mail = ingest(
        &s,
        &agent,
        email(
            "printer-1@mail.example.com",
            "Li.Lei@Example.COM",
            "Printer broken",
            now - chrono::Duration::hours(2),
        ),
    )
    .await
    .unwrap();
    assert!(mail.created);
    assert_eq!(mail.threading, "NEW");
    let m = mail.interaction.clone().unwrap();
    assert_eq!(m.channel, InteractionChannel::Email as i32);
    assert_eq!(m.contact, li.name, "the sender was matched");
    assert_eq!(m.account, account.name, "with the contact's account");
    assert!(m.matched);
    assert_eq!(m.external_id, "printer-1@mail.example.com");
    assert_eq!(m.participants[0].role, "FROM");
    assert_eq!(m.participants[0].contact, li.name);
    assert!(
        m.participants[1].contact.is_empty(),
        "support is nobody's contact"
    );

    let call = s
        .timeline()
        .ingest_call(req(
            &agent,
            IngestCallRequest {
                call_id: "call-77".into(),
                from_number: "030 1234567".into(),
                to_number: "+49 30 9999999".into(),
                direction: InteractionDirection::Inbound as i32,
                outcome: CallOutcome::Answered as i32,
                start_time: Some(ts(now - chrono::Duration::hours(1))),
                duration_seconds: 240,
                default_region: "DE".into(),
                summary: "Printer still broken, wants a technician".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let c = call.interaction.unwrap();
    assert_eq!(c.contact, li.name, "the caller's number was matched");
    assert_eq!(c.participants[0].address, "+49301234567");
    assert_eq!(c.outcome, "ANSWERED");
    assert_eq!(c.duration_seconds, 240);

    // The agent sees both, newest first, on the contact's and on the account's timeline.
    for parent in [&li.name, &account.name] {
        let tl = s
            .timeline()
            .get_timeline(req(
                &agent,
                GetTimelineRequest {
                    parent: parent.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let names: Vec<&str> = tl.interactions.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, [c.name.as_str(), m.name.as_str()], "{parent}");
    }
    // Filtered by channel, and paged.
    let only_mail = s
        .timeline()
        .get_timeline(req(
            &agent,
            GetTimelineRequest {
                parent: li.name.clone(),
                channels: vec![InteractionChannel::Email as i32],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_mail.interactions.len(), 1);
    let first_page = s
        .timeline()
        .get_timeline(req(
            &agent,
            GetTimelineRequest {
                parent: li.name.clone(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.interactions[0].name, c.name);
    let second = s
        .timeline()
        .get_timeline(req(
            &agent,
            GetTimelineRequest {
                parent: li.name.clone(),
                page_size: 1,
                page_token: first_page.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.interactions[0].name, m.name);

    // The agent opens a case: the standard policy, its clock running.
    let case = create_case(
        &s,
        &agent,
        Case {
            title: "Printer broken".into(),
            contact: li.name.clone(),
            account: account.name.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(case.status, CaseStatus::New as i32);
    assert_eq!(case.sla_policy, "standard");
    assert_eq!(case.sla_status, SlaStatus::Ok as i32);
    assert_eq!(case.owner, agent_name);
    let created = case.create_time.unwrap().seconds;
    assert!(
        (case.first_response_due_time.unwrap().seconds - created - 3600).abs() <= 1,
        "{case:?}"
    );
    assert_eq!(case.steps.len(), 1);
    assert_eq!(case.steps[0].action, CaseAction::Created as i32);

    // Time passes: the warning (half of the hour), then the breach and the escalation.
    let clock = ManualClock::new(SystemClock.now());
    let mut handlers = JobHandlers::new();
    crm_gateway::server::register_jobs(&mut handlers).unwrap();
    let runner = Runner::start(
        s.db.clone(),
        Arc::new(clock.clone()),
        handlers,
        runner_settings(),
    );
    clock.advance(chrono::Duration::minutes(35));
    let warned = wait_case(&s, &agent, &case.name, |c| {
        c.sla_status == SlaStatus::Warning as i32
    })
    .await;
    assert!(warned.escalated_to.is_empty());
    assert!(
        warned
            .steps
            .iter()
            .any(|st| st.result.contains("first response SLA warning") && !st.public),
        "{:?}",
        warned.steps
    );
    clock.advance(chrono::Duration::minutes(30));
    let breached = wait_case(&s, &agent, &case.name, |c| {
        c.sla_status == SlaStatus::Breached as i32 && !c.escalated_to.is_empty()
    })
    .await;
    assert_eq!(
        breached.escalated_to, boss,
        "escalated to the agent's manager"
    );
    assert!(breached.escalate_time.is_some());
    let escalations = breached
        .steps
        .iter()
        .filter(|st| st.action == CaseAction::Escalated as i32)
        .count();
    assert_eq!(escalations, 1);
    runner.shutdown().await;

    // The agent answers and resolves it.
    let answered = s
        .cases()
        .respond_to_case(req(
            &agent,
            RespondToCaseRequest {
                name: case.name.clone(),
                note: "A technician comes tomorrow.".into(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered.status, CaseStatus::Open as i32);
    assert!(answered.first_response_time.is_some());
    let resolved = s
        .cases()
        .transition_case(req(
            &agent,
            TransitionCaseRequest {
                name: case.name.clone(),
                status: CaseStatus::Resolved as i32,
                note: "The printer works again.".into(),
                etag: answered.etag.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.status, CaseStatus::Resolved as i32);
    assert!(resolved.resolve_time.is_some());
    assert!(resolved.resolution_due_time.is_none());

    // The customer's view: each public step, no internal one, no handler.
    let view = s
        .cases()
        .get_case_customer_view(req(
            &agent,
            GetCaseCustomerViewRequest {
                name: case.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.status, CaseStatus::Resolved as i32);
    assert_eq!(view.status_label, "Resolved");
    let actions: Vec<i32> = view.steps.iter().map(|s| s.action).collect();
    assert_eq!(
        actions,
        [
            CaseAction::Created as i32,
            CaseAction::StatusChanged as i32,
            CaseAction::Responded as i32,
            CaseAction::StatusChanged as i32,
        ]
    );
    assert_eq!(view.steps[2].note, "A technician comes tomorrow.");
    assert_eq!(view.steps[3].status_label, "Resolved");
    assert!(view.expected_resolution_time.is_none());
    // The due list: the resolved case is no longer due.
    let due = s
        .cases()
        .list_cases(req(
            &agent,
            ListCasesRequest {
                filter: format!("resolution_due_time > \"{}\"", now.to_rfc3339()),
                order_by: "resolution_due_time".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(due.cases.is_empty());
}

async fn reingesting_an_email_returns_the_first_interaction(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let raw = email(
        "once@mail.example.com",
        "someone@unknown.example",
        "Question",
        SystemClock.now(),
    );
    let first = ingest(&s, &t, raw.clone()).await.unwrap();
    let again = ingest(&s, &t, raw).await.unwrap();
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(again.threading, "DUPLICATE");
    let a = first.interaction.unwrap();
    assert_eq!(again.interaction.unwrap().name, a.name);
    assert!(!a.matched, "an unknown sender stays unmatched");
    assert!(a.contact.is_empty());
    assert_eq!(s.count("interactions", "acme").await, 1);

    // A reply joins the conversation.
    let reply = "From: someone@unknown.example\r\nTo: support@acme.example\r\n\
         Subject: Re: Question\r\nMessage-ID: <twice@mail.example.com>\r\n\
         In-Reply-To: <once@mail.example.com>\r\n\r\nThanks!\r\n"
        .to_owned();
    let r = ingest(&s, &t, reply.into_bytes()).await.unwrap();
    assert_eq!(r.threading, "IN_REPLY_TO");
    assert_eq!(r.interaction.unwrap().conversation, a.conversation);
}

async fn malformed_mime_is_refused_clearly(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let e = expect_code(ingest(&s, &t, Vec::new()).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&e), ["raw"]);
    assert!(e.message().contains("not an e-mail"), "{}", e.message());
    let e = expect_code(
        s.timeline()
            .ingest_call(req(
                &t,
                IngestCallRequest {
                    from_number: "12".into(),
                    direction: InteractionDirection::Inbound as i32,
                    outcome: CallOutcome::Missed as i32,
                    start_time: Some(ts(SystemClock.now())),
                    default_region: "DE".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["from_number"]);
    assert_eq!(s.count("interactions", "acme").await, 0);
}

async fn illegal_transitions_name_both_statuses(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let c = create_case(
        &s,
        &t,
        Case {
            title: "No SLA".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(c.sla_status, SlaStatus::None as i32);
    let e = expect_code(
        s.cases()
            .transition_case(req(
                &t,
                TransitionCaseRequest {
                    name: c.name.clone(),
                    status: CaseStatus::Reopened as i32,
                    ..Default::default()
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        e.message().contains("NEW") && e.message().contains("REOPENED"),
        "{}",
        e.message()
    );
    // Nothing changed; the status is not an editable field either.
    assert_eq!(
        get_case(&s, &t, &c.name).await.status,
        CaseStatus::New as i32
    );
    let e = expect_code(
        s.cases()
            .update_case(req(
                &t,
                UpdateCaseRequest {
                    case: Some(Case {
                        name: c.name.clone(),
                        status: CaseStatus::Closed as i32,
                        ..Default::default()
                    }),
                    update_mask: crm_tests::mask(&["status"]),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["update_mask"]);
}

async fn a_calendar_without_working_hours_is_refused(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let e = expect_code(
        s.cases()
            .create_sla_policy_set(req(
                &t,
                CreateSlaPolicySetRequest {
                    policy_set: Some(policy_set(BusinessCalendar {
                        time_zone: "Europe/Berlin".into(),
                        ..Default::default()
                    })),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["policy_set.calendar.weekly_hours"]);
    let mut bad = policy_set(always_open());
    bad.default_policy = "gold".into();
    let e = expect_code(
        s.cases()
            .create_sla_policy_set(req(
                &t,
                CreateSlaPolicySetRequest {
                    policy_set: Some(bad),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["policy_set.default_policy"]);
    assert_eq!(s.count("sla_policy_sets", "acme").await, 0);
}

async fn another_tenants_case_is_not_found(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("globex").await;
    let acme = s.token("acme", Uuid::now_v7(), &["admin"]);
    let globex = s.token("globex", Uuid::now_v7(), &["admin"]);
    let c = create_case(
        &s,
        &acme,
        Case {
            title: "Ours".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    expect_code(
        s.cases()
            .get_case(req(
                &globex,
                GetCaseRequest {
                    name: c.name.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.cases()
            .transition_case(req(
                &globex,
                TransitionCaseRequest {
                    name: c.name.clone(),
                    status: CaseStatus::Open as i32,
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.cases()
            .get_case_customer_view(req(&globex, GetCaseCustomerViewRequest { name: c.name }))
            .await,
        Code::NotFound,
    );
}

async fn a_rep_sees_only_their_own_interactions(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    roles(&s, "acme").await;
    let anna = s.token("acme", Uuid::now_v7(), &["rep"]);
    let ben = s.token("acme", Uuid::now_v7(), &["rep"]);
    let now = SystemClock.now();
    let a = ingest(
        &s,
        &anna,
        email("a@x.example", "a@customer.example", "A", now),
    )
    .await
    .unwrap()
    .interaction
    .unwrap();
    let b = ingest(
        &s,
        &ben,
        email("b@x.example", "b@customer.example", "B", now),
    )
    .await
    .unwrap()
    .interaction
    .unwrap();
    let mine = s
        .timeline()
        .list_interactions(req(&anna, ListInteractionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = mine.interactions.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, [a.name.as_str()]);
    expect_code(
        s.timeline()
            .get_interaction(req(&anna, GetInteractionRequest { name: b.name }))
            .await,
        Code::PermissionDenied,
    );
    // Nobody without a grant reads interactions at all.
    let nobody = s.token("acme", Uuid::now_v7(), &[]);
    expect_code(
        s.timeline()
            .list_interactions(req(&nobody, ListInteractionsRequest::default()))
            .await,
        Code::PermissionDenied,
    );
}

async fn a_watch_streams_new_interactions(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let li = contact(&s, &t, "li.lei@example.com", "+49 30 1234567").await;
    let mut stream = s
        .timeline()
        .watch_timeline(req(
            &t,
            WatchTimelineRequest {
                parent: li.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let m = ingest(
        &s,
        &t,
        email(
            "w@mail.example.com",
            "li.lei@example.com",
            "Hi",
            SystemClock.now(),
        ),
    )
    .await
    .unwrap()
    .interaction
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the watch sent the new interaction in time")
        .unwrap()
        .unwrap();
    assert_eq!(got.name, m.name);
    // An unknown parent is refused before the stream starts.
    expect_code(
        s.timeline()
            .watch_timeline(req(
                &t,
                WatchTimelineRequest {
                    parent: format!("contacts/{}", Uuid::now_v7()),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
    );
}

async fn unknown_senders_become_leads_by_policy(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("globex").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    // An intake agent who may log interactions but not create leads: the tenant's policy
    // makes the lead, not the agent.
    use crm_core::access::{Action, Grant, Scope};
    s.admin_ctx("acme")
        .create(
            crm_core::model::Role {
                key: "intake".into(),
                display_name: "Intake".into(),
                grants: vec![
                    Grant {
                        collection: "interactions".into(),
                        actions: vec![Action::Read, Action::Create],
                        scope: Scope::All,
                    },
                    Grant {
                        collection: "contacts".into(),
                        actions: vec![Action::Read],
                        scope: Scope::All,
                    },
                ],
                field_rules: vec![],
            },
            "",
        )
        .await
        .unwrap();
    let agent = s.token("acme", Uuid::now_v7(), &["intake"]);
    let now = chrono::Utc::now();

    // Without a policy, an unknown sender stays unmatched.
    let r = ingest(
        &s,
        &agent,
        email("m1@x.example", "wang.fang@newco.example", "Pricing", now),
    )
    .await
    .unwrap();
    let i = r.interaction.unwrap();
    assert!(!i.matched);
    assert_eq!(i.lead, "");
    assert_eq!(s.count("leads", "acme").await, 0);

    let policy = s
        .leads()
        .create_lead_capture_policy(req(
            &admin,
            CreateLeadCapturePolicyRequest {
                policy: Some(LeadCapturePolicy {
                    display_name: "Inbox".into(),
                    active: true,
                    email_senders: true,
                    callers: true,
                    ignore: vec!["*@partner.example".into()],
                    source: String::new(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(policy.ignore, vec!["*@partner.example".to_owned()]);
    // A bad pattern is named.
    let st = expect_code(
        s.leads()
            .create_lead_capture_policy(req(
                &admin,
                CreateLeadCapturePolicyRequest {
                    policy: Some(LeadCapturePolicy {
                        display_name: "All".into(),
                        ignore: vec!["*".into()],
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&st), vec!["policy.ignore[0]".to_owned()]);

    // An unknown sender now makes a lead, linked to the interaction, in the same write.
    let r = ingest(
        &s,
        &agent,
        email(
            "m2@x.example",
            "Zhao.Min@NewCo.example",
            "Quote for 40 printers",
            now,
        ),
    )
    .await
    .unwrap();
    let i = r.interaction.unwrap();
    assert!(!i.lead.is_empty(), "{i:?}");
    let lead = s
        .leads()
        .get_lead(req(
            &admin,
            GetLeadRequest {
                name: i.lead.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lead.emails[0].address, "zhao.min@newco.example");
    assert_eq!(lead.source, "email");
    assert!(
        lead.notes.contains("Quote for 40 printers"),
        "{}",
        lead.notes
    );
    // A second message from the same stranger joins that lead.
    let r = ingest(
        &s,
        &agent,
        email("m3@x.example", "zhao.min@newco.example", "Re: Quote", now),
    )
    .await
    .unwrap();
    assert_eq!(r.interaction.unwrap().lead, i.lead);
    // Re-ingesting the first message changes nothing.
    let again = ingest(
        &s,
        &agent,
        email(
            "m2@x.example",
            "Zhao.Min@NewCo.example",
            "Quote for 40 printers",
            now,
        ),
    )
    .await
    .unwrap();
    assert!(!again.created);
    assert_eq!(s.count("leads", "acme").await, 1);

    // Ignored addresses: the policy's, and the built-in no-reply ones.
    for from in [
        "li@partner.example",
        "noreply@shop.example",
        "MAILER-DAEMON@mx.example",
    ] {
        let r = ingest(&s, &agent, email(&format!("{from}-id"), from, "Hi", now))
            .await
            .unwrap();
        assert_eq!(r.interaction.unwrap().lead, "", "{from}");
    }
    // A known contact's message makes no lead.
    contact(&s, &admin, "li.lei@example.com", "+8613800138000").await;
    let r = ingest(
        &s,
        &agent,
        email("m4@x.example", "li.lei@example.com", "Hello", now),
    )
    .await
    .unwrap();
    let i = r.interaction.unwrap();
    assert!(i.matched);
    assert_eq!(i.lead, "");
    assert_eq!(s.count("leads", "acme").await, 1);

    // An unknown caller makes a lead with the number.
    let call = s
        .timeline()
        .ingest_call(req(
            &agent,
            IngestCallRequest {
                call_id: "call-1".into(),
                from_number: "+49 30 1234567".into(),
                to_number: "+49 30 9999999".into(),
                direction: InteractionDirection::Inbound as i32,
                outcome: CallOutcome::Answered as i32,
                start_time: Some(ts(now)),
                duration_seconds: 60,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .interaction
        .unwrap();
    let lead = s
        .leads()
        .get_lead(req(
            &admin,
            GetLeadRequest {
                name: call.lead.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lead.phones[0].number, "+49301234567");
    assert_eq!(lead.source, "phone");

    // Callers are switched off: the next unknown caller stays unmatched.
    s.leads()
        .update_lead_capture_policy(req(
            &admin,
            UpdateLeadCapturePolicyRequest {
                policy: Some(LeadCapturePolicy {
                    callers: false,
                    ..policy.clone()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["callers".into()],
                }),
            },
        ))
        .await
        .unwrap();
    let call = s
        .timeline()
        .ingest_call(req(
            &agent,
            IngestCallRequest {
                call_id: "call-2".into(),
                from_number: "+49 30 7654321".into(),
                direction: InteractionDirection::Inbound as i32,
                outcome: CallOutcome::Missed as i32,
                start_time: Some(ts(now)),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .interaction
        .unwrap();
    assert_eq!(call.lead, "");
    assert_eq!(s.count("leads", "acme").await, 2);

    // Another tenant's policy name is NOT_FOUND; the intake agent may not read policies.
    let other = s.token("globex", Uuid::now_v7(), &["admin"]);
    expect_code(
        s.leads()
            .get_lead_capture_policy(req(
                &other,
                GetLeadCapturePolicyRequest {
                    name: policy.name.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.leads()
            .get_lead_capture_policy(req(
                &agent,
                GetLeadCapturePolicyRequest {
                    name: policy.name.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
}

async fn a_case_opens_from_an_interaction(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("globex").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let li = contact(&s, &admin, "li.lei@example.com", "+8613800138000").await;
    let now = chrono::Utc::now();
    let i = ingest(
        &s,
        &admin,
        email(
            "case-1@x.example",
            "li.lei@example.com",
            "Printer jams",
            now,
        ),
    )
    .await
    .unwrap()
    .interaction
    .unwrap();
    let case = create_case(
        &s,
        &admin,
        Case {
            source_interaction: i.name.clone(),
            category: "hardware".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(case.title, "Printer jams");
    assert_eq!(case.contact, li.name);
    assert_eq!(case.channel, "EMAIL");
    assert_eq!(case.source_interaction, i.name);
    assert!(
        case.description.contains("printer is broken"),
        "{}",
        case.description
    );
    let linked = s
        .timeline()
        .get_interaction(req(
            &admin,
            GetInteractionRequest {
                name: i.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(linked.case, case.name);
    // Given fields win over the interaction's.
    let j = ingest(
        &s,
        &admin,
        email("case-2@x.example", "li.lei@example.com", "Toner", now),
    )
    .await
    .unwrap()
    .interaction
    .unwrap();
    let own = create_case(
        &s,
        &admin,
        Case {
            source_interaction: j.name.clone(),
            title: "Toner order".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(own.title, "Toner order");
    // One interaction, one case.
    let st = expect_code(
        create_case(
            &s,
            &admin,
            Case {
                source_interaction: i.name.clone(),
                ..Default::default()
            },
        )
        .await,
        Code::FailedPrecondition,
    );
    assert_eq!(crm_tests::reason(&st), "INTERACTION_HAS_CASE");
    // Another tenant's interaction is NOT_FOUND; a malformed name is named.
    let other = s.token("globex", Uuid::now_v7(), &["admin"]);
    expect_code(
        create_case(
            &s,
            &other,
            Case {
                source_interaction: j.name.clone(),
                title: "x".into(),
                ..Default::default()
            },
        )
        .await,
        Code::NotFound,
    );
    let st = expect_code(
        create_case(
            &s,
            &admin,
            Case {
                source_interaction: "interactions/nope".into(),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&st),
        vec!["case.source_interaction".to_owned()]
    );
    assert_eq!(s.count("cases", "globex").await, 0);
}

async fn new_cases_go_to_the_least_loaded_skilled_agent(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let billing = user(&s, &admin, "bella", "").await;
    let anyone = user(&s, &admin, "arno", "").await;
    let set = |agents: Vec<CaseAgent>| SlaPolicySet {
        assignment: Some(CaseAssignment {
            agents,
            max_open: 0,
        }),
        ..policy_set(always_open())
    };
    // An unknown agent is named.
    let st = expect_code(
        s.cases()
            .create_sla_policy_set(req(
                &admin,
                CreateSlaPolicySetRequest {
                    policy_set: Some(set(vec![CaseAgent {
                        user: format!("users/{}", Uuid::now_v7()),
                        categories: vec![],
                    }])),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&st),
        vec!["policy_set.assignment.agents[0].user".to_owned()]
    );
    s.cases()
        .create_sla_policy_set(req(
            &admin,
            CreateSlaPolicySetRequest {
                policy_set: Some(set(vec![
                    CaseAgent {
                        user: billing.clone(),
                        categories: vec!["Billing".into()],
                    },
                    CaseAgent {
                        user: anyone.clone(),
                        categories: vec![],
                    },
                ])),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let new = |category: &str, owner: &str| Case {
        title: format!("{category} question"),
        category: category.into(),
        owner: owner.into(),
        ..Default::default()
    };
    // A tie goes to the first agent; then the less loaded one; skills decide who may take it.
    let c1 = create_case(&s, &admin, new("billing", "")).await.unwrap();
    assert_eq!(c1.owner, billing);
    let c2 = create_case(&s, &admin, new("billing", "")).await.unwrap();
    assert_eq!(c2.owner, anyone);
    let c3 = create_case(&s, &admin, new("hardware", "")).await.unwrap();
    assert_eq!(c3.owner, anyone, "bella handles billing only");
    let c4 = create_case(&s, &admin, new("billing", "")).await.unwrap();
    assert_eq!(c4.owner, billing, "bella has 1 open case, arno 2");
    assert!(
        c4.steps
            .iter()
            .any(|st| st.result.contains("by the service desk's rules")),
        "{:?}",
        c4.steps
    );
    // A resolved case no longer counts; a named owner is kept.
    transition_to(&s, &admin, &c2.name, CaseStatus::Resolved).await;
    transition_to(&s, &admin, &c3.name, CaseStatus::Resolved).await;
    let c5 = create_case(&s, &admin, new("billing", "")).await.unwrap();
    assert_eq!(c5.owner, anyone);
    let mine = create_case(&s, &admin, new("billing", &billing))
        .await
        .unwrap();
    assert_eq!(mine.owner, billing);
}

async fn transition_to(s: &TestServer, t: &str, name: &str, to: CaseStatus) {
    for step in match to {
        CaseStatus::Resolved => vec![CaseStatus::Open, CaseStatus::Resolved],
        other => vec![other],
    } {
        s.cases()
            .transition_case(req(
                t,
                TransitionCaseRequest {
                    name: name.into(),
                    status: step as i32,
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
    }
}

both!(
    new_cases_go_to_the_least_loaded_skilled_agent,
    a_case_opens_from_an_interaction,
    unknown_senders_become_leads_by_policy,
    a_customer_emails_calls_and_gets_a_case_resolved,
    reingesting_an_email_returns_the_first_interaction,
    malformed_mime_is_refused_clearly,
    illegal_transitions_name_both_statuses,
    a_calendar_without_working_hours_is_refused,
    another_tenants_case_is_not_found,
    a_rep_sees_only_their_own_interactions,
    a_watch_streams_new_interactions,
);
