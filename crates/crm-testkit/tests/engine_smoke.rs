//! The kit used from a crate other than `tests/`: engine-level (service, no gRPC) contract
//! tests on SQLite and PostgreSQL through `Ctx`, with the kit's own helpers only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_core::ErrorKind;
use crm_core::access::{Action, Scope};
use crm_core::model::{Contact, Role};
use crm_core::service::ListParams;
use crm_testkit::{Backend, TestDb, TestEngine, both, expect_kind, grant, policy_of};
use sea_orm::ConnectionTrait;
use uuid::Uuid;

fn contact(given_name: &str) -> Contact {
    Contact {
        given_name: given_name.into(),
        family_name: "Smith".into(),
        ..Default::default()
    }
}

fn all() -> ListParams {
    ListParams {
        page_size: 100,
        ..Default::default()
    }
}

/// Create, get, list, update and delete a contact: audited and evented, an update needs the
/// current etag, a deleted contact is gone from Get and List.
async fn contact_lifecycle(backend: Backend) {
    let e = TestEngine::start(backend).await;
    assert_eq!(e.backend(), backend);
    let tenant = e.tenant("acme").await;
    assert_eq!(tenant.id, "acme");
    let admin = e.admin("acme");
    let events = e.count("outbox_events", "acme").await;
    let audits = e.count("audit_records", "acme").await;

    let created = admin.create(contact("Ann"), "").await.unwrap();
    assert_eq!(created.meta.revision, 1);
    assert_eq!(created.data.display_name, "Ann Smith");
    assert_eq!(created.data.owner, Some(admin.principal.user));

    let got = admin.get::<Contact>(created.meta.id).await.unwrap();
    assert_eq!(got.data.given_name, "Ann");
    assert_eq!(got.meta.etag(), created.meta.etag());

    admin.create(contact("Bob"), "").await.unwrap();
    let page = admin.list::<Contact>(&all()).await.unwrap();
    let mut names: Vec<_> = page
        .items
        .iter()
        .map(|r| r.data.given_name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Ann", "Bob"]);

    let filtered = admin
        .list::<Contact>(&ListParams {
            filter: "given_name = \"Ann\"".into(),
            ..all()
        })
        .await
        .unwrap();
    assert_eq!(filtered.items.len(), 1);

    let patch = Contact {
        region: "DE".into(),
        ..Default::default()
    };
    let updated = admin
        .update(
            created.meta.id,
            patch.clone(),
            &["region".to_string()],
            &created.meta.etag(),
        )
        .await
        .unwrap();
    assert_eq!(updated.meta.revision, 2);
    assert_eq!(updated.data.region, "DE");
    assert_eq!(updated.data.given_name, "Ann");
    // The etag of revision 1 is stale now.
    let stale = admin
        .update(
            created.meta.id,
            patch,
            &["region".to_string()],
            &created.meta.etag(),
        )
        .await;
    expect_kind(stale, ErrorKind::Aborted);

    admin
        .delete::<Contact>(created.meta.id, &updated.meta.etag())
        .await
        .unwrap();
    expect_kind(
        admin.get::<Contact>(created.meta.id).await,
        ErrorKind::NotFound,
    );
    let page = admin.list::<Contact>(&all()).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].data.given_name, "Bob");

    // Soft delete: the row stays; 2 creates, 1 update, 1 delete were audited and evented.
    assert_eq!(e.count("contacts", "acme").await, 2);
    assert_eq!(e.count("outbox_events", "acme").await - events, 4);
    assert_eq!(e.count("audit_records", "acme").await - audits, 4);
}

