//! ConsentService (K7): the consent ledger of each person, append-only, and the check an
//! outbound action makes, on SQLite and PostgreSQL.

use chrono::{Duration, Utc};
use crm_api::v1::consent_service_client::ConsentServiceClient;
use crm_api::v1::*;
use crm_tests::{Backend, TestServer, both, expect_code, req, violated_fields};
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

both!(
    the_latest_entry_decides_per_purpose_and_channel,
    bad_entries_and_checks_are_refused_by_field,
    ledgers_are_tenant_scoped_and_follow_the_people_s_scope,
);

fn consents(s: &TestServer) -> ConsentServiceClient<Channel> {
    ConsentServiceClient::new(s.channel.clone())
}

fn at(days_ago: i64) -> prost_types::Timestamp {
    let t = Utc::now() - Duration::days(days_ago);
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

async fn person(s: &TestServer, t: &str, given: &str) -> String {
    s.contacts()
        .create_contact(req(
            t,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: given.into(),
                    family_name: "Consent".into(),
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

fn entry(
    contact: &str,
    purpose: &str,
    channel: ConsentChannel,
    status: ConsentStatus,
    days_ago: i64,
) -> Consent {
    Consent {
        contact: contact.into(),
        purpose: purpose.into(),
        channel: channel as i32,
        status: status as i32,
        effective_time: Some(at(days_ago)),
        source: "web_form".into(),
        proof: "form submission 4711".into(),
        ..Default::default()
    }
}

async fn record(s: &TestServer, t: &str, c: Consent) -> Result<Consent, tonic::Status> {
    consents(s)
        .record_consent(req(
            t,
            RecordConsentRequest {
                consent: Some(c),
                request_id: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn check(
    s: &TestServer,
    t: &str,
    contact: &str,
    purpose: &str,
    channel: ConsentChannel,
    days_ago: Option<i64>,
) -> Result<ConsentCheck, tonic::Status> {
    consents(s)
        .check_consent(req(
            t,
            CheckConsentRequest {
                contact: contact.into(),
                purpose: purpose.into(),
                channel: channel as i32,
                check_time: days_ago.map(at),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn the_latest_entry_decides_per_purpose_and_channel(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let anna = person(&s, &t, "Anna").await;
    use ConsentChannel::{Any, Email, Phone};
    use ConsentStatus::{Granted, Withdrawn};

    // Nothing recorded: no.
    let c = check(&s, &t, &anna, "marketing", Email, None)
        .await
        .unwrap();
    assert!(!c.allowed);
    assert!(c.deciding_consent.is_none());

    let granted = record(&s, &t, entry(&anna, " Marketing ", Any, Granted, 10))
        .await
        .unwrap();
    assert_eq!(granted.purpose, "marketing");
    assert!(granted.name.starts_with("consents/"));
    let withdrawn = record(&s, &t, entry(&anna, "marketing", Email, Withdrawn, 5))
        .await
        .unwrap();
    // Now: e-mail withdrawn, the phone still granted (every channel).
    let c = check(&s, &t, &anna, "marketing", Email, None)
        .await
        .unwrap();
    assert!(!c.allowed, "{c:?}");
    assert_eq!(c.deciding_consent.unwrap().name, withdrawn.name);
    let c = check(&s, &t, &anna, "marketing", Phone, None)
        .await
        .unwrap();
    assert!(c.allowed, "{c:?}");
    assert_eq!(c.deciding_consent.unwrap().name, granted.name);
    // A week ago e-mail was still allowed; two weeks ago nothing was.
    assert!(
        check(&s, &t, &anna, "marketing", Email, Some(7))
            .await
            .unwrap()
            .allowed
    );
    assert!(
        !check(&s, &t, &anna, "marketing", Email, Some(14))
            .await
            .unwrap()
            .allowed
    );
    // Purposes are apart.
    assert!(
        !check(&s, &t, &anna, "newsletter", Phone, None)
            .await
            .unwrap()
            .allowed
    );
    // Granted again over e-mail: allowed from then on.
    record(&s, &t, entry(&anna, "marketing", Email, Granted, 1))
        .await
        .unwrap();
    assert!(
        check(&s, &t, &anna, "marketing", Email, None)
            .await
            .unwrap()
            .allowed
    );

    // The ledger, oldest first, filtered by person and purpose.
    let list = consents(&s)
        .list_consents(req(
            &t,
            ListConsentsRequest {
                filter: format!("contact = \"{anna}\" AND purpose = \"marketing\""),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .consents;
    let statuses: Vec<i32> = list.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [Granted as i32, Withdrawn as i32, Granted as i32]);
    let got = consents(&s)
        .get_consent(req(
            &t,
            GetConsentRequest {
                name: withdrawn.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, withdrawn);

    // The ledger is append-only, also through the engine.
    let ctx = s.admin_ctx("acme");
    let id = Uuid::parse_str(withdrawn.name.trim_start_matches("consents/")).unwrap();
    let rec = ctx.get::<crm_core::model::Consent>(id).await.unwrap();
    let e = ctx
        .delete::<crm_core::model::Consent>(id, &rec.meta.etag())
        .await
        .unwrap_err();
    assert_eq!(
        e.kind,
        crm_core::error::ErrorKind::FailedPrecondition,
        "{e:?}"
    );
    assert_eq!(s.count("consents", "acme").await, 3);
}

async fn bad_entries_and_checks_are_refused_by_field(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let anna = person(&s, &t, "Anna").await;
    use ConsentChannel::{Email, Unspecified};
    use ConsentStatus::Granted;
    let cases: Vec<(Consent, &str)> = vec![
        (entry("", "marketing", Email, Granted, 1), "contact"),
        (
            entry("contacts/nope", "marketing", Email, Granted, 1),
            "contact",
        ),
        (entry(&anna, "send me mail!", Email, Granted, 1), "purpose"),
        (entry(&anna, "", Email, Granted, 1), "purpose"),
        (
            entry(&anna, "marketing", Unspecified, Granted, 1),
            "channel",
        ),
        (
            Consent {
                channel: 99,
                ..entry(&anna, "marketing", Email, Granted, 1)
            },
            "channel",
        ),
        (
            Consent {
                status: 0,
                ..entry(&anna, "marketing", Email, Granted, 1)
            },
            "status",
        ),
        (
            entry(&anna, "marketing", Email, Granted, -2),
            "effective_time",
        ),
        (
            Consent {
                proof: "x".repeat(2001),
                ..entry(&anna, "marketing", Email, Granted, 1)
            },
            "proof",
        ),
    ];
    for (c, field) in cases {
        let e = record(&s, &t, c).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(
            violated_fields(&e).iter().any(|f| f.ends_with(field)),
            "{field}: {:?}",
            violated_fields(&e)
        );
    }
    for (contact, purpose, channel, field) in [
        ("", "marketing", Email, "contact"),
        (anna.as_str(), "bad purpose", Email, "purpose"),
        (anna.as_str(), "marketing", Unspecified, "channel"),
    ] {
        let e = check(&s, &t, contact, purpose, channel, None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(violated_fields(&e).iter().any(|f| f == field), "{e:?}");
    }
    assert_eq!(s.count("consents", "acme").await, 0);
}

async fn ledgers_are_tenant_scoped_and_follow_the_people_s_scope(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("other").await;
    for r in crm_gateway::demo::roles() {
        s.admin_ctx("acme").create(r, "").await.unwrap();
    }
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let rep = s.token("acme", Uuid::now_v7(), &["rep"]);
    let stranger = s.token("other", Uuid::now_v7(), &["admin"]);
    let theirs = person(&s, &admin, "Someone").await;
    let mine = person(&s, &rep, "Mine").await;
    use ConsentChannel::Email;
    use ConsentStatus::Granted;
    let entry_theirs = record(&s, &admin, entry(&theirs, "marketing", Email, Granted, 1))
        .await
        .unwrap();
    // The rep records and checks consents of their own people only.
    record(&s, &rep, entry(&mine, "marketing", Email, Granted, 1))
        .await
        .unwrap();
    assert!(
        check(&s, &rep, &mine, "marketing", Email, None)
            .await
            .unwrap()
            .allowed
    );
    // Outside the rep's records: refused as GetContact refuses it.
    expect_code(
        check(&s, &rep, &theirs, "marketing", Email, None).await,
        Code::PermissionDenied,
    );
    let e = record(&s, &rep, entry(&theirs, "marketing", Email, Granted, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::PermissionDenied | Code::NotFound),
        "{e:?}"
    );
    let seen = consents(&s)
        .list_consents(req(&rep, ListConsentsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .consents;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].contact, mine);
    expect_code(
        consents(&s)
            .get_consent(req(
                &rep,
                GetConsentRequest {
                    name: entry_theirs.name.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    // Another tenant's ids are not found.
    expect_code(
        consents(&s)
            .get_consent(req(
                &stranger,
                GetConsentRequest {
                    name: entry_theirs.name.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        check(&s, &stranger, &theirs, "marketing", Email, None).await,
        Code::NotFound,
    );
    let e = record(
        &s,
        &stranger,
        entry(&theirs, "marketing", Email, Granted, 1),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(violated_fields(&e), ["consent.contact"]);
    // A role without consents cannot read them.
    s.admin_ctx("acme")
        .create(
            crm_core::model::Role {
                key: "viewer".into(),
                display_name: "Viewer".into(),
                grants: vec![crm_core::access::Grant {
                    collection: "contacts".into(),
                    actions: vec![crm_core::access::Action::Read],
                    scope: crm_core::access::Scope::All,
                }],
                field_rules: vec![],
            },
            "",
        )
        .await
        .unwrap();
    let viewer = s.token("acme", Uuid::now_v7(), &["viewer"]);
    expect_code(
        check(&s, &viewer, &theirs, "marketing", Email, None).await,
        Code::PermissionDenied,
    );
    // A role that hides the status of consents: entries come without it (named as hidden),
    // and it cannot check (the status decides).
    use crm_core::access::{Action, FieldAccess, FieldRule, Grant, Scope};
    s.admin_ctx("acme")
        .create(
            crm_core::model::Role {
                key: "blind".into(),
                display_name: "Blind".into(),
                grants: vec![
                    Grant {
                        collection: "contacts".into(),
                        actions: vec![Action::Read],
                        scope: Scope::All,
                    },
                    Grant {
                        collection: "consents".into(),
                        actions: vec![Action::Read],
                        scope: Scope::All,
                    },
                ],
                field_rules: vec![FieldRule {
                    collection: "consents".into(),
                    field: "status".into(),
                    access: FieldAccess::Hidden,
                }],
            },
            "",
        )
        .await
        .unwrap();
    let blind = s.token("acme", Uuid::now_v7(), &["blind"]);
    let got = consents(&s)
        .get_consent(req(
            &blind,
            GetConsentRequest {
                name: entry_theirs.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, ConsentStatus::Unspecified as i32);
    assert_eq!(got.hidden_fields, ["status"]);
    let e = expect_code(
        check(&s, &blind, &theirs, "marketing", Email, None).await,
        Code::PermissionDenied,
    );
    assert!(e.message().contains("status"), "{e:?}");
}
