//! Every resource end to end over gRPC: CRUD, list machinery, etags, idempotency, audit and
//! outbox rows, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::google::r#type::{Date, Money};
use crm_api::v1::*;
use crm_tests::{Backend, TestServer, both, expect_code, mask, req, violated_fields};
use tonic::Code;
use uuid::Uuid;

fn contact(given: &str, family: &str, region: &str, tags: &[&str]) -> Contact {
    Contact {
        given_name: given.into(),
        family_name: family.into(),
        region: region.into(),
        tags: tags.iter().map(|t| (*t).to_string()).collect(),
        ..Default::default()
    }
}

async fn setup(backend: Backend) -> (TestServer, String) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    (s, t)
}

async fn contact_lifecycle(backend: Backend) {
    let (s, t) = setup(backend).await;
    let mut c = s.contacts();
    let created = c
        .create_contact(req(
            &t,
            CreateContactRequest {
                contact: Some(Contact {
                    phones: vec![Phone {
                        number: "03-1234-5678".into(),
                        label: "work".into(),
                        extension: String::new(),
                    }],
                    emails: vec![Email {
                        address: "Taro@Example.JP".into(),
                        label: String::new(),
                    }],
                    addresses: vec![PostalAddress {
                        region_code: "jp".into(),
                        ..Default::default()
                    }],
                    birth_date: Some(Date {
                        year: 1980,
                        month: 4,
                        day: 1,
                    }),
                    ..contact("太郎", "山田", "JP-13", &["VIP", "vip"])
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.name.starts_with("contacts/"));
    assert_eq!(created.display_name, "山田太郎");
    assert_eq!(created.phones[0].number, "+81312345678");
    assert_eq!(created.emails[0].address, "taro@example.jp");
    assert_eq!(created.tags, vec!["vip"]);
    assert!(created.owner.starts_with("users/"));
    assert!(created.hidden_fields.is_empty());

    let got = c
        .get_contact(req(
            &t,
            GetContactRequest {
                name: created.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);

    // Update with a mask: only the named field changes.
    let updated = c
        .update_contact(req(
            &t,
            UpdateContactRequest {
                contact: Some(Contact {
                    name: created.name.clone(),
                    region: "JP-27".into(),
                    given_name: "ignored".into(),
                    etag: created.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["region"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.region, "JP-27");
    assert_eq!(updated.given_name, "太郎");
    assert_ne!(updated.etag, created.etag);

    // The old etag is stale now.
    let stale = c
        .update_contact(req(
            &t,
            UpdateContactRequest {
                contact: Some(Contact {
                    name: created.name.clone(),
                    region: "JP-01".into(),
                    etag: created.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["region"]),
            },
        ))
        .await;
    expect_code(stale, Code::Aborted);

    // Unknown and immutable mask paths are named.
    let unknown = c
        .update_contact(req(
            &t,
            UpdateContactRequest {
                contact: Some(Contact {
                    name: created.name.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["nickname"]),
            },
        ))
        .await;
    let st = expect_code(unknown, Code::InvalidArgument);
    assert_eq!(violated_fields(&st), vec!["update_mask"]);
    let empty_mask = c
        .update_contact(req(
            &t,
            UpdateContactRequest {
                contact: Some(Contact {
                    name: created.name.clone(),
                    ..Default::default()
                }),
                update_mask: None,
            },
        ))
        .await;
    expect_code(empty_mask, Code::InvalidArgument);

    // Audit: create + update, newest first, with old and new values.
    let audit = s
        .audit()
        .list_audit_records(req(
            &t,
            ListAuditRecordsRequest {
                parent: created.name.clone(),
                page_size: 10,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.audit_records.len(), 2);
    let upd = &audit.audit_records[0];
    assert_eq!(upd.action, AuditAction::Update as i32);
    assert_eq!(upd.changes.len(), 1);
    assert_eq!(upd.changes[0].field, "region");
    assert_eq!(upd.changes[0].old_value, "\"JP-13\"");
    assert_eq!(upd.changes[0].new_value, "\"JP-27\"");

    // Delete with etag; then it is gone.
    c.delete_contact(req(
        &t,
        DeleteContactRequest {
            name: created.name.clone(),
            etag: updated.etag.clone(),
        },
    ))
    .await
    .unwrap();
    expect_code(
        c.get_contact(req(
            &t,
            GetContactRequest {
                name: created.name.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        c.delete_contact(req(
            &t,
            DeleteContactRequest {
                name: created.name.clone(),
                etag: String::new(),
            },
        ))
        .await,
        Code::NotFound,
    );

    // One event per committed change, in order.
    let events = crm_core::journal::list_events(&s.db.conn, "acme", 100)
        .await
        .unwrap();
    let contact_events: Vec<&str> = events
        .iter()
        .filter(|e| e.collection == "contacts")
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        contact_events,
        vec!["contacts.created", "contacts.updated", "contacts.deleted"]
    );
    assert_eq!(events.last().unwrap().subject, "crm.acme.contacts.deleted");
}

async fn list_filter_order_and_pages(backend: Backend) {
    let (s, t) = setup(backend).await;
    let mut c = s.contacts();
    for i in 0..23 {
        let region = if i % 2 == 0 { "EMEA" } else { "APAC" };
        let tags: &[&str] = if i % 3 == 0 {
            &["vip"]
        } else {
            &["newsletter"]
        };
        c.create_contact(req(
            &t,
            CreateContactRequest {
                contact: Some(contact(&format!("N{i:02}"), "Lee", region, tags)),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    }
    // EMEA and vip: i in {0, 6, 12, 18} -> 4 contacts.
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_contacts(req(
                &t,
                ListContactsRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    filter: "region = \"EMEA\" AND tags:\"VIP\"".into(),
                    order_by: "display_name desc".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        names.extend(page.contacts.into_iter().map(|c| c.display_name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, vec!["N18 Lee", "N12 Lee", "N06 Lee", "N00 Lee"]);

    // All pages of everything, default page size, ascending, no duplicates or gaps.
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_contacts(req(
                &t,
                ListContactsRequest {
                    page_size: 5,
                    page_token: token.clone(),
                    filter: String::new(),
                    order_by: "region, display_name".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        all.extend(
            page.contacts
                .into_iter()
                .map(|c| (c.region, c.display_name)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all.len(), 23);
    assert_eq!(all, sorted);

    // A token is bound to its query.
    let p1 = c
        .list_contacts(req(
            &t,
            ListContactsRequest {
                page_size: 2,
                page_token: String::new(),
                filter: String::new(),
                order_by: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let other = c
        .list_contacts(req(
            &t,
            ListContactsRequest {
                page_size: 2,
                page_token: p1.next_page_token.clone(),
                filter: "region = \"EMEA\"".into(),
                order_by: String::new(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(other, Code::InvalidArgument)),
        vec!["page_token"]
    );

    // Bad list inputs.
    for (size, tok, filter, order, field) in [
        (-1, "", "", "", "page_size"),
        (0, "garbage!", "", "", "page_token"),
        (0, "eyJ2IjpbXX0", "", "", "page_token"),
        (0, "", "region = ", "", "filter"),
        (0, "", "(region = \"x\"", "", "filter"),
        (0, "", "nickname = \"x\"", "", "filter"),
        (0, "", "phones = \"x\"", "", "filter"),
        (0, "", "create_time > \"yesterday\"", "", "filter"),
        (0, "", "", "nickname", "order_by"),
        (0, "", "", "display_name sideways", "order_by"),
    ] {
        let r = c
            .list_contacts(req(
                &t,
                ListContactsRequest {
                    page_size: size,
                    page_token: tok.into(),
                    filter: filter.into(),
                    order_by: order.into(),
                },
            ))
            .await;
        let st = expect_code(r, Code::InvalidArgument);
        assert_eq!(violated_fields(&st), vec![field], "{filter} {order}");
        if field == "filter" {
            assert!(st.message().contains("position"), "{}", st.message());
        }
    }
    // 10^9 is lowered to the maximum.
    let big = c
        .list_contacts(req(
            &t,
            ListContactsRequest {
                page_size: 1_000_000_000,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(big.contacts.len(), 23);
    // Timestamps and OR/NOT work.
    let recent = c
        .list_contacts(req(&t, ListContactsRequest { filter: "create_time > \"2000-01-01T00:00:00Z\" AND NOT (region = \"EMEA\" OR region = \"x\")".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recent.contacts.len(), 11);
}

async fn idempotent_create(backend: Backend) {
    let (s, t) = setup(backend).await;
    let mut a = s.accounts();
    let rid = Uuid::now_v7().to_string();
    let body = Account {
        display_name: "Rhein Werke".into(),
        region: "DE".into(),
        ..Default::default()
    };
    let first = a
        .create_account(req(
            &t,
            CreateAccountRequest {
                account: Some(body.clone()),
                request_id: rid.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let again = a
        .create_account(req(
            &t,
            CreateAccountRequest {
                account: Some(body.clone()),
                request_id: rid.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.name, again.name);
    let other = a
        .create_account(req(
            &t,
            CreateAccountRequest {
                account: Some(Account {
                    display_name: "Other".into(),
                    ..Default::default()
                }),
                request_id: rid.clone(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(other, Code::InvalidArgument)),
        vec!["request_id"]
    );
    let bad = a
        .create_account(req(
            &t,
            CreateAccountRequest {
                account: Some(body),
                request_id: "not-a-uuid".into(),
            },
        ))
        .await;
    expect_code(bad, Code::InvalidArgument);
    assert_eq!(s.count("accounts", "acme").await, 1);
    assert_eq!(
        crm_core::journal::list_events(&s.db.conn, "acme", 100)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.collection == "accounts")
            .count(),
        1
    );
}

async fn failed_writes_leave_nothing(backend: Backend) {
    let (s, t) = setup(backend).await;
    let (audit0, events0) = (
        s.count("audit_records", "acme").await,
        s.count("outbox_events", "acme").await,
    );
    let mut c = s.contacts();
    let long = "x".repeat(70 * 1024);
    let cases: Vec<(Contact, Vec<&str>)> = vec![
        (
            Contact {
                emails: vec![Email {
                    address: "nope".into(),
                    label: String::new(),
                }],
                ..contact("A", "B", "", &[])
            },
            vec!["contact.emails[0].address"],
        ),
        (
            Contact {
                phones: vec![Phone {
                    number: "12".into(),
                    label: String::new(),
                    extension: String::new(),
                }],
                ..contact("A", "B", "", &[])
            },
            vec!["contact.phones[0].number"],
        ),
        (contact("", "", "", &[]), vec!["contact.display_name"]),
        (contact(&long, "B", "", &[]), vec!["contact.given_name"]),
        (contact("A\u{0}", "B", "", &[]), vec!["contact.given_name"]),
        (
            Contact {
                birth_date: Some(Date {
                    year: 2020,
                    month: 2,
                    day: 30,
                }),
                ..contact("A", "B", "", &[])
            },
            vec!["contact.birth_date"],
        ),
        (
            Contact {
                owner: format!("users/{}", Uuid::now_v7()),
                ..contact("A", "B", "", &[])
            },
            vec!["contact.owner"],
        ),
        (
            Contact {
                territory: "territories/xyz".into(),
                ..contact("A", "B", "", &[])
            },
            vec!["contact.territory"],
        ),
    ];
    for (body, fields) in cases {
        let r = c
            .create_contact(req(
                &t,
                CreateContactRequest {
                    contact: Some(body),
                    request_id: String::new(),
                },
            ))
            .await;
        assert_eq!(
            violated_fields(&expect_code(r, Code::InvalidArgument)),
            fields
        );
    }
    expect_code(
        c.create_contact(req(
            &t,
            CreateContactRequest {
                contact: None,
                request_id: String::new(),
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(s.count("contacts", "acme").await, 0);
    assert_eq!(s.count("audit_records", "acme").await, audit0);
    assert_eq!(s.count("outbox_events", "acme").await, events0);

    // A failed update writes nothing either.
    let ok = c
        .create_contact(req(
            &t,
            CreateContactRequest {
                contact: Some(contact("A", "B", "", &[])),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let before = (
        s.count("audit_records", "acme").await,
        s.count("outbox_events", "acme").await,
    );
    let bad = c
        .update_contact(req(
            &t,
            UpdateContactRequest {
                contact: Some(Contact {
                    name: ok.name.clone(),
                    emails: vec![Email {
                        address: "bad@".into(),
                        label: String::new(),
                    }],
                    ..Default::default()
                }),
                update_mask: mask(&["emails"]),
            },
        ))
        .await;
    expect_code(bad, Code::InvalidArgument);
    assert_eq!(
        (
            s.count("audit_records", "acme").await,
            s.count("outbox_events", "acme").await
        ),
        before
    );
    let again = c
        .get_contact(req(&t, GetContactRequest { name: ok.name }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.etag, ok.etag);
}

async fn accounts_hierarchy_and_positions(backend: Backend) {
    let (s, t) = setup(backend).await;
    let mut a = s.accounts();
    let parent = a
        .create_account(req(
            &t,
            CreateAccountRequest {
                account: Some(Account {
                    display_name: "Group".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let child = a
        .create_account(req(
            &t,
            CreateAccountRequest {
                account: Some(Account {
                    display_name: "Subsidiary".into(),
                    parent: parent.name.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // Making the parent a child of its child is a cycle.
    let cycle = a
        .update_account(req(
            &t,
            UpdateAccountRequest {
                account: Some(Account {
                    name: parent.name.clone(),
                    parent: child.name.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["parent"]),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(cycle, Code::InvalidArgument)),
        vec!["account.parent"]
    );
    let filtered = a
        .list_accounts(req(
            &t,
            ListAccountsRequest {
                filter: format!("parent = \"{}\"", parent.name),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.accounts.len(), 1);

    // A person changes employers: the history stays.
    let mut c = s.contacts();
    let person = c
        .create_contact(req(
            &t,
            CreateContactRequest {
                contact: Some(contact("Ann", "Lee", "DE", &[])),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let old = c
        .create_position(req(
            &t,
            CreatePositionRequest {
                parent: person.name.clone(),
                position: Some(Position {
                    account: parent.name.clone(),
                    title: "Buyer".into(),
                    start_date: Some(Date {
                        year: 2015,
                        month: 1,
                        day: 1,
                    }),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(old.name.starts_with(&format!("{}/positions/", person.name)));
    let ended = c
        .update_position(req(
            &t,
            UpdatePositionRequest {
                position: Some(Position {
                    name: old.name.clone(),
                    end_date: Some(Date {
                        year: 2020,
                        month: 6,
                        day: 30,
                    }),
                    ..Default::default()
                }),
                update_mask: mask(&["end_date"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.title, "Buyer");
    c.create_position(req(
        &t,
        CreatePositionRequest {
            parent: person.name.clone(),
            position: Some(Position {
                account: child.name.clone(),
                title: "Head of Purchasing".into(),
                start_date: Some(Date {
                    year: 2020,
                    month: 7,
                    day: 1,
                }),
                ..Default::default()
            }),
            request_id: String::new(),
        },
    ))
    .await
    .unwrap();
    let bad_dates = c
        .create_position(req(
            &t,
            CreatePositionRequest {
                parent: person.name.clone(),
                position: Some(Position {
                    account: child.name.clone(),
                    start_date: Some(Date {
                        year: 2020,
                        month: 7,
                        day: 1,
                    }),
                    end_date: Some(Date {
                        year: 2019,
                        month: 1,
                        day: 1,
                    }),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(bad_dates, Code::InvalidArgument)),
        vec!["position.end_date"]
    );
    let history = c
        .list_positions(req(
            &t,
            ListPositionsRequest {
                parent: person.name.clone(),
                order_by: "create_time".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.positions.len(), 2);
    let current = c
        .list_positions(req(
            &t,
            ListPositionsRequest {
                parent: "contacts/-".into(),
                filter: format!("account = \"{}\"", child.name),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.positions.len(), 1);
    // A position name with the wrong contact is not found.
    let wrong = format!(
        "contacts/{}/positions/{}",
        Uuid::now_v7(),
        old.name.rsplit('/').next().unwrap()
    );
    expect_code(
        c.get_position(req(&t, GetPositionRequest { name: wrong }))
            .await,
        Code::NotFound,
    );

    // Ownership history.
    let other_user = s
        .directory()
        .create_user(req(
            &t,
            CreateUserRequest {
                user: Some(User {
                    email: "bo@acme.example".into(),
                    display_name: "Bo".into(),
                    active: true,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    a.update_account(req(
        &t,
        UpdateAccountRequest {
            account: Some(Account {
                name: child.name.clone(),
                owner: other_user.name.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["owner"]),
        },
    ))
    .await
    .unwrap();
    let owners = s
        .audit()
        .list_ownership_changes(req(
            &t,
            ListOwnershipChangesRequest {
                parent: child.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(owners.ownership_changes.len(), 2);
    assert_eq!(owners.ownership_changes[0].new_owner, other_user.name);
    assert_eq!(owners.ownership_changes[0].previous_owner, child.owner);
}

async fn products_orders_and_money(backend: Backend) {
    let (s, t) = setup(backend).await;
    let mut p = s.products();
    let group = p
        .create_product_group(req(
            &t,
            CreateProductGroupRequest {
                product_group: Some(ProductGroup {
                    display_name: "Pumps".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let eur = |units: i64, nanos: i32| {
        Some(Money {
            currency_code: "EUR".into(),
            units,
            nanos,
        })
    };
    let pump = p
        .create_product(req(
            &t,
            CreateProductRequest {
                product: Some(Product {
                    sku: "P-1".into(),
                    display_name: "Pump".into(),
                    product_group: group.name.clone(),
                    list_price: eur(12, 340_000_000),
                    active: true,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pump.list_price, eur(12, 340_000_000));
    let dup = p
        .create_product(req(
            &t,
            CreateProductRequest {
                product: Some(Product {
                    sku: "P-1".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    expect_code(dup, Code::AlreadyExists);
    let fractional = p
        .create_product(req(
            &t,
            CreateProductRequest {
                product: Some(Product {
                    sku: "P-2".into(),
                    list_price: eur(1, 1),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(fractional, Code::InvalidArgument)),
        vec!["product.list_price.nanos"]
    );

    let acct = s
        .accounts()
        .create_account(req(
            &t,
            CreateAccountRequest {
                account: Some(Account {
                    display_name: "Buyer".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut o = s.orders();
    let order = o
        .create_order(req(
            &t,
            CreateOrderRequest {
                order: Some(Order {
                    account: acct.name.clone(),
                    order_time: Some(prost_types::Timestamp {
                        seconds: 1_750_000_000,
                        nanos: 0,
                    }),
                    currency_code: "EUR".into(),
                    channel: SalesChannel::Online as i32,
                    lines: vec![
                        OrderLine {
                            product: pump.name.clone(),
                            quantity: 3,
                            unit_price: eur(12, 340_000_000),
                            discount: eur(1, 0),
                            ..Default::default()
                        },
                        OrderLine {
                            product: pump.name.clone(),
                            quantity: 1,
                            unit_price: eur(0, 500_000_000),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.total, eur(36, 520_000_000));
    assert_eq!(order.status, OrderStatus::Open as i32);
    let missing_product = o
        .create_order(req(
            &t,
            CreateOrderRequest {
                order: Some(Order {
                    account: acct.name.clone(),
                    order_time: Some(prost_types::Timestamp {
                        seconds: 1_750_000_000,
                        nanos: 0,
                    }),
                    currency_code: "EUR".into(),
                    lines: vec![OrderLine {
                        product: format!("products/{}", Uuid::now_v7()),
                        quantity: 1,
                        unit_price: eur(1, 0),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(missing_product, Code::InvalidArgument)),
        vec!["order.lines[0].product"]
    );
    let wrong_currency = o
        .create_order(req(
            &t,
            CreateOrderRequest {
                order: Some(Order {
                    account: acct.name.clone(),
                    order_time: Some(prost_types::Timestamp {
                        seconds: 1_750_000_000,
                        nanos: 0,
                    }),
                    currency_code: "EUR".into(),
                    lines: vec![OrderLine {
                        product: pump.name.clone(),
                        quantity: 1,
                        unit_price: Some(Money {
                            currency_code: "USD".into(),
                            units: 1,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(wrong_currency, Code::InvalidArgument)),
        vec!["order.lines[0].unit_price.currency_code"]
    );
    let by_account = o
        .list_orders(req(&t, ListOrdersRequest { filter: format!("account = \"{}\" AND channel = ONLINE AND order_time >= \"2025-01-01T00:00:00Z\"", acct.name), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_account.orders.len(), 1);
}

async fn directory_and_custom_fields(backend: Backend) {
    let (s, t) = setup(backend).await;
    let mut d = s.directory();
    let world = d
        .create_territory(req(
            &t,
            CreateTerritoryRequest {
                territory: Some(Territory {
                    display_name: "World".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let emea = d
        .create_territory(req(
            &t,
            CreateTerritoryRequest {
                territory: Some(Territory {
                    display_name: "EMEA".into(),
                    parent: world.name.clone(),
                    regions: vec!["DE".into()],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let team = d
        .create_team(req(
            &t,
            CreateTeamRequest {
                team: Some(Team {
                    display_name: "Inside sales".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let user = d
        .create_user(req(
            &t,
            CreateUserRequest {
                user: Some(User {
                    display_name: "Ann".into(),
                    email: "ANN@acme.example".into(),
                    teams: vec![team.name.clone()],
                    territories: vec![emea.name.clone()],
                    skills: vec!["German".into()],
                    capacity: 30,
                    active: true,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.email, "ann@acme.example");
    let dup_email = d
        .create_user(req(
            &t,
            CreateUserRequest {
                user: Some(User {
                    email: "ann@acme.example".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    expect_code(dup_email, Code::AlreadyExists);
    let in_team = d
        .list_users(req(
            &t,
            ListUsersRequest {
                filter: format!("teams:\"{}\" AND skills:german", team.name),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(in_team.users.len(), 1);
    let loop_ = d
        .update_territory(req(
            &t,
            UpdateTerritoryRequest {
                territory: Some(Territory {
                    name: world.name.clone(),
                    parent: emea.name.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["parent"]),
            },
        ))
        .await;
    expect_code(loop_, Code::InvalidArgument);

    let mut cf = s.custom_fields();
    cf.create_custom_field_definition(req(
        &t,
        CreateCustomFieldDefinitionRequest {
            custom_field_definition: Some(CustomFieldDefinition {
                collection: "contacts".into(),
                key: "tier".into(),
                r#type: CustomFieldType::Enum as i32,
                enum_values: vec!["gold".into(), "silver".into()],
                ..Default::default()
            }),
            request_id: String::new(),
        },
    ))
    .await
    .unwrap();
    let bad_def = cf
        .create_custom_field_definition(req(
            &t,
            CreateCustomFieldDefinitionRequest {
                custom_field_definition: Some(CustomFieldDefinition {
                    collection: "contacts".into(),
                    key: "Bad Key".into(),
                    r#type: CustomFieldType::Text as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(bad_def, Code::InvalidArgument)),
        vec!["custom_field_definition.key"]
    );
    let v = |s: &str| CustomFieldValue {
        kind: Some(custom_field_value::Kind::EnumValue(s.into())),
    };
    let mut c = s.contacts();
    let ok = c
        .create_contact(req(
            &t,
            CreateContactRequest {
                contact: Some(Contact {
                    custom_fields: [("tier".to_string(), v("gold"))].into(),
                    ..contact("A", "B", "", &[])
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.custom_fields.get("tier"), Some(&v("gold")));
    let bad = c
        .create_contact(req(
            &t,
            CreateContactRequest {
                contact: Some(Contact {
                    custom_fields: [("tier".to_string(), v("bronze"))].into(),
                    ..contact("A", "B", "", &[])
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(bad, Code::InvalidArgument)),
        vec!["contact.custom_fields.tier"]
    );
    let unknown = c
        .create_contact(req(
            &t,
            CreateContactRequest {
                contact: Some(Contact {
                    custom_fields: [("nope".to_string(), v("x"))].into(),
                    ..contact("A", "B", "", &[])
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(unknown, Code::InvalidArgument)),
        vec!["contact.custom_fields.nope"]
    );
}

both!(
    contact_lifecycle,
    list_filter_order_and_pages,
    idempotent_create,
    failed_writes_leave_nothing,
    accounts_hierarchy_and_positions,
    products_orders_and_money,
    directory_and_custom_fields,
);
