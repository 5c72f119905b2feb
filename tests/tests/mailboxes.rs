//! MailboxService (crm-collaborative): IMAP accounts polled into the timeline, against a
//! real IMAP server (Dovecot, started by scripts/test: CRM_TEST_IMAP_URL and
//! CRM_TEST_IMAP_PASSWORD, any user name logging in with the password), on SQLite and
//! PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::v1::*;
use crm_collaborative::mailbox::MailboxAccount as Stored;
use crm_tests::{Backend, TestServer, both, expect_code, req, violated_fields};
use tonic::Code;
use uuid::Uuid;

/// The test IMAP server: host, port, password.
fn imap_server() -> (String, u16, String) {
    let url = std::env::var("CRM_TEST_IMAP_URL")
        .expect("CRM_TEST_IMAP_URL (imap://host:port); scripts/test starts a Dovecot");
    let password = std::env::var("CRM_TEST_IMAP_PASSWORD").expect("CRM_TEST_IMAP_PASSWORD");
    let hostport = url.trim_start_matches("imap://").trim_end_matches('/');
    let (host, port) = hostport.rsplit_once(':').expect("imap://host:port");
    (host.to_owned(), port.parse().unwrap(), password)
}

/// A mail client of the test server, as `user`.
async fn imap(user: &str) -> async_imap::Session<tokio::net::TcpStream> {
    let (host, port, password) = imap_server();
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .unwrap();
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.unwrap().unwrap();
    client
        .login(user, &password)
        .await
        .map_err(|(e, _)| e)
        .unwrap()
}

fn message(n: u32, from: &str) -> Vec<u8> {
    format!(
        "From: Li Lei <{from}>\r\n\
         To: support@acme.example\r\n\
         Subject: Printer problem {n}\r\n\
         Date: Tue, 24 Nov 2026 10:{n:02}:00 +0000\r\n\
         Message-ID: <printer-{n}@example.com>\r\n\
         \r\n\
         The printer is broken ({n}).\r\n"
    )
    .into_bytes()
}

/// A message intake refuses: MIME parts nested deeper than its limit.
fn too_deep() -> Vec<u8> {
    let mut body = String::from("Content-Type: text/plain\r\n\r\ndeep\r\n");
    for i in 0..40 {
        body = format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n{body}\r\n--b{i}--\r\n"
        );
    }
    format!(
        "From: x@example.com\r\nSubject: deep\r\nMessage-ID: <deep@example.com>\r\nMIME-Version: 1.0\r\n{body}"
    )
    .into_bytes()
}

async fn append(user: &str, folder: &str, messages: &[Vec<u8>]) {
    let mut s = imap(user).await;
    for m in messages {
        s.append(folder, None, None, m).await.unwrap();
    }
    s.logout().await.unwrap();
}

fn account(user: &str, folder: &str) -> MailboxAccount {
    let (host, port, password) = imap_server();
    MailboxAccount {
        display_name: "Support".into(),
        host,
        port: port.into(),
        security: MailboxSecurity::Plain as i32,
        username: user.into(),
        password,
        folder: folder.into(),
        // Polls in the test are asked for; the periodic one waits an hour.
        poll_interval_seconds: 3600,
        enabled: true,
        ..Default::default()
    }
}