/// Another tenant's ids are NOT_FOUND, for every use case, even to its superuser.
async fn another_tenants_ids_are_not_found(backend: Backend) {
    let e = TestEngine::start(backend).await;
    e.tenant("acme").await;
    e.tenant("globex").await;
    let acme = e.admin("acme");
    let globex = e.admin("globex");
    let ann = acme.create(contact("Ann"), "").await.unwrap();
    let id = ann.meta.id;

    expect_kind(globex.get::<Contact>(id).await, ErrorKind::NotFound);
    expect_kind(
        globex
            .update(id, contact("Eve"), &["given_name".into()], "")
            .await,
        ErrorKind::NotFound,
    );
    expect_kind(globex.delete::<Contact>(id, "").await, ErrorKind::NotFound);
    assert!(
        globex
            .list::<Contact>(&all())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Untouched for its own tenant.
    let got = acme.get::<Contact>(id).await.unwrap();
    assert_eq!(got.data.given_name, "Ann");
    assert_eq!(got.meta.revision, 1);
}

/// A rep scoped to their own records cannot read (or change) an admin's: PERMISSION_DENIED
/// with reason OUT_OF_SCOPE; they read and list their own. Both ways of building the rep's
/// context: a role stored in the tenant, and a policy given directly.
async fn a_rep_cannot_read_an_admins_record(backend: Backend) {
    let e = TestEngine::start(backend).await;
    e.tenant("acme").await;
    let admin = e.admin("acme");
    let own = grant(
        "contacts",
        &[Action::Read, Action::Create, Action::Update],
        Scope::Own,
    );
    admin
        .create(
            Role {
                key: "rep".into(),
                display_name: "Sales rep".into(),
                grants: vec![own.clone()],
                field_rules: vec![],
            },
            "",
        )
        .await
        .unwrap();
    let theirs = admin.create(contact("Ann"), "").await.unwrap();

    let user = Uuid::now_v7();
    let stored = e.ctx_for_roles("acme", user, &["rep"]).await;
    let given = e.ctx("acme", user, policy_of(vec![own]));
    for rep in [stored, given] {
        let err = expect_kind(
            rep.get::<Contact>(theirs.meta.id).await,
            ErrorKind::PermissionDenied,
        );
        assert_eq!(err.reason, "OUT_OF_SCOPE");
        let err = expect_kind(
            rep.update(theirs.meta.id, contact("Eve"), &["given_name".into()], "")
                .await,
            ErrorKind::PermissionDenied,
        );
        assert_eq!(err.reason, "OUT_OF_SCOPE");

        let mine = rep.create(contact("Rita"), "").await.unwrap();
        assert_eq!(mine.data.owner, Some(user));
        assert_eq!(
            rep.get::<Contact>(mine.meta.id)
                .await
                .unwrap()
                .data
                .given_name,
            "Rita"
        );
        let listed = rep.list::<Contact>(&all()).await.unwrap();
        assert!(listed.items.iter().all(|r| r.data.owner == Some(user)));
        assert!(listed.items.iter().any(|r| r.meta.id == mine.meta.id));
    }

    // Without the role, nothing: the tenant's roles decide, not the key alone.
    let nobody = e.ctx_for_roles("acme", user, &["no-such-role"]).await;
    expect_kind(
        nobody.list::<Contact>(&all()).await,
        ErrorKind::PermissionDenied,
    );
}

/// A fresh database is private and removed on drop: the SQLite file with its directory, the
/// PostgreSQL database from the server.
async fn a_test_db_is_removed_on_drop(backend: Backend) {
    let db = TestDb::new(backend).await;
    assert_eq!(db.backend(), backend);
    match backend {
        Backend::Sqlite => {
            let e = TestEngine::start_on(db).await;
            let path = e
                .test_db
                .url
                .trim_start_matches("sqlite://")
                .trim_end_matches("?mode=rwc")
                .to_owned();
            assert!(std::path::Path::new(&path).exists(), "{path}");
            drop(e);
            assert!(!std::path::Path::new(&path).exists(), "{path}");
        }
        Backend::Postgres => {
            let name = db.url.rsplit('/').next().unwrap().to_owned();
            let server = crm_testkit::postgres_server();
            let admin =
                sea_orm::Database::connect(format!("{}/postgres", server.trim_end_matches('/')))
                    .await
                    .unwrap();
            let exists = |name: String| {
                let admin = &admin;
                async move {
                    admin
                        .query_one_raw(sea_orm::Statement::from_string(
                            admin.get_database_backend(),
                            format!("SELECT 1 AS one FROM pg_database WHERE datname = '{name}'"),
                        ))
                        .await
                        .unwrap()
                        .is_some()
                }
            };
            let e = TestEngine::start_on(db).await;
            e.tenant("acme").await;
            assert!(exists(name.clone()).await);
            drop(e);
            assert!(!exists(name).await);
            admin.close().await.unwrap();
        }
    }
}

both!(
    contact_lifecycle,
    another_tenants_ids_are_not_found,
    a_rep_cannot_read_an_admins_record,
    a_test_db_is_removed_on_drop,
);
