//! Regression tests for defects an outside client found in the Foundation, on SQLite and
//! PostgreSQL: child resources for every demo role, history views under field rules and
//! after deletes, NUL bytes, concurrent re-parenting, bounded errors, enums, idempotency
//! keys, addresses and phones, the built-in admin role, reference scope, audit values,
//! protocol limits, reflection and CORS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::v1::*;
use crm_core::access::{Action, FieldAccess, FieldRule, Grant, Policy, Scope};
use crm_core::auth::Principal;
use crm_core::clock::SystemClock;
use crm_core::resource::Resource;
use crm_core::service::Ctx;
use crm_tests::{Backend, TestServer, both, expect_code, mask, reason, req, violated_fields};
use std::sync::Arc;
use tonic::Code;
use uuid::Uuid;

/// A tenant `t` with the demo roles, and a token per role (each its own user).
struct Demo {
    admin: String,
    manager: String,
    rep: String,
}

fn superuser(s: &TestServer, tenant: &str) -> Ctx {
    Ctx::new(
        s.db.clone(),
        Principal {
            tenant: tenant.into(),
            user: Uuid::now_v7(),
            roles: vec![],
        },
        Policy::superuser(),
        Arc::new(SystemClock),
    )
}

async fn demo(s: &TestServer) -> Demo {
    s.tenant("t").await;
    let ctx = superuser(s, "t");
    for r in crm_gateway::demo::roles() {
        ctx.create(r, "").await.unwrap();
    }
    Demo {
        admin: s.token("t", Uuid::now_v7(), &["admin"]),
        manager: s.token("t", Uuid::now_v7(), &["manager"]),
        rep: s.token("t", Uuid::now_v7(), &["rep"]),
    }
}

