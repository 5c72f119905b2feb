//! Authentication, tenant isolation and permissions, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::google::r#type::Date;
use crm_api::v1::*;
use crm_core::auth::{Principal, mint_hs256};
use crm_tests::{
    Backend, SECRET, TestServer, both, expect_code, mask, reason, req, violated_fields,
};
use tonic::{Code, Request};
use uuid::Uuid;

/// Names of one of every resource in tenant `acme`.
struct Seeded {
    account: String,
    contact: String,
    position: String,
    product: String,
    group: String,
    order: String,
    user: String,
    team: String,
    territory: String,
    field: String,
}

async fn seed(s: &TestServer, t: &str) -> Seeded {
    let account = s
        .accounts()
        .create_account(req(
            t,
            CreateAccountRequest {
                account: Some(Account {
                    display_name: "A".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .name;
    let contact = s
        .contacts()
        .create_contact(req(
            t,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: "C".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .name;
    let position = s
        .contacts()
        .create_position(req(
            t,
            CreatePositionRequest {
                parent: contact.clone(),
                position: Some(Position {
                    account: account.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .name;
    let group = s
        .products()
        .create_product_group(req(
            t,
            CreateProductGroupRequest {
                product_group: Some(ProductGroup {
                    display_name: "G".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .name;
    let product = s
        .products()
        .create_product(req(
            t,
            CreateProductRequest {
                product: Some(Product {
                    sku: "S".into(),
                    product_group: group.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .name;
    let order = s
        .orders()
        .create_order(req(
            t,
            CreateOrderRequest {
                order: Some(Order {
                    account: account.clone(),
                    order_time: Some(prost_types::Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 0,
                    }),
                    currency_code: "EUR".into(),
                    lines: vec![OrderLine {
                        product: product.clone(),
                        quantity: 1,
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
        .name;
    let mut d = s.directory();
    let user = d
        .create_user(req(
            t,
            CreateUserRequest {
                user: Some(User {
                    email: "u@x.example".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .name;
    let team = d
        .create_team(req(
            t,
            CreateTeamRequest {
                team: Some(Team {
                    display_name: "T".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .name;
    let territory = d
        .create_territory(req(
            t,
            CreateTerritoryRequest {
                territory: Some(Territory {
                    display_name: "T".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .name;
    let field = s
        .custom_fields()
        .create_custom_field_definition(req(
            t,
            CreateCustomFieldDefinitionRequest {
                custom_field_definition: Some(CustomFieldDefinition {
                    collection: "accounts".into(),
                    key: "k".into(),
                    r#type: CustomFieldType::Text as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .name;
    s.access()
        .create_role(req(
            t,
            CreateRoleRequest {
                role_id: "acme-only".into(),
                role: Some(Role {
                    display_name: "x".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    Seeded {
        account,
        contact,
        position,
        product,
        group,
        order,
        user,
        team,
        territory,
        field,
    }
}

async fn another_tenants_ids_are_not_found(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("globex").await;
    let a = s.token("acme", Uuid::now_v7(), &["admin"]);
    let g = s.token("globex", Uuid::now_v7(), &["admin"]);
    let x = seed(&s, &a).await;
    let nf = Code::NotFound;

    macro_rules! not_found {
        ($call:expr) => {
            expect_code($call.await, nf)
        };
    }
    // Get, Update, Delete of every resource.
    not_found!(s.accounts().get_account(req(
        &g,
        GetAccountRequest {
            name: x.account.clone()
        }
    )));
    not_found!(s.accounts().update_account(req(
        &g,
        UpdateAccountRequest {
            account: Some(Account {
                name: x.account.clone(),
                display_name: "hack".into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"])
        }
    )));
    not_found!(s.accounts().delete_account(req(
        &g,
        DeleteAccountRequest {
            name: x.account.clone(),
            etag: String::new()
        }
    )));
    not_found!(s.contacts().get_contact(req(
        &g,
        GetContactRequest {
            name: x.contact.clone()
        }
    )));
    not_found!(s.contacts().update_contact(req(
        &g,
        UpdateContactRequest {
            contact: Some(Contact {
                name: x.contact.clone(),
                region: "x".into(),
                ..Default::default()
            }),
            update_mask: mask(&["region"])
        }
    )));
    not_found!(s.contacts().delete_contact(req(
        &g,
        DeleteContactRequest {
            name: x.contact.clone(),
            etag: String::new()
        }
    )));
    not_found!(s.contacts().get_position(req(
        &g,
        GetPositionRequest {
            name: x.position.clone()
        }
    )));
    not_found!(s.contacts().update_position(req(
        &g,
        UpdatePositionRequest {
            position: Some(Position {
                name: x.position.clone(),
                title: "x".into(),
                ..Default::default()
            }),
            update_mask: mask(&["title"])
        }
    )));
    not_found!(s.contacts().delete_position(req(
        &g,
        DeletePositionRequest {
            name: x.position.clone(),
            etag: String::new()
        }
    )));
    not_found!(s.contacts().create_position(req(
        &g,
        CreatePositionRequest {
            parent: x.contact.clone(),
            position: Some(Position::default()),
            request_id: String::new()
        }
    )));
    not_found!(s.contacts().list_positions(req(
        &g,
        ListPositionsRequest {
            parent: x.contact.clone(),
            ..Default::default()
        }
    )));
    not_found!(s.products().get_product(req(
        &g,
        GetProductRequest {
            name: x.product.clone()
        }
    )));
    not_found!(s.products().update_product(req(
        &g,
        UpdateProductRequest {
            product: Some(Product {
                name: x.product.clone(),
                sku: "x".into(),
                ..Default::default()
            }),
            update_mask: mask(&["sku"])
        }
    )));
    not_found!(s.products().delete_product(req(
        &g,
        DeleteProductRequest {
            name: x.product.clone(),
            etag: String::new()
        }
    )));
    not_found!(s.products().get_product_group(req(
        &g,
        GetProductGroupRequest {
            name: x.group.clone()
        }
    )));
    not_found!(s.products().update_product_group(req(
        &g,
        UpdateProductGroupRequest {
            product_group: Some(ProductGroup {
                name: x.group.clone(),
                display_name: "x".into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"])
        }
    )));
    not_found!(s.products().delete_product_group(req(
        &g,
        DeleteProductGroupRequest {
            name: x.group.clone(),
            etag: String::new()
        }
    )));
    not_found!(s.orders().get_order(req(
        &g,
        GetOrderRequest {
            name: x.order.clone()
        }
    )));
    not_found!(s.orders().update_order(req(
        &g,
        UpdateOrderRequest {
            order: Some(Order {
                name: x.order.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["status"])
        }
    )));
    not_found!(s.orders().delete_order(req(
        &g,
        DeleteOrderRequest {
            name: x.order.clone(),
            etag: String::new()
        }
    )));
    let mut d = s.directory();
    not_found!(d.get_user(req(
        &g,
        GetUserRequest {
            name: x.user.clone()
        }
    )));
    not_found!(d.update_user(req(
        &g,
        UpdateUserRequest {
            user: Some(User {
                name: x.user.clone(),
                capacity: 1,
                ..Default::default()
            }),
            update_mask: mask(&["capacity"])
        }
    )));
    not_found!(d.delete_user(req(
        &g,
        DeleteUserRequest {
            name: x.user.clone(),
            etag: String::new()
        }
    )));
    not_found!(d.get_team(req(
        &g,
        GetTeamRequest {
            name: x.team.clone()
        }
    )));
    not_found!(d.update_team(req(
        &g,
        UpdateTeamRequest {
            team: Some(Team {
                name: x.team.clone(),
                display_name: "x".into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"])
        }
    )));
    not_found!(d.delete_team(req(
        &g,
        DeleteTeamRequest {
            name: x.team.clone(),
            etag: String::new()
        }
    )));
    not_found!(d.get_territory(req(
        &g,
        GetTerritoryRequest {
            name: x.territory.clone()
        }
    )));
    not_found!(d.update_territory(req(
        &g,
        UpdateTerritoryRequest {
            territory: Some(Territory {
                name: x.territory.clone(),
                display_name: "x".into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"])
        }
    )));
    not_found!(d.delete_territory(req(
        &g,
        DeleteTerritoryRequest {
            name: x.territory.clone(),
            etag: String::new()
        }
    )));
    let mut cf = s.custom_fields();
    not_found!(cf.get_custom_field_definition(req(
        &g,
        GetCustomFieldDefinitionRequest {
            name: x.field.clone()
        }
    )));
    not_found!(cf.update_custom_field_definition(req(
        &g,
        UpdateCustomFieldDefinitionRequest {
            custom_field_definition: Some(CustomFieldDefinition {
                name: x.field.clone(),
                display_name: "x".into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"])
        }
    )));
    not_found!(cf.delete_custom_field_definition(req(
        &g,
        DeleteCustomFieldDefinitionRequest {
            name: x.field.clone(),
            etag: String::new()
        }
    )));
    let mut ac = s.access();
    not_found!(ac.get_role(req(
        &g,
        GetRoleRequest {
            name: "roles/acme-only".into()
        }
    )));
    not_found!(ac.update_role(req(
        &g,
        UpdateRoleRequest {
            role: Some(Role {
                name: "roles/acme-only".into(),
                display_name: "x".into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"])
        }
    )));
    not_found!(ac.delete_role(req(
        &g,
        DeleteRoleRequest {
            name: "roles/acme-only".into(),
            etag: String::new()
        }
    )));
    for parent in [
        &x.account,
        &x.contact,
        &x.order,
        &x.product,
        &x.user,
        &x.position,
    ] {
        not_found!(s.audit().list_audit_records(req(
            &g,
            ListAuditRecordsRequest {
                parent: parent.clone(),
                ..Default::default()
            }
        )));
        not_found!(s.audit().list_ownership_changes(req(
            &g,
            ListOwnershipChangesRequest {
                parent: parent.clone(),
                ..Default::default()
            }
        )));
    }

    // Lists of the other tenant see none of acme's rows.
    assert!(
        s.accounts()
            .list_accounts(req(&g, ListAccountsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .accounts
            .is_empty()
    );
    assert!(
        s.contacts()
            .list_contacts(req(&g, ListContactsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .contacts
            .is_empty()
    );
    assert!(
        s.contacts()
            .list_positions(req(
                &g,
                ListPositionsRequest {
                    parent: "contacts/-".into(),
                    ..Default::default()
                }
            ))
            .await
            .unwrap()
            .into_inner()
            .positions
            .is_empty()
    );
    assert!(
        s.products()
            .list_products(req(&g, ListProductsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .products
            .is_empty()
    );
    assert!(
        s.products()
            .list_product_groups(req(&g, ListProductGroupsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .product_groups
            .is_empty()
    );
    assert!(
        s.orders()
            .list_orders(req(&g, ListOrdersRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .orders
            .is_empty()
    );
    assert!(
        d.list_users(req(&g, ListUsersRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .users
            .is_empty()
    );
    assert!(
        d.list_teams(req(&g, ListTeamsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .teams
            .is_empty()
    );
    assert!(
        d.list_territories(req(&g, ListTerritoriesRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .territories
            .is_empty()
    );
    assert!(
        cf.list_custom_field_definitions(req(&g, ListCustomFieldDefinitionsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .custom_field_definitions
            .is_empty()
    );
    let roles = ac
        .list_roles(req(&g, ListRolesRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .roles;
    assert_eq!(
        roles.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["roles/admin"]
    );

    // References to the other tenant's rows are refused by name.
    let r = s
        .accounts()
        .create_account(req(
            &g,
            CreateAccountRequest {
                account: Some(Account {
                    display_name: "x".into(),
                    parent: x.account.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(r, Code::InvalidArgument)),
        vec!["account.parent"]
    );
    let r = s
        .contacts()
        .create_contact(req(
            &g,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: "x".into(),
                    owner: x.user.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(r, Code::InvalidArgument)),
        vec!["contact.owner"]
    );
    let r = s
        .products()
        .create_product(req(
            &g,
            CreateProductRequest {
                product: Some(Product {
                    sku: "x".into(),
                    product_group: x.group.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(r, Code::InvalidArgument)),
        vec!["product.product_group"]
    );
    let r = d
        .create_user(req(
            &g,
            CreateUserRequest {
                user: Some(User {
                    email: "g@x.example".into(),
                    teams: vec![x.team.clone()],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(r, Code::InvalidArgument)),
        vec!["user.teams"]
    );

    // acme's rows are untouched.
    let still = s
        .accounts()
        .get_account(req(
            &a,
            GetAccountRequest {
                name: x.account.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.display_name, "A");
    assert_eq!(s.count("accounts", "globex").await, 0);
}

async fn tokens_are_checked(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let p = Principal {
        tenant: "acme".into(),
        user: Uuid::now_v7(),
        roles: vec!["admin".into()],
    };
    let now = chrono::Utc::now().timestamp();
    let expired = mint_hs256(SECRET.as_bytes(), "crm", "crm-api", &p, now - 7200, 60).unwrap();
    let wrong_aud = mint_hs256(SECRET.as_bytes(), "crm", "other-api", &p, now, 60).unwrap();
    let bad_sig = mint_hs256(b"another-secret-0123456789", "crm", "crm-api", &p, now, 60).unwrap();
    let unknown_tenant = s.token("nobody", Uuid::now_v7(), &["admin"]);
    for (header, why) in [
        (None, "TOKEN_MISSING"),
        (Some("Basic abc".to_string()), "TOKEN_MISSING"),
        (Some("Bearer garbage".to_string()), "TOKEN_INVALID"),
        (Some(format!("Bearer {expired}")), "TOKEN_EXPIRED"),
        (Some(format!("Bearer {wrong_aud}")), "TOKEN_WRONG_AUDIENCE"),
        (Some(format!("Bearer {bad_sig}")), "TOKEN_BAD_SIGNATURE"),
        (Some(format!("Bearer {unknown_tenant}")), "TENANT_UNKNOWN"),
    ] {
        let mut r = Request::new(ListContactsRequest::default());
        if let Some(h) = header {
            r.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        let st = expect_code(s.contacts().list_contacts(r).await, Code::Unauthenticated);
        assert_eq!(reason(&st), why);
    }
    // Health and reflection need no token.
    let mut h = tonic_health::pb::health_client::HealthClient::new(s.channel.clone());
    h.check(tonic_health::pb::HealthCheckRequest {
        service: "crm.v1.ContactService".into(),
    })
    .await
    .unwrap();

    // A suspended tenant is refused; resumed, it works again.
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    crm_core::tenant::set_status(
        &s.db,
        &crm_core::clock::SystemClock,
        "acme",
        crm_core::tenant::TenantStatus::Suspended,
    )
    .await
    .unwrap();
    let st = expect_code(
        s.contacts()
            .list_contacts(req(&t, ListContactsRequest::default()))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&st), "TENANT_SUSPENDED");
    crm_core::tenant::set_status(
        &s.db,
        &crm_core::clock::SystemClock,
        "acme",
        crm_core::tenant::TenantStatus::Active,
    )
    .await
    .unwrap();
    s.contacts()
        .list_contacts(req(&t, ListContactsRequest::default()))
        .await
        .unwrap();
    // A token with no known role may do nothing.
    let nobody = s.token("acme", Uuid::now_v7(), &["ghost"]);
    expect_code(
        s.contacts()
            .list_contacts(req(&nobody, ListContactsRequest::default()))
            .await,
        Code::PermissionDenied,
    );
}

fn grant(collection: &str, actions: &[Action], scope: Scope) -> Grant {
    Grant {
        collection: collection.into(),
        actions: actions.iter().map(|a| *a as i32).collect(),
        scope: scope as i32,
    }
}

async fn record_and_field_permissions(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let mut ac = s.access();
    use Action::*;
    ac.create_role(req(
        &admin,
        CreateRoleRequest {
            role_id: "rep".into(),
            role: Some(Role {
                display_name: "Rep".into(),
                grants: vec![grant("contacts", &[Read, Create, Update], Scope::Own)],
                field_rules: vec![
                    FieldRule {
                        collection: "contacts".into(),
                        field: "phones".into(),
                        access: FieldAccess::Hidden as i32,
                    },
                    FieldRule {
                        collection: "contacts".into(),
                        field: "birth_date".into(),
                        access: FieldAccess::Hidden as i32,
                    },
                    FieldRule {
                        collection: "contacts".into(),
                        field: "region".into(),
                        access: FieldAccess::ReadOnly as i32,
                    },
                ],
                ..Default::default()
            }),
            request_id: String::new(),
        },
    ))
    .await
    .unwrap();
    ac.create_role(req(
        &admin,
        CreateRoleRequest {
            role_id: "manager".into(),
            role: Some(Role {
                grants: vec![grant("contacts", &[Read], Scope::Subtree)],
                ..Default::default()
            }),
            request_id: String::new(),
        },
    ))
    .await
    .unwrap();
    // Bad roles are named precisely.
    let bad = ac
        .create_role(req(
            &admin,
            CreateRoleRequest {
                role_id: "bad".into(),
                role: Some(Role {
                    field_rules: vec![FieldRule {
                        collection: "contacts".into(),
                        field: "shoe_size".into(),
                        access: FieldAccess::Hidden as i32,
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(&expect_code(bad, Code::InvalidArgument)),
        vec!["role.field_rules[0].field"]
    );
    expect_code(
        ac.create_role(req(
            &admin,
            CreateRoleRequest {
                role_id: "rep".into(),
                role: Some(Role::default()),
                request_id: String::new(),
            },
        ))
        .await,
        Code::AlreadyExists,
    );

    // A manager with two reps below; reps own contacts.
    let mut d = s.directory();
    let mk = |email: &str, manager: &str| User {
        email: email.into(),
        manager: manager.into(),
        active: true,
        ..Default::default()
    };
    let boss = d
        .create_user(req(
            &admin,
            CreateUserRequest {
                user: Some(mk("boss@x.example", "")),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let r1 = d
        .create_user(req(
            &admin,
            CreateUserRequest {
                user: Some(mk("r1@x.example", &boss.name)),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let r2 = d
        .create_user(req(
            &admin,
            CreateUserRequest {
                user: Some(mk("r2@x.example", &boss.name)),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let outsider = d
        .create_user(req(
            &admin,
            CreateUserRequest {
                user: Some(mk("o@x.example", "")),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let id = |u: &User| Uuid::parse_str(u.name.trim_start_matches("users/")).unwrap();
    let rep1 = s.token("acme", id(&r1), &["rep"]);
    let manager = s.token("acme", id(&boss), &["manager"]);
    let mut c = s.contacts();
    let full = |given: &str, owner: &str| Contact {
        given_name: given.into(),
        owner: owner.into(),
        phones: vec![Phone {
            number: "+49 30 901820".into(),
            label: String::new(),
            extension: String::new(),
        }],
        birth_date: Some(Date {
            year: 1970,
            month: 1,
            day: 1,
        }),
        region: "DE".into(),
        ..Default::default()
    };
    for (g, o) in [("mine", &r1), ("colleague", &r2), ("stranger", &outsider)] {
        c.create_contact(req(
            &admin,
            CreateContactRequest {
                contact: Some(full(g, &o.name)),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    }
    // The rep sees only its own contact, without phone and birth date.
    let mine = c
        .list_contacts(req(&rep1, ListContactsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .contacts;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].given_name, "mine");
    assert!(mine[0].phones.is_empty());
    assert!(mine[0].birth_date.is_none());
    assert_eq!(mine[0].hidden_fields, vec!["phones", "birth_date"]);
    // ...and may not filter or sort by hidden fields, nor write them or read-only ones.
    expect_code(
        c.list_contacts(req(
            &rep1,
            ListContactsRequest {
                filter: "birth_date < \"2000-01-01\"".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    let w = c
        .update_contact(req(
            &rep1,
            UpdateContactRequest {
                contact: Some(Contact {
                    name: mine[0].name.clone(),
                    phones: vec![],
                    ..Default::default()
                }),
                update_mask: mask(&["phones"]),
            },
        ))
        .await;
    assert_eq!(
        reason(&expect_code(w, Code::PermissionDenied)),
        "FIELD_NOT_WRITABLE"
    );
    let w = c
        .update_contact(req(
            &rep1,
            UpdateContactRequest {
                contact: Some(Contact {
                    name: mine[0].name.clone(),
                    region: "FR".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["region"]),
            },
        ))
        .await;
    expect_code(w, Code::PermissionDenied);
    let w = c
        .create_contact(req(
            &rep1,
            CreateContactRequest {
                contact: Some(full("new", "")),
                request_id: String::new(),
            },
        ))
        .await;
    expect_code(w, Code::PermissionDenied);
    // Creating for someone else is outside an OWN scope; for oneself it works.
    let w = c
        .create_contact(req(
            &rep1,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: "x".into(),
                    owner: r2.name.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await;
    assert_eq!(
        reason(&expect_code(w, Code::PermissionDenied)),
        "OUT_OF_SCOPE"
    );
    let own = c
        .create_contact(req(
            &rep1,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: "own".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.owner, r1.name);
    // Another rep's contact: visible to nobody but its scope.
    let all = c
        .list_contacts(req(&admin, ListContactsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .contacts;
    let colleague = all.iter().find(|c| c.given_name == "colleague").unwrap();
    assert_eq!(
        reason(&expect_code(
            c.get_contact(req(
                &rep1,
                GetContactRequest {
                    name: colleague.name.clone()
                }
            ))
            .await,
            Code::PermissionDenied
        )),
        "OUT_OF_SCOPE"
    );
    expect_code(
        c.delete_contact(req(
            &rep1,
            DeleteContactRequest {
                name: mine[0].name.clone(),
                etag: String::new(),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    // The rep's audit view withholds hidden values.
    let audit = s
        .audit()
        .list_audit_records(req(
            &rep1,
            ListAuditRecordsRequest {
                parent: mine[0].name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let phones = audit.audit_records[0]
        .changes
        .iter()
        .find(|c| c.field == "phones")
        .unwrap();
    assert!(phones.redacted && phones.new_value.is_empty());
    // The manager reads the subtree (self, r1, r2) but not the outsider, and sees phones.
    let seen = c
        .list_contacts(req(
            &manager,
            ListContactsRequest {
                order_by: "given_name".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .contacts;
    let names: Vec<&str> = seen.iter().map(|c| c.given_name.as_str()).collect();
    assert_eq!(names, vec!["colleague", "mine", "own"]);
    assert!(!seen[0].phones.is_empty());
    expect_code(
        s.accounts()
            .list_accounts(req(&manager, ListAccountsRequest::default()))
            .await,
        Code::PermissionDenied,
    );
    // GetMyAccess reports the evaluated rights.
    let me = ac
        .get_my_access(req(&rep1, GetMyAccessRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user, r1.name);
    assert_eq!(me.field_rules.len(), 3);
}

async fn cached_policies_expire(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.auth.policy_cache_ms = 500).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    s.contacts()
        .list_contacts(req(&t, ListContactsRequest::default()))
        .await
        .unwrap();
    crm_core::tenant::set_status(
        &s.db,
        &crm_core::clock::SystemClock,
        "acme",
        crm_core::tenant::TenantStatus::Suspended,
    )
    .await
    .unwrap();
    // Within the cache's lifetime the evaluated policy is reused...
    s.contacts()
        .list_contacts(req(&t, ListContactsRequest::default()))
        .await
        .unwrap();
    // ...and after it, the suspension holds.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let st = expect_code(
        s.contacts()
            .list_contacts(req(&t, ListContactsRequest::default()))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&st), "TENANT_SUSPENDED");
}

both!(
    another_tenants_ids_are_not_found,
    tokens_are_checked,
    record_and_field_permissions,
    cached_policies_expire,
);