async fn create(
    s: &TestServer,
    t: &str,
    a: MailboxAccount,
) -> Result<MailboxAccount, tonic::Status> {
    s.mailboxes()
        .create_mailbox_account(req(
            t,
            CreateMailboxAccountRequest {
                account: Some(a),
                request_id: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn get(s: &TestServer, t: &str, name: &str) -> MailboxAccount {
    s.mailboxes()
        .get_mailbox_account(req(t, GetMailboxAccountRequest { name: name.into() }))
        .await
        .unwrap()
        .into_inner()
}

/// Polls now and waits for the poll; the operation's response as JSON, or its error.
async fn poll(s: &TestServer, t: &str, name: &str) -> Result<serde_json::Value, (i32, String)> {
    use crm_api::google::longrunning::operation::Result as R;
    let op = s
        .mailboxes()
        .poll_mailbox_account(req(t, PollMailboxAccountRequest { name: name.into() }))
        .await
        .unwrap()
        .into_inner();
    let op = s.wait_operation(t, &op.name).await;
    match op.result.expect("a finished operation has a result") {
        R::Response(any) => {
            let r: OperationResult = prost::Message::decode(any.value.as_slice()).unwrap();
            assert_eq!(r.kind, "crm.collaborative.mailbox_poll");
            match r.result.and_then(|v| v.kind) {
                Some(prost_types::value::Kind::StructValue(st)) => Ok(struct_json(st)),
                other => panic!("no result: {other:?}"),
            }
        }
        R::Error(e) => Err((e.code, e.message)),
    }
}

fn struct_json(s: prost_types::Struct) -> serde_json::Value {
    fn value(v: prost_types::Value) -> serde_json::Value {
        use prost_types::value::Kind;
        match v.kind {
            Some(Kind::NumberValue(n)) => serde_json::json!(n),
            Some(Kind::StringValue(s)) => serde_json::json!(s),
            Some(Kind::BoolValue(b)) => serde_json::json!(b),
            Some(Kind::StructValue(s)) => struct_json(s),
            Some(Kind::ListValue(l)) => l.values.into_iter().map(value).collect(),
            _ => serde_json::Value::Null,
        }
    }
    s.fields.into_iter().map(|(k, v)| (k, value(v))).collect()
}

/// Interactions of the tenant (the e-mails ingested).
async fn interactions(s: &TestServer, tenant: &str) -> i64 {
    s.count("interactions", tenant).await
}

async fn contact(s: &TestServer, t: &str, email: &str) -> String {
    s.contacts()
        .create_contact(req(
            t,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: "Lei".into(),
                    family_name: "Li".into(),
                    emails: vec![Email {
                        address: email.into(),
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
        .name
}

async fn a_mailbox_is_polled_exactly_once(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let customer = contact(&s, &admin, "li.lei@example.com").await;
    let user = format!("support-{}", Uuid::now_v7().simple());
    append(
        &user,
        "INBOX",
        &(1..=3)
            .map(|n| message(n, "li.lei@example.com"))
            .collect::<Vec<_>>(),
    )
    .await;

    // Created: the password is never returned, and is stored sealed.
    let (_, _, password) = imap_server();
    let acc = create(&s, &admin, account(&user, "")).await.unwrap();
    assert!(acc.password.is_empty());
    assert!(acc.has_password);
    assert_eq!(acc.folder, "INBOX");
    let stored = s
        .admin_ctx("acme")
        .get::<Stored>(acc.name.rsplit('/').next().unwrap().parse().unwrap())
        .await
        .unwrap();
    assert!(stored.data.password.starts_with("v1."));
    assert!(!stored.data.password.contains(&password));
    let audit = s
        .audit()
        .list_audit_records(req(
            &admin,
            ListAuditRecordsRequest {
                parent: acc.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !format!("{audit:?}").contains(&password),
        "the audit keeps no password"
    );

    // The first poll takes the three messages, linked to the contact.
    poll(&s, &admin, &acc.name).await.unwrap();
    let a = get(&s, &admin, &acc.name).await;
    assert_eq!((a.last_uid, a.messages_ingested), (3, 3), "{a:?}");
    assert!(a.uid_validity > 0);
    assert_eq!(interactions(&s, "acme").await, 3);
    let timeline = s
        .timeline()
        .get_timeline(req(
            &admin,
            GetTimelineRequest {
                parent: customer.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(timeline.interactions.len(), 3);

    // Two more arrive, and a message intake refuses: the refused one is passed over.
    append(
        &user,
        "INBOX",
        &[
            message(4, "li.lei@example.com"),
            too_deep(),
            message(5, "x@example.com"),
        ],
    )
    .await;
    let r = poll(&s, &admin, &acc.name).await.unwrap();
    assert_eq!(r["created"], 2.0, "{r}");
    assert_eq!(r["rejected"], 1.0, "{r}");
    let a = get(&s, &admin, &acc.name).await;
    assert_eq!((a.last_uid, a.messages_ingested), (6, 5));
    assert_eq!(interactions(&s, "acme").await, 5);

    // Two polls asked for at once take turns; neither fails.
    let (p1, p2) = futures::join!(poll(&s, &admin, &acc.name), poll(&s, &admin, &acc.name));
    p1.unwrap();
    p2.unwrap();
    assert_eq!(interactions(&s, "acme").await, 5);

    // A poll with nothing new changes nothing.
    let r = poll(&s, &admin, &acc.name).await.unwrap();
    assert_eq!(
        (r["created"].clone(), r["duplicates"].clone()),
        (0.0.into(), 0.0.into())
    );

    // A crash that lost the position (it is stored after the work): the messages after the
    // stored position are fetched again and make no second interaction.
    let ctx = s.admin_ctx("acme");
    let id: Uuid = acc.name.rsplit('/').next().unwrap().parse().unwrap();
    let cur = ctx.get::<Stored>(id).await.unwrap();
    ctx.update(
        id,
        Stored {
            last_uid: 1,
            ..Default::default()
        },
        &["last_uid".to_owned()],
        &cur.meta.etag(),
    )
    .await
    .unwrap();
    let r = poll(&s, &admin, &acc.name).await.unwrap();
    assert_eq!(r["created"], 0.0, "{r}");
    assert_eq!(r["duplicates"], 4.0, "{r}");
    assert_eq!(interactions(&s, "acme").await, 5);
    assert_eq!(get(&s, &admin, &acc.name).await.last_uid, 6);

    // Another folder; then that folder is recreated (a new UIDVALIDITY): it starts over,
    // without duplicates, and takes the new message.
    let mut session = imap(&user).await;
    session.create("Support").await.unwrap();
    session.logout().await.unwrap();
    append(
        &user,
        "Support",
        &[
            message(7, "li.lei@example.com"),
            message(8, "li.lei@example.com"),
        ],
    )
    .await;
    let a = get(&s, &admin, &acc.name).await;
    let a = s
        .mailboxes()
        .update_mailbox_account(req(
            &admin,
            UpdateMailboxAccountRequest {
                account: Some(MailboxAccount {
                    folder: "Support".into(),
                    ..a
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["folder".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(a.has_password, "a change of the folder keeps the password");
    poll(&s, &admin, &acc.name).await.unwrap();
    let before = get(&s, &admin, &acc.name).await;
    assert_eq!(before.last_uid, 2);
    assert_eq!(interactions(&s, "acme").await, 7);
    let mut session = imap(&user).await;
    session.delete("Support").await.unwrap();
    // UIDVALIDITY is a time in seconds on Dovecot: make the new folder's differ.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    session.create("Support").await.unwrap();
    session.logout().await.unwrap();
    append(
        &user,
        "Support",
        &[
            message(7, "li.lei@example.com"),
            message(8, "li.lei@example.com"),
            message(9, "li.lei@example.com"),
        ],
    )
    .await;
    let r = poll(&s, &admin, &acc.name).await.unwrap();
    assert_eq!(r["restarted"], true, "{r}");
    assert_eq!(
        (r["created"].clone(), r["duplicates"].clone()),
        (1.0.into(), 2.0.into()),
        "{r}"
    );
    let after = get(&s, &admin, &acc.name).await;
    assert_ne!(after.uid_validity, before.uid_validity);
    assert_eq!(after.last_uid, 3);
    assert_eq!(interactions(&s, "acme").await, 8);
}

async fn bad_accounts_and_failed_polls_are_clear(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("globex").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let user = format!("support-{}", Uuid::now_v7().simple());

    // Validation names the field.
    for (change, field) in [
        (
            Box::new(|a: &mut MailboxAccount| a.port = 70_000) as Box<dyn Fn(&mut MailboxAccount)>,
            "account.port",
        ),
        (
            Box::new(|a: &mut MailboxAccount| a.host = String::new()),
            "account.host",
        ),
        (
            Box::new(|a: &mut MailboxAccount| a.password = String::new()),
            "account.password",
        ),
        (
            Box::new(|a: &mut MailboxAccount| a.password = "x".repeat(2000)),
            "account.password",
        ),
        (
            Box::new(|a: &mut MailboxAccount| a.folder = "a\"b".into()),
            "account.folder",
        ),
        (
            Box::new(|a: &mut MailboxAccount| a.poll_interval_seconds = 1),
            "account.poll_interval_seconds",
        ),
        (
            Box::new(|a: &mut MailboxAccount| a.security = 9),
            "account.security",
        ),
        (
            Box::new(|a: &mut MailboxAccount| a.owner = "users/nope".into()),
            "account.owner",
        ),
    ] {
        let mut a = account(&user, "");
        change(&mut a);
        let st = expect_code(create(&s, &admin, a).await, Code::InvalidArgument);
        assert!(
            violated_fields(&st).contains(&field.to_owned()),
            "{field}: {st:?}"
        );
    }
    assert_eq!(
        s.count("mailbox_accounts", "acme").await,
        0,
        "nothing half-written"
    );

    // A wrong password: the poll's operation fails, the account keeps the error.
    let mut wrong = account(&user, "");
    wrong.password = "not-the-password".into();
    let acc = create(&s, &admin, wrong).await.unwrap();
    let (code, message) = poll(&s, &admin, &acc.name).await.unwrap_err();
    assert_eq!(code, Code::FailedPrecondition as i32, "{message}");
    assert!(message.contains("login"), "{message}");
    let a = get(&s, &admin, &acc.name).await;
    assert!(a.last_error.contains("login"), "{a:?}");
    assert!(a.last_error_time.is_some());

    // A server that does not answer IMAP at all (a closed port).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut nowhere = account(&user, "");
    nowhere.port = port.into();
    let acc2 = create(&s, &admin, nowhere).await.unwrap();
    let (code, message) = poll(&s, &admin, &acc2.name).await.unwrap_err();
    assert_eq!(code, Code::FailedPrecondition as i32);
    assert!(message.contains("connect"), "{message}");

    // The right password clears the error.
    let a = s
        .mailboxes()
        .update_mailbox_account(req(
            &admin,
            UpdateMailboxAccountRequest {
                account: Some(MailboxAccount {
                    password: imap_server().2,
                    ..a
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["password".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    poll(&s, &admin, &a.name).await.unwrap();
    assert_eq!(get(&s, &admin, &a.name).await.last_error, "");

    // The poller's fields are output only.
    let st = expect_code(
        s.mailboxes()
            .update_mailbox_account(req(
                &admin,
                UpdateMailboxAccountRequest {
                    account: Some(get(&s, &admin, &a.name).await),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["last_uid".into()],
                    }),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&st), vec!["update_mask".to_owned()]);

    // A disabled account is not polled.
    let a = get(&s, &admin, &a.name).await;
    s.mailboxes()
        .update_mailbox_account(req(
            &admin,
            UpdateMailboxAccountRequest {
                account: Some(MailboxAccount {
                    enabled: false,
                    ..a.clone()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["enabled".into()],
                }),
            },
        ))
        .await
        .unwrap();
    expect_code(
        s.mailboxes()
            .poll_mailbox_account(req(
                &admin,
                PollMailboxAccountRequest {
                    name: a.name.clone(),
                },
            ))
            .await,
        Code::FailedPrecondition,
    );

    // Another tenant's ids are NOT_FOUND; a rep has no rights on mailbox accounts.
    let other = s.token("globex", Uuid::now_v7(), &["admin"]);
    expect_code(
        s.mailboxes()
            .get_mailbox_account(req(
                &other,
                GetMailboxAccountRequest {
                    name: a.name.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.mailboxes()
            .poll_mailbox_account(req(
                &other,
                PollMailboxAccountRequest {
                    name: a.name.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );
    for r in crm_gateway::demo::roles() {
        s.admin_ctx("acme").create(r, "").await.unwrap();
    }
    let rep = s.token("acme", Uuid::now_v7(), &["rep"]);
    expect_code(
        s.mailboxes()
            .list_mailbox_accounts(req(&rep, ListMailboxAccountsRequest::default()))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        create(&s, &rep, account(&user, "")).await,
        Code::PermissionDenied,
    );
    let listed = s
        .mailboxes()
        .list_mailbox_accounts(req(
            &admin,
            ListMailboxAccountsRequest {
                filter: "enabled = true".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.accounts.len(), 1);
    assert!(
        listed
            .accounts
            .iter()
            .all(|a| a.password.is_empty() && a.has_password)
    );
}

fn reply(n: u32, to: u32) -> Vec<u8> {
    format!(
        "From: Li Lei <li.lei@example.com>\r\n\
         To: support@acme.example\r\n\
         Subject: Re: Printer problem {to}\r\n\
         Date: Tue, 24 Nov 2026 11:{n:02}:00 +0000\r\n\
         Message-ID: <reply-{n}@example.com>\r\n\
         In-Reply-To: <printer-{to}@example.com>\r\n\
         References: <printer-{to}@example.com>\r\n\
         \r\n\
         Still broken ({n}).\r\n"
    )
    .into_bytes()
}

async fn case_status(s: &TestServer, t: &str, name: &str) -> i32 {
    s.cases()
        .get_case(req(t, GetCaseRequest { name: name.into() }))
        .await
        .unwrap()
        .into_inner()
        .status
}

async fn transition(s: &TestServer, t: &str, name: &str, to: CaseStatus) {
    s.cases()
        .transition_case(req(
            t,
            TransitionCaseRequest {
                name: name.into(),
                status: to as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

async fn a_support_mailbox_opens_cases(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    contact(&s, &admin, "li.lei@example.com").await;
    let user = format!("support-{}", Uuid::now_v7().simple());
    append(&user, "INBOX", &[message(1, "li.lei@example.com")]).await;
    let acc = create(
        &s,
        &admin,
        MailboxAccount {
            open_cases: true,
            case_category: "printers".into(),
            ..account(&user, "")
        },
    )
    .await
    .unwrap();
    assert!(acc.open_cases);
    poll(&s, &admin, &acc.name).await.unwrap();
    let cases = s
        .cases()
        .list_cases(req(&admin, ListCasesRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .cases;
    assert_eq!(cases.len(), 1);
    let case = &cases[0];
    assert_eq!(case.title, "Printer problem 1");
    assert_eq!(case.category, "printers");
    assert_eq!(case.channel, "EMAIL");
    assert!(!case.contact.is_empty(), "the sender's contact");

    // The agent asks the customer; the customer's reply opens the case again.
    transition(&s, &admin, &case.name, CaseStatus::Open).await;
    transition(&s, &admin, &case.name, CaseStatus::WaitingOnCustomer).await;
    append(&user, "INBOX", &[reply(2, 1)]).await;
    let r = poll(&s, &admin, &acc.name).await.unwrap();
    assert_eq!(r["cases_joined"], 1.0, "{r}");
    assert_eq!(
        case_status(&s, &admin, &case.name).await,
        CaseStatus::Open as i32
    );
    // Resolved, then the customer writes again: reopened.
    transition(&s, &admin, &case.name, CaseStatus::Resolved).await;
    append(&user, "INBOX", &[reply(3, 1)]).await;
    poll(&s, &admin, &acc.name).await.unwrap();
    assert_eq!(
        case_status(&s, &admin, &case.name).await,
        CaseStatus::Reopened as i32
    );
    // Closed for good: the next reply opens a new case.
    transition(&s, &admin, &case.name, CaseStatus::Resolved).await;
    transition(&s, &admin, &case.name, CaseStatus::Closed).await;
    append(
        &user,
        "INBOX",
        &[reply(4, 1), message(5, "li.lei@example.com")],
    )
    .await;
    let r = poll(&s, &admin, &acc.name).await.unwrap();
    assert_eq!(r["cases_opened"], 2.0, "{r}");
    assert_eq!(s.count("cases", "acme").await, 3);
    // Every message is in exactly one case.
    let timeline = s
        .timeline()
        .list_interactions(req(&admin, ListInteractionsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .interactions;
    assert_eq!(timeline.len(), 5);
    assert!(timeline.iter().all(|i| !i.case.is_empty()), "{timeline:?}");
}

async fn tls_is_verified_with_a_private_ca(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let tls_port: u16 = std::env::var("CRM_TEST_IMAPS_PORT")
        .expect("CRM_TEST_IMAPS_PORT (scripts/test serves IMAPS)")
        .parse()
        .unwrap();
    let ca = std::fs::read_to_string(std::env::var("CRM_TEST_IMAP_CA").expect("CRM_TEST_IMAP_CA"))
        .unwrap();
    let user = format!("support-{}", Uuid::now_v7().simple());
    append(&user, "INBOX", &[message(1, "li.lei@example.com")]).await;
    let tls = MailboxAccount {
        host: "localhost".into(),
        port: tls_port.into(),
        security: MailboxSecurity::Tls as i32,
        ..account(&user, "")
    };
    // The server's certificate is from a CA the Web PKI does not know: refused.
    let acc = create(&s, &admin, tls.clone()).await.unwrap();
    let (code, message) = poll(&s, &admin, &acc.name).await.unwrap_err();
    assert_eq!(code, Code::FailedPrecondition as i32);
    assert!(message.contains("TLS"), "{message}");
    // Trusting the private CA: the message comes in over TLS.
    let a = get(&s, &admin, &acc.name).await;
    s.mailboxes()
        .update_mailbox_account(req(
            &admin,
            UpdateMailboxAccountRequest {
                account: Some(MailboxAccount {
                    tls_ca_certificates: ca.clone(),
                    ..a
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["tls_ca_certificates".into()],
                }),
            },
        ))
        .await
        .unwrap();
    // (The change itself polls at once; this poll runs after it.)
    let r = poll(&s, &admin, &acc.name).await.unwrap();
    assert_eq!(r["last_uid"], 1.0, "{r}");
    let a = get(&s, &admin, &acc.name).await;
    assert_eq!((a.last_error.as_str(), a.messages_ingested), ("", 1));
    assert_eq!(interactions(&s, "acme").await, 1);
    // Not PEM, or a CA for a plain-text account: named.
    for (bad, security) in [
        ("not a certificate".to_owned(), MailboxSecurity::Tls),
        (ca, MailboxSecurity::Plain),
    ] {
        let st = expect_code(
            create(
                &s,
                &admin,
                MailboxAccount {
                    tls_ca_certificates: bad,
                    security: security as i32,
                    ..tls.clone()
                },
            )
            .await,
            Code::InvalidArgument,
        );
        assert_eq!(
            violated_fields(&st),
            vec!["account.tls_ca_certificates".to_owned()]
        );
    }
}

both!(
    a_mailbox_is_polled_exactly_once,
    bad_accounts_and_failed_polls_are_clear,
    a_support_mailbox_opens_cases,
    tls_is_verified_with_a_private_ca,
);