async fn new_account(s: &TestServer, token: &str, name: &str, parent: &str) -> Account {
    s.accounts()
        .create_account(req(
            token,
            CreateAccountRequest {
                account: Some(Account {
                    display_name: name.into(),
                    parent: parent.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn new_contact(s: &TestServer, token: &str, name: &str) -> Contact {
    s.contacts()
        .create_contact(req(
            token,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: name.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn new_product(s: &TestServer, token: &str) -> Product {
    s.products()
        .create_product(req(
            token,
            CreateProductRequest {
                product: Some(Product {
                    sku: "P1".into(),
                    display_name: "P".into(),
                    list_price: Some(crm_api::google::r#type::Money {
                        currency_code: "EUR".into(),
                        units: 10,
                        nanos: 0,
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

/// Positions follow their contact's permissions, for every demo role: create, get, list
/// (default order, by title, filtered by account), update, history, delete.
async fn positions_work_for_every_demo_role(backend: Backend) {
    let s = TestServer::start(backend).await;
    let d = demo(&s).await;
    // The demo rep may read, create and update, not delete.
    for (token, may_delete) in [(&d.admin, true), (&d.manager, true), (&d.rep, false)] {
        let account = new_account(&s, token, "Acme", "").await;
        let contact = new_contact(&s, token, "Ann").await;
        let p = s
            .contacts()
            .create_position(req(
                token,
                CreatePositionRequest {
                    parent: contact.name.clone(),
                    position: Some(Position {
                        account: account.name.clone(),
                        title: "Buyer".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p.account, account.name);
        assert!(p.hidden_fields.is_empty(), "{:?}", p.hidden_fields);
        let got = s
            .contacts()
            .get_position(req(
                token,
                GetPositionRequest {
                    name: p.name.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.title, "Buyer");
        for (filter, order_by) in [
            (String::new(), String::new()),
            (String::new(), "title".to_owned()),
            (format!("account = \"{}\"", account.name), String::new()),
        ] {
            for parent in [contact.name.clone(), "contacts/-".to_owned()] {
                let list = s
                    .contacts()
                    .list_positions(req(
                        token,
                        ListPositionsRequest {
                            parent,
                            filter: filter.clone(),
                            order_by: order_by.clone(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                assert!(list.positions.iter().any(|x| x.name == p.name));
            }
        }
        let updated = s
            .contacts()
            .update_position(req(
                token,
                UpdatePositionRequest {
                    position: Some(Position {
                        name: p.name.clone(),
                        title: "Head of buying".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["title"]),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.title, "Head of buying");
        let history = s
            .audit()
            .list_audit_records(req(
                token,
                ListAuditRecordsRequest {
                    parent: p.name.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(history.audit_records.len(), 2);
        assert!(
            history
                .audit_records
                .iter()
                .flat_map(|a| &a.changes)
                .all(|c| !c.redacted)
        );
        let deleted = s
            .contacts()
            .delete_position(req(
                token,
                DeletePositionRequest {
                    name: p.name.clone(),
                    etag: String::new(),
                },
            ))
            .await;
        if may_delete {
            deleted.unwrap();
        } else {
            assert_eq!(
                reason(&expect_code(deleted, Code::PermissionDenied)),
                "ACTION_NOT_ALLOWED"
            );
        }
    }
    // Another user's contact: the rep sees none of its positions.
    let account = new_account(&s, &d.admin, "Other", "").await;
    let contact = new_contact(&s, &d.admin, "Bob").await;
    let p = s
        .contacts()
        .create_position(req(
            &d.admin,
            CreatePositionRequest {
                parent: contact.name.clone(),
                position: Some(Position {
                    account: account.name.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    expect_code(
        s.contacts()
            .get_position(req(
                &d.rep,
                GetPositionRequest {
                    name: p.name.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    let all = s
        .contacts()
        .list_positions(req(
            &d.rep,
            ListPositionsRequest {
                parent: "contacts/-".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(all.positions.iter().all(|x| x.name != p.name));
}

/// Ownership history is a view of the `owner` field: a role that may not see the owner
/// does not see it there either.
async fn ownership_history_follows_field_rules(backend: Backend) {
    let s = TestServer::start(backend).await;
    let d = demo(&s).await;
    let ctx = superuser(&s, "t");
    ctx.create(
        crm_core::model::Role {
            key: "blind".into(),
            display_name: "Owner hidden".into(),
            grants: vec![Grant {
                collection: "contacts".into(),
                actions: vec![Action::Read],
                scope: Scope::All,
            }],
            field_rules: vec![FieldRule {
                collection: "contacts".into(),
                field: "owner".into(),
                access: FieldAccess::Hidden,
            }],
        },
        "",
    )
    .await
    .unwrap();
    let blind = s.token("t", Uuid::now_v7(), &["blind"]);
    let c = new_contact(&s, &d.admin, "Ann").await;
    let list = |token: String| {
        let s = &s;
        let parent = c.name.clone();
        async move {
            s.audit()
                .list_ownership_changes(req(
                    &token,
                    ListOwnershipChangesRequest {
                        parent,
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .ownership_changes
        }
    };
    let seen = list(d.admin.clone()).await;
    assert_eq!(seen.len(), 1);
    assert!(seen[0].new_owner.starts_with("users/"));
    assert!(!seen[0].redacted);
    let hidden = list(blind.clone()).await;
    assert_eq!(hidden.len(), 1);
    assert!(hidden[0].redacted);
    assert_eq!(hidden[0].new_owner, "");
    assert_eq!(hidden[0].previous_owner, "");
    // The audit trail redacts it too.
    let audit = s
        .audit()
        .list_audit_records(req(
            &blind,
            ListAuditRecordsRequest {
                parent: c.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let owner = audit.audit_records[0]
        .changes
        .iter()
        .find(|ch| ch.field == "owner")
        .unwrap();
    assert!(owner.redacted);
    assert_eq!(owner.new_value, "");
}

/// NUL bytes are refused where they enter: filters, page tokens and token roles.
async fn nul_bytes_are_refused(backend: Backend) {
    let s = TestServer::start(backend).await;
    let d = demo(&s).await;
    let filter = "region = \"\u{0}\"".to_owned();
    let e = s
        .contacts()
        .list_contacts(req(
            &d.admin,
            ListContactsRequest {
                filter: filter.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(e, Code::InvalidArgument)),
        ["filter"]
    );
    let e = s
        .accounts()
        .list_accounts(req(
            &d.admin,
            ListAccountsRequest {
                filter,
                ..Default::default()
            },
        ))
        .await;
    expect_code(e, Code::InvalidArgument);
    let e = s
        .orders()
        .list_orders(req(
            &d.admin,
            ListOrdersRequest {
                order_by: "\u{0}".into(),
                ..Default::default()
            },
        ))
        .await;
    expect_code(e, Code::InvalidArgument);
    // A page token whose value holds a NUL (forged: it has the right shape).
    use base64::Engine;
    for c in ["a", "b", "c"] {
        new_contact(&s, &d.admin, c).await;
    }
    let first = s
        .contacts()
        .list_contacts(req(
            &d.admin,
            ListContactsRequest {
                page_size: 1,
                order_by: "given_name".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&first.next_page_token)
        .unwrap();
    let mut token: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    token["v"][0] = serde_json::Value::String("a\u{0}".into());
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&token).unwrap());
    let e = s
        .contacts()
        .list_contacts(req(
            &d.admin,
            ListContactsRequest {
                page_size: 1,
                order_by: "given_name".into(),
                page_token: forged,
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(e, Code::InvalidArgument)),
        ["page_token"]
    );
    // A validly signed token naming a role with a NUL.
    let bad = s.token("t", Uuid::now_v7(), &["a\u{0}"]);
    let e = s
        .contacts()
        .list_contacts(req(&bad, ListContactsRequest::default()))
        .await;
    assert_eq!(
        reason(&expect_code(e, Code::Unauthenticated)),
        "TOKEN_INVALID"
    );
}

/// Moves `a` under `b` and `b` under `a` at the same time, `rounds` times: never both.
async fn race_tree<R: Resource>(s: &TestServer, make: impl Fn(usize) -> serde_json::Value) {
    let parent = R::TREE_PARENT.unwrap();
    let ctx = Arc::new(superuser(s, "t"));
    for round in 0..8 {
        let data = |i| serde_json::from_value::<R>(make(round * 2 + i)).unwrap();
        let a = ctx.create(data(0), "").await.unwrap().meta.id;
        let b = ctx.create(data(1), "").await.unwrap().meta.id;
        let patch =
            |p: Uuid| serde_json::from_value::<R>(serde_json::json!({ parent: p })).unwrap();
        let m = vec![parent.to_owned()];
        let (c1, c2) = (ctx.clone(), ctx.clone());
        let (p1, p2, m1, m2) = (patch(b), patch(a), m.clone(), m.clone());
        let t1 = tokio::spawn(async move { c1.update::<R>(a, p1, &m1, "").await.is_ok() });
        let t2 = tokio::spawn(async move { c2.update::<R>(b, p2, &m2, "").await.is_ok() });
        let (ok1, ok2) = (t1.await.unwrap(), t2.await.unwrap());
        assert!(
            !(ok1 && ok2),
            "{}: both moves succeeded: a cycle",
            R::COLLECTION
        );
        assert!(ok1 || ok2, "{}: neither move succeeded", R::COLLECTION);
        // The tree is still a tree: a child of `a` can be made.
        let mut child = make(1000 + round);
        child[parent] = serde_json::Value::String(a.to_string());
        ctx.create(serde_json::from_value::<R>(child).unwrap(), "")
            .await
            .unwrap();
    }
}

/// The cycle rule holds under concurrency on every tree.
async fn concurrent_moves_never_make_cycles(backend: Backend) {
    use crm_core::model::{ProductGroup, Team, Territory, User};
    let s = TestServer::start(backend).await;
    s.tenant("t").await;
    let named = |i: usize| serde_json::json!({ "display_name": format!("n{i}") });
    race_tree::<crm_core::model::Account>(&s, named).await;
    race_tree::<ProductGroup>(&s, named).await;
    race_tree::<Territory>(&s, named).await;
    race_tree::<Team>(&s, named).await;
    race_tree::<User>(&s, |i| {
        serde_json::json!({ "display_name": format!("u{i}"), "email": format!("u{i}@example.com") })
    })
    .await;
    // And over gRPC, as a client races it.
    let admin = s.token("t", Uuid::now_v7(), &["admin"]);
    for _ in 0..5 {
        let a = new_account(&s, &admin, "A", "").await.name;
        let b = new_account(&s, &admin, "B", "").await.name;
        let mv = |x: String, parent: String| {
            let mut client = s.accounts();
            let admin = admin.clone();
            async move {
                client
                    .update_account(req(
                        &admin,
                        UpdateAccountRequest {
                            account: Some(crm_api::v1::Account {
                                name: x,
                                parent,
                                ..Default::default()
                            }),
                            update_mask: mask(&["parent"]),
                        },
                    ))
                    .await
                    .is_ok()
            }
        };
        let (x, y) = tokio::join!(mv(a.clone(), b.clone()), mv(b.clone(), a.clone()));
        assert!(!(x && y), "both account moves succeeded");
    }
}

/// Errors stay small: counts are checked before items, and violations are capped.
async fn errors_are_bounded(backend: Backend) {
    let s = TestServer::start(backend).await;
    let d = demo(&s).await;
    let product = new_product(&s, &d.admin).await;
    let contact = new_contact(&s, &d.admin, "Ann").await;
    let lines = (0..200)
        .map(|_| OrderLine {
            product: product.name.clone(),
            quantity: -1,
            ..Default::default()
        })
        .collect();
    let e = s
        .orders()
        .create_order(req(
            &d.admin,
            CreateOrderRequest {
                order: Some(Order {
                    contact: contact.name.clone(),
                    currency_code: "EUR".into(),
                    order_time: Some(prost_types::Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 0,
                    }),
                    lines,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    let st = expect_code(e, Code::InvalidArgument);
    let size = st.details().len() + st.message().len();
    assert!(size < 8 * 1024, "error of {size} bytes");
    assert_eq!(violated_fields(&st).len(), crm_core::error::MAX_VIOLATIONS);
    assert!(
        st.message().contains("200 invalid fields"),
        "{}",
        st.message()
    );
    // 20,000 bad e-mails: one violation, on the count.
    let emails = (0..20_000)
        .map(|i| Email {
            address: format!("bad{i}"),
            ..Default::default()
        })
        .collect();
    let e = s
        .contacts()
        .create_contact(req(
            &d.admin,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: "X".into(),
                    emails,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    let st = expect_code(e, Code::InvalidArgument);
    assert_eq!(violated_fields(&st), ["contact.emails"]);
    assert!(st.details().len() < 1024);
}

/// Unknown enum values are refused, naming the field.
async fn unknown_enum_values_are_refused(backend: Backend) {
    let s = TestServer::start(backend).await;
    let d = demo(&s).await;
    let contact = new_contact(&s, &d.admin, "Ann").await;
    for (channel, status, field) in [(99, 0, "order.channel"), (0, 77, "order.status")] {
        let e = s
            .orders()
            .create_order(req(
                &d.admin,
                CreateOrderRequest {
                    order: Some(Order {
                        contact: contact.name.clone(),
                        currency_code: "EUR".into(),
                        channel,
                        status,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await;
        assert_eq!(
            violated_fields(&expect_code(e, Code::InvalidArgument)),
            [field]
        );
    }
}

/// `request_id` is compared as a UUID, and its errors name the request field.
async fn request_ids_are_canonical(backend: Backend) {
    let s = TestServer::start(backend).await;
    let d = demo(&s).await;
    let id = Uuid::now_v7();
    let create = |rid: String, name: &str| {
        let mut client = s.contacts();
        let token = d.admin.clone();
        let name = name.to_owned();
        async move {
            client
                .create_contact(req(
                    &token,
                    CreateContactRequest {
                        contact: Some(Contact {
                            given_name: name,
                            ..Default::default()
                        }),
                        request_id: rid,
                    },
                ))
                .await
        }
    };
    let first = create(id.to_string(), "Ann").await.unwrap().into_inner();
    let again = create(id.to_string().to_uppercase(), "Ann")
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.name, again.name);
    assert_eq!(s.count("contacts", "t").await, 1);
    let e = create(id.to_string(), "Bob").await;
    assert_eq!(
        violated_fields(&expect_code(e, Code::InvalidArgument)),
        ["request_id"]
    );
    let e = create("not-a-uuid".into(), "Bob").await;
    assert_eq!(
        violated_fields(&expect_code(e, Code::InvalidArgument)),
        ["request_id"]
    );
}

/// Region codes must be CLDR's; `++` is no phone number; an extension is kept.
async fn addresses_and_phones_are_checked(backend: Backend) {
    let s = TestServer::start(backend).await;
    let d = demo(&s).await;
    let create = |contact: Contact| {
        let mut client = s.contacts();
        let token = d.admin.clone();
        async move {
            client
                .create_contact(req(
                    &token,
                    CreateContactRequest {
                        contact: Some(contact),
                        request_id: String::new(),
                    },
                ))
                .await
        }
    };
    let e = create(Contact {
        given_name: "A".into(),
        addresses: vec![PostalAddress {
            region_code: "XX".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await;
    assert_eq!(
        violated_fields(&expect_code(e, Code::InvalidArgument)),
        ["contact.addresses[0].region_code"]
    );
    let e = create(Contact {
        given_name: "A".into(),
        phones: vec![Phone {
            number: "++4930123456".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await;
    assert_eq!(
        violated_fields(&expect_code(e, Code::InvalidArgument)),
        ["contact.phones[0].number"]
    );
    let c = create(Contact {
        given_name: "A".into(),
        phones: vec![Phone {
            number: "+49 30 901820 ext. 5".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(c.phones[0].number, "+4930901820");
    assert_eq!(c.phones[0].extension, "5");
}

/// History stays readable after a delete; a parent with live children cannot be deleted.
async fn deletes_keep_history_and_trees(backend: Backend) {
    let s = TestServer::start(backend).await;
    let d = demo(&s).await;
    let parent = new_account(&s, &d.admin, "Parent", "").await;
    let child = new_account(&s, &d.admin, "Child", &parent.name).await;
    let e = s
        .accounts()
        .delete_account(req(
            &d.admin,
            DeleteAccountRequest {
                name: parent.name.clone(),
                etag: String::new(),
            },
        ))
        .await;
    assert_eq!(
        reason(&expect_code(e, Code::FailedPrecondition)),
        "HAS_CHILDREN"
    );
    for name in [&child.name, &parent.name] {
        s.accounts()
            .delete_account(req(
                &d.admin,
                DeleteAccountRequest {
                    name: name.clone(),
                    etag: String::new(),
                },
            ))
            .await
            .unwrap();
    }
    let history = s
        .audit()
        .list_audit_records(req(
            &d.admin,
            ListAuditRecordsRequest {
                parent: parent.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<i32> = history.audit_records.iter().map(|a| a.action).collect();
    assert!(
        actions.contains(&(AuditAction::Delete as i32)),
        "{actions:?}"
    );
    let owners = s
        .audit()
        .list_ownership_changes(req(
            &d.admin,
            ListOwnershipChangesRequest {
                parent: parent.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(owners.ownership_changes.len(), 1);
    // Still scoped: the rep may not read another user's deleted account's history.
    let e = s
        .audit()
        .list_audit_records(req(
            &d.rep,
            ListAuditRecordsRequest {
                parent: parent.name.clone(),
                ..Default::default()
            },
        ))
        .await;
    expect_code(e, Code::PermissionDenied);
    // The record itself is gone.
    let e = s
        .accounts()
        .get_account(req(
            &d.admin,
            GetAccountRequest {
                name: parent.name.clone(),
            },
        ))
        .await;
    expect_code(e, Code::NotFound);
}

/// The built-in admin role can be neither deleted nor narrowed.
async fn the_admin_role_stays(backend: Backend) {
    let s = TestServer::start(backend).await;
    let d = demo(&s).await;
    let e = s
        .access()
        .delete_role(req(
            &d.admin,
            DeleteRoleRequest {
                name: "roles/admin".into(),
                etag: String::new(),
            },
        ))
        .await;
    assert_eq!(
        reason(&expect_code(e, Code::FailedPrecondition)),
        "BUILTIN_ROLE"
    );
    let e = s
        .access()
        .update_role(req(
            &d.admin,
            UpdateRoleRequest {
                role: Some(Role {
                    name: "roles/admin".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["grants"]),
            },
        ))
        .await;
    assert_eq!(
        reason(&expect_code(e, Code::FailedPrecondition)),
        "BUILTIN_ROLE"
    );
    let r = s
        .access()
        .update_role(req(
            &d.admin,
            UpdateRoleRequest {
                role: Some(Role {
                    name: "roles/admin".into(),
                    display_name: "Administrators".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.display_name, "Administrators");
    // Other roles can still be deleted.
    s.access()
        .delete_role(req(
            &d.admin,
            DeleteRoleRequest {
                name: "roles/manager".into(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap();
}

/// Setting a reference needs read access to its target.
async fn references_need_read_access(backend: Backend) {
    let s = TestServer::start(backend).await;
    let d = demo(&s).await;
    let foreign = new_account(&s, &d.admin, "Not the rep's", "").await;
    let foreign_contact = new_contact(&s, &d.admin, "Not the rep's").await;
    let e = s
        .accounts()
        .create_account(req(
            &d.rep,
            CreateAccountRequest {
                account: Some(Account {
                    display_name: "Mine".into(),
                    parent: foreign.name.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        reason(&expect_code(e, Code::PermissionDenied)),
        "OUT_OF_SCOPE"
    );
    let product = new_product(&s, &d.admin).await;
    let e = s
        .orders()
        .create_order(req(
            &d.rep,
            CreateOrderRequest {
                order: Some(Order {
                    contact: foreign_contact.name.clone(),
                    currency_code: "EUR".into(),
                    order_time: Some(prost_types::Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 0,
                    }),
                    lines: vec![OrderLine {
                        product: product.name.clone(),
                        quantity: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        reason(&expect_code(e, Code::PermissionDenied)),
        "OUT_OF_SCOPE"
    );
    // The rep's own account is fine as a parent.
    let own = new_account(&s, &d.rep, "Own", "").await;
    new_account(&s, &d.rep, "Own child", &own.name).await;
}

/// Audit values of references are resource names; tags are a set.
async fn audit_values_are_names_and_tags_a_set(backend: Backend) {
    let s = TestServer::start(backend).await;
    let d = demo(&s).await;
    let c = s
        .contacts()
        .create_contact(req(
            &d.admin,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: "Ann".into(),
                    tags: vec!["b".into(), "a".into()],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.tags, ["a", "b"]);
    let same = s
        .contacts()
        .update_contact(req(
            &d.admin,
            UpdateContactRequest {
                contact: Some(Contact {
                    name: c.name.clone(),
                    tags: vec!["a".into(), "b".into()],
                    ..Default::default()
                }),
                update_mask: mask(&["tags"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.etag, c.etag, "reordering tags is no change");
    let audit = s
        .audit()
        .list_audit_records(req(
            &d.admin,
            ListAuditRecordsRequest {
                parent: c.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.audit_records.len(), 1);
    let owner = audit.audit_records[0]
        .changes
        .iter()
        .find(|ch| ch.field == "owner")
        .unwrap();
    assert!(
        owner.new_value.starts_with("\"users/"),
        "{}",
        owner.new_value
    );
}

/// Oversized requests and tokens get clean errors; both reflection versions answer.
async fn protocol_limits_and_reflection(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.server.max_request_bytes = 64 * 1024).await;
    let d = demo(&s).await;
    let e = s
        .contacts()
        .create_contact(req(
            &d.admin,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: "x".repeat(100 * 1024),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    let st = expect_code(e, Code::ResourceExhausted);
    assert_eq!(reason(&st), "REQUEST_TOO_LARGE");
    // A 100 KB bearer token: a clean UNAUTHENTICATED, and the connection lives on.
    let big = "x".repeat(100 * 1024);
    let e = s
        .contacts()
        .list_contacts(req(&big, ListContactsRequest::default()))
        .await;
    assert_eq!(
        reason(&expect_code(e, Code::Unauthenticated)),
        "TOKEN_TOO_LARGE"
    );
    // Every answer carries the request id its log lines carry: the caller's, or a new one.
    let mut r = req(&d.admin, ListContactsRequest::default());
    r.metadata_mut()
        .insert("x-request-id", "trace-me-42".parse().unwrap());
    let ok = s.contacts().list_contacts(r).await.unwrap();
    assert_eq!(
        ok.metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("trace-me-42")
    );
    let fresh = s
        .contacts()
        .list_contacts(req(&d.admin, ListContactsRequest::default()))
        .await
        .unwrap();
    let id = fresh
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok());
    assert!(id.is_some_and(|i| Uuid::try_parse(i).is_ok()), "{id:?}");
    // Reflection v1alpha lists the services.
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(s.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            assert!(l.service.iter().any(|s| s.name == "crm.v1.ContactService"));
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

both!(
    positions_work_for_every_demo_role,
    ownership_history_follows_field_rules,
    nul_bytes_are_refused,
    concurrent_moves_never_make_cycles,
    errors_are_bounded,
    unknown_enum_values_are_refused,
    request_ids_are_canonical,
    addresses_and_phones_are_checked,
    deletes_keep_history_and_trees,
    the_admin_role_stays,
    references_need_read_access,
    audit_values_are_names_and_tags_a_set,
    protocol_limits_and_reflection,
);
