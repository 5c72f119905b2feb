//! The engine as domain crates use it, without gRPC, on SQLite and PostgreSQL: composed writes
//! in one transaction (commit and rollback), write hooks, permission-aware custom reads,
//! and the registry checked against the structs and the migrated schema.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_core::access::{Action, Policy};
use crm_core::auth::Principal;
use crm_core::clock::SystemClock;
use crm_core::error::{Error, ErrorKind, Result};
use crm_core::journal::{self, AuditAction};
use crm_core::model::{Account, Contact, Position};
use crm_core::registry::registry;
use crm_core::resource::{FieldSpec, HookFuture, Record, Resource};
use crm_core::service::{Ctx, Tx};
use crm_tests::{Backend, TestServer, both};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

fn ctx(s: &TestServer, tenant: &str, user: Uuid, policy: Policy) -> Ctx {
    Ctx::new(
        s.db.clone(),
        Principal {
            tenant: tenant.into(),
            user,
            roles: vec![],
        },
        policy,
        Arc::new(SystemClock),
    )
}

fn admin(s: &TestServer) -> Ctx {
    ctx(s, "t", Uuid::now_v7(), Policy::superuser())
}

fn account(name: &str) -> Account {
    Account {
        display_name: name.into(),
        ..Default::default()
    }
}

fn contact(name: &str) -> Contact {
    Contact {
        given_name: name.into(),
        ..Default::default()
    }
}

async fn counts(s: &TestServer) -> [i64; 5] {
    [
        s.count("accounts", "t").await,
        s.count("contacts", "t").await,
        s.count("positions", "t").await,
        s.count("audit_records", "t").await,
        s.count("outbox_events", "t").await,
    ]
}

/// "Create the account, the contact and the position, all audited and evented, or none of
/// it": commits together, each write with its own audit record and event, in order.
async fn composed_writes_commit_together(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("t").await;
    let before = counts(&s).await;
    let ctx = admin(&s);
    let tx = ctx.begin().await.unwrap();
    let a = tx.create(account("Acme")).await.unwrap();
    let c = tx.create(contact("Ann")).await.unwrap();
    let p = tx
        .create(Position {
            contact: Some(c.meta.id),
            account: Some(a.meta.id),
            title: "Buyer".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Reads inside the transaction see its writes.
    assert_eq!(
        tx.get::<Position>(p.meta.id).await.unwrap().data.title,
        "Buyer"
    );
    tx.commit().await.unwrap();
    let after = counts(&s).await;
    assert_eq!(after[0] - before[0], 1);
    assert_eq!(after[1] - before[1], 1);
    assert_eq!(after[2] - before[2], 1);
    assert_eq!(after[3] - before[3], 3);
    assert_eq!(after[4] - before[4], 3);
    let events = journal::list_events(&s.db.conn, "t", 100).await.unwrap();
    let ours: Vec<&str> = events
        .iter()
        .filter(|e| [a.meta.id, c.meta.id, p.meta.id].contains(&e.resource_id))
        .map(|e| e.collection.as_str())
        .collect();
    assert_eq!(ours, ["accounts", "contacts", "positions"]);
}

/// A failure in the third write leaves nothing of the first two.
async fn composed_writes_roll_back_together(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("t").await;
    let before = counts(&s).await;
    let ctx = admin(&s);
    let result: Result<()> = async {
        let tx = ctx.begin().await?;
        tx.create(account("Acme")).await?;
        let c = tx.create(contact("Ann")).await?;
        // An account that does not exist: INVALID_ARGUMENT, and the `?` drops the Tx.
        tx.create(Position {
            contact: Some(c.meta.id),
            account: Some(Uuid::now_v7()),
            ..Default::default()
        })
        .await?;
        tx.commit().await
    }
    .await;
    assert_eq!(
        result.err().map(|e| e.kind),
        Some(ErrorKind::InvalidArgument)
    );
    assert_eq!(counts(&s).await, before);
    // The writer's turn was released: the next write goes through.
    ctx.create(account("Next"), "").await.unwrap();
}

/// A bulk create checks every record as a create does, names the bad one, writes nothing on
/// an error, and leaves one audit record and one event per record, as one-by-one creates do.
async fn bulk_creates_check_each_record_and_journal_each(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("t").await;
    let ctx = admin(&s);
    let before = counts(&s).await;
    // More rows than one INSERT statement carries (the parameter limit).
    let n = 2500;
    let items: Vec<(Uuid, Contact)> = (0..n)
        .map(|i| (Uuid::now_v7(), contact(&format!("Bulk {i}"))))
        .collect();
    let ids: Vec<Uuid> = items.iter().map(|(id, _)| *id).collect();
    assert_eq!(ctx.create_many(items).await.unwrap(), n);
    let after = counts(&s).await;
    assert_eq!(after[1] - before[1], i64::try_from(n).unwrap());
    assert_eq!(after[3] - before[3], i64::try_from(n).unwrap());
    assert_eq!(after[4] - before[4], i64::try_from(n).unwrap());
    // Each is what a create makes: derived fields, the caller as owner.
    let one = ctx.get::<Contact>(ids[1234]).await.unwrap();
    assert_eq!(one.data.display_name, "Bulk 1234");
    assert_eq!(one.data.owner, Some(ctx.principal.user));

    // A bad record anywhere: named, and none of the call is written.
    let a = ctx.create(account("Acme"), "").await.unwrap();
    let before = counts(&s).await;
    let missing = Uuid::now_v7();
    let positions: Vec<(Uuid, Position)> = [a.meta.id, missing, a.meta.id]
        .into_iter()
        .map(|acc| {
            (
                Uuid::now_v7(),
                Position {
                    contact: Some(ids[0]),
                    account: Some(acc),
                    ..Default::default()
                },
            )
        })
        .collect();
    let e = ctx.create_many(positions).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert_eq!(e.violations[0].field, "items[1].account", "{e:?}");
    assert!(e.violations[0].description.contains(&missing.to_string()));
    let invalid = vec![
        (Uuid::now_v7(), contact("Fine")),
        (Uuid::now_v7(), Contact::default()),
    ];
    let e = ctx.create_many(invalid).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(
        e.violations
            .iter()
            .all(|v| v.field.starts_with("items[1].")),
        "{e:?}"
    );
    assert_eq!(counts(&s).await, before);

    // Hooks run for each record, inside the transaction.
    let tx = ctx.begin().await.unwrap();
    tx.create_many(vec![
        (Uuid::now_v7(), FiledContact(contact("Hooked"))),
        (Uuid::now_v7(), FiledContact(contact("Twice"))),
    ])
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let after = counts(&s).await;
    // Two contacts, two accounts and two positions made by the hooks.
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [2, 2, 2]
    );
}

/// A contact that, written through [`Tx`], also files itself under an account: its hooks
/// run inside the transaction, with the handle.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
struct FiledContact(Contact);

impl Resource for FiledContact {
    const COLLECTION: &'static str = Contact::COLLECTION;
    const TABLE: &'static str = Contact::TABLE;
    const FIELDS: &'static [FieldSpec] = Contact::FIELDS;
    const OWNED: bool = Contact::OWNED;
    const CUSTOM_FIELDS: bool = Contact::CUSTOM_FIELDS;

    fn validate(&mut self) -> Result<()> {
        self.0.validate()
    }

    fn derive(&mut self) {
        self.0.derive();
    }

    fn before_write<'a>(
        _tx: &'a Tx<'a>,
        _id: Uuid,
        old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            if data.0.given_name == "Refused" {
                return Err(Error::failed_precondition("REFUSED", "refused by the hook"));
            }
            // A system change the caller did not make: a tag on create.
            if old.is_none() {
                data.0.tags.push("Filed".into());
            }
            Ok(())
        })
    }

    fn after_write<'a>(
        tx: &'a Tx<'a>,
        action: AuditAction,
        rec: &'a Record<Self>,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            if action != AuditAction::Create {
                return Ok(());
            }
            let a = tx
                .create(account(&format!("{}'s firm", rec.data.0.given_name)))
                .await?;
            tx.create(Position {
                contact: Some(rec.meta.id),
                account: Some(a.meta.id),
                ..Default::default()
            })
            .await?;
            if rec.data.0.given_name == "Late" {
                return Err(Error::failed_precondition(
                    "LATE",
                    "refused after the writes",
                ));
            }
            Ok(())
        })
    }
}

async fn hooks_run_inside_the_transaction(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("t").await;
    let ctx = admin(&s);
    let before = counts(&s).await;
    let rec = ctx.create(FiledContact(contact("Ann")), "").await.unwrap();
    // The hook's change was validated (tags lower-cased) and stored.
    assert_eq!(rec.data.0.tags, ["filed"]);
    let after = counts(&s).await;
    assert_eq!(&after[..3], &[before[0] + 1, before[1] + 1, before[2] + 1]);
    // A hook refusing before the write, and one failing after its own writes: nothing stays.
    for name in ["Refused", "Late"] {
        let e = ctx.create(FiledContact(contact(name)), "").await.err();
        assert_eq!(e.map(|e| e.kind), Some(ErrorKind::FailedPrecondition));
        assert_eq!(counts(&s).await, after, "{name}");
    }
    // An update runs the hooks too, with the stored record.
    let updated = ctx
        .update(
            rec.meta.id,
            FiledContact(contact("Anna")),
            &["given_name".to_owned()],
            "",
        )
        .await
        .unwrap();
    assert_eq!(updated.data.0.given_name, "Anna");
    assert_eq!(updated.data.0.tags, ["filed"]);
}

/// A custom read applies the caller's record scope and field rules through the public
/// helpers, without a K4 of its own.
async fn custom_reads_apply_scope_and_field_rules(backend: Backend) {
    use crm_core::access::{FieldAccess, FieldRule, Grant, RoleRights, Scope};
    let s = TestServer::start(backend).await;
    s.tenant("t").await;
    let rep = Uuid::now_v7();
    let rights = RoleRights {
        grants: vec![Grant {
            collection: "contacts".into(),
            actions: vec![Action::Read, Action::Create],
            scope: Scope::Own,
        }],
        field_rules: vec![FieldRule {
            collection: "contacts".into(),
            field: "region".into(),
            access: FieldAccess::Hidden,
        }],
    };
    let rep_ctx = ctx(&s, "t", rep, Policy::new(vec![rights]));
    let admin = admin(&s);
    admin
        .create_with_id(
            rep,
            crm_core::model::User {
                display_name: "Rep".into(),
                email: "rep@example.com".into(),
                ..Default::default()
            },
            "",
        )
        .await
        .unwrap();
    admin.create(contact("Someone else's"), "").await.unwrap();
    let mine = admin
        .create(
            Contact {
                region: "DE".into(),
                owner: Some(rep),
                ..contact("Mine")
            },
            "",
        )
        .await
        .unwrap();
    let contacts = registry().collection("contacts").unwrap();
    // A hand-built query, as a timeline or a report would build it.
    let mut q = Query::select();
    q.columns(["id", "given_name", "region"].map(Alias::new))
        .from(Alias::new(contacts.table))
        .and_where(Expr::col(Alias::new("tenant_id")).eq("t"))
        .and_where(Expr::col(Alias::new("delete_time")).is_null());
    if let Some(scope) = rep_ctx.scope_filter(contacts, Action::Read).await.unwrap() {
        q.cond_where(scope);
    }
    let rows = s.db.conn.query_all(&q).await.unwrap();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.try_get("", "id").unwrap()).collect();
    assert_eq!(ids, [mine.meta.id]);
    let mut obj = serde_json::Map::new();
    obj.insert("given_name".into(), "Mine".into());
    obj.insert("region".into(), "DE".into());
    assert_eq!(rep_ctx.mask_object(contacts, &mut obj), ["region"]);
    assert!(!obj.contains_key("region"));
    // No grant at all: PERMISSION_DENIED, not an empty result.
    let orders = registry().collection("orders").unwrap();
    let e = rep_ctx.scope_filter(orders, Action::Read).await.err();
    assert_eq!(e.map(|e| e.kind), Some(ErrorKind::PermissionDenied));
}

/// Every registered resource: its field table matches its struct (serde names, defaults)
/// and its migrated columns, on both databases, so drift fails here.
async fn registry_matches_structs_and_schema(backend: Backend) {
    let s = TestServer::start(backend).await;
    for c in registry().collections() {
        let sample = (c.sample)();
        let keys: std::collections::BTreeSet<&str> = sample
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let fields: std::collections::BTreeSet<&str> = c.fields.iter().map(|f| f.name).collect();
        assert_eq!(
            keys, fields,
            "{}: struct fields and field table differ",
            c.name
        );
        assert!(
            (c.decodes_partial)(),
            "{}: a record missing fields must decode (#[serde(default)])",
            c.name
        );
        let mut q = Query::select();
        q.columns(
            [
                "tenant_id",
                "id",
                "revision",
                "create_time",
                "update_time",
                "delete_time",
            ]
            .map(Alias::new),
        )
        .columns(c.fields.iter().map(|f| Alias::new(f.column)))
        .from(Alias::new(c.table))
        .limit(0);
        if let Err(e) = s.db.conn.query_all(&q).await {
            panic!("{}: the table {} lacks a column: {e}", c.name, c.table);
        }
        for f in c.fields {
            if let crm_core::resource::Kind::Ref(t) | crm_core::resource::Kind::RefList(t) = f.kind
            {
                assert!(registry().collection(t).is_some(), "{}.{}", c.name, f.name);
            }
        }
    }
}

/// Record keys and counters: keys replaced per record, lookups ranked by the keys shared,
/// tenants apart, counters taken and stored with the transaction.
async fn record_keys_and_counters(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("t").await;
    s.tenant("u").await;
    let ctx = admin(&s);
    let k = |v: &[&str]| v.iter().map(|x| (*x).to_string()).collect::<Vec<_>>();
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let tx = ctx.begin().await.unwrap();
    tx.set_record_keys("m", "contacts", a, &k(&["x", "y", "z"]))
        .await
        .unwrap();
    tx.set_record_keys("m", "contacts", b, &k(&["x"]))
        .await
        .unwrap();
    tx.set_record_keys("m", "leads", c, &k(&["x", "y"]))
        .await
        .unwrap();
    // Replaced, not added to.
    tx.set_record_keys("m", "contacts", b, &k(&["x", "w"]))
        .await
        .unwrap();
    assert_eq!(tx.lock_counter("rr").await.unwrap(), 0);
    tx.set_counter("rr", 7).await.unwrap();
    tx.commit().await.unwrap();
    // Another tenant's keys and counters are its own.
    let other = s.admin_ctx("u");
    let tx = other.begin().await.unwrap();
    tx.set_record_keys("m", "contacts", Uuid::now_v7(), &k(&["x", "y", "z"]))
        .await
        .unwrap();
    assert_eq!(tx.lock_counter("rr").await.unwrap(), 0);
    tx.commit().await.unwrap();

    let tx = ctx.begin().await.unwrap();
    let ids = |m: crm_core::service::KeyMatches| {
        m.records
            .into_iter()
            .map(|r| (r.collection, r.id))
            .collect::<Vec<_>>()
    };
    let all = tx
        .records_with_keys("m", &k(&["x", "y", "z"]), &["contacts", "leads"], 10, 10)
        .await
        .unwrap();
    assert!(all.stop_keys.is_empty());
    assert_eq!(all.records.first().map(|r| r.shared), Some(3));
    // The records sharing the most keys first: a (3), c (2), b (1: its "w" is not asked).
    assert_eq!(
        ids(all),
        [
            ("contacts".to_string(), a),
            ("leads".to_string(), c),
            ("contacts".to_string(), b)
        ]
    );
    let best = tx
        .records_with_keys("m", &k(&["x", "y", "z"]), &["contacts", "leads"], 10, 1)
        .await
        .unwrap();
    assert_eq!(ids(best), [("contacts".to_string(), a)]);
    let only_leads = tx
        .records_with_keys("m", &k(&["x"]), &["leads"], 10, 10)
        .await
        .unwrap();
    assert_eq!(ids(only_leads), [("leads".to_string(), c)]);
    // "x" is held by three records: with at most two per key it is a stop key, skipped.
    let capped = tx
        .records_with_keys("m", &k(&["x", "y"]), &["contacts", "leads"], 2, 10)
        .await
        .unwrap();
    assert_eq!(capped.stop_keys, ["x"]);
    assert_eq!(
        ids(capped),
        [("contacts".to_string(), a), ("leads".to_string(), c)]
    );
    // Tickets: each number once, the counter's next value, tenants apart.
    assert_eq!(tx.take_ticket("tickets").await.unwrap(), 1);
    assert_eq!(tx.take_ticket("tickets").await.unwrap(), 2);
    assert_eq!(tx.lock_counter("rr").await.unwrap(), 7);
    // Removing a record's keys.
    tx.set_record_keys("m", "contacts", a, &[]).await.unwrap();
    let left = tx
        .records_with_keys("m", &k(&["z"]), &["contacts"], 10, 10)
        .await
        .unwrap();
    assert!(left.records.is_empty(), "{left:?}");
    // A counter must be taken before it is stored.
    let e = tx.set_counter("never-taken", 1).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    tx.commit().await.unwrap();
    let tx = other.begin().await.unwrap();
    assert_eq!(tx.take_ticket("tickets").await.unwrap(), 1);
    drop(tx);

    // Additions at commit: counted in by this transaction's reads, applied at commit once,
    // summed; gone with a rollback; dropped by a set.
    let tx = ctx.begin().await.unwrap();
    tx.add_to_counter_at_commit("load:b", 2);
    tx.add_to_counter_at_commit("load:a", 1);
    tx.add_to_counter_at_commit("load:a", 1);
    assert_eq!(tx.pending_counter("load:a"), Some(2));
    assert_eq!(tx.pending_counter("load:c"), None);
    let seen = tx
        .counters(&k(&["load:a", "load:b", "load:c"]))
        .await
        .unwrap();
    assert_eq!(
        (seen.get("load:a"), seen.get("load:b")),
        (Some(&2), Some(&2))
    );
    assert_eq!(seen.get("load:c"), None);
    assert_eq!(tx.lock_counter("load:a").await.unwrap(), 2);
    tx.commit().await.unwrap();
    let tx = ctx.begin().await.unwrap();
    let stored = tx.counters(&k(&["load:a", "load:b"])).await.unwrap();
    assert_eq!(
        (stored.get("load:a"), stored.get("load:b")),
        (Some(&2), Some(&2))
    );
    tx.add_to_counter_at_commit("load:a", 5);
    drop(tx);
    let tx = ctx.begin().await.unwrap();
    assert_eq!(tx.lock_counter("load:a").await.unwrap(), 2);
    tx.add_to_counter_at_commit("load:a", 5);
    tx.set_counter("load:a", 10).await.unwrap();
    assert_eq!(tx.pending_counter("load:a"), None);
    tx.commit().await.unwrap();
    let tx = ctx.begin().await.unwrap();
    assert_eq!(tx.lock_counter("load:a").await.unwrap(), 10);
}

/// Configuration read through `Tx::find_cached` (and `crm_core::active::active`): kept for
/// a moment, yet a write committed through the same database handle is seen at once, a
/// transaction sees its own writes, and a rolled-back write changes nothing.
async fn cached_configuration_follows_writes(backend: Backend) {
    use crm_core::model::Territory;
    use sea_orm::sea_query::Condition;
    let s = TestServer::start(backend).await;
    s.tenant("t").await;
    let ctx = admin(&s);
    let names = |v: &[crm_core::resource::Record<Territory>]| {
        v.iter()
            .map(|t| t.data.display_name.clone())
            .collect::<Vec<_>>()
    };
    let read = || async {
        let tx = ctx.begin().await.unwrap();
        let v = tx
            .find_cached::<Territory>("tree", Condition::all(), 100)
            .await
            .unwrap();
        names(&v)
    };
    assert!(read().await.is_empty());
    let made = ctx
        .create(
            Territory {
                display_name: "North".into(),
                ..Default::default()
            },
            "",
        )
        .await
        .unwrap();
    assert_eq!(read().await, ["North"]);
    // Within the writing transaction: its own write; after a rollback: as before.
    let tx = ctx.begin().await.unwrap();
    tx.create(Territory {
        display_name: "South".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let inside = tx
        .find_cached::<Territory>("tree", Condition::all(), 100)
        .await
        .unwrap();
    assert_eq!(names(&inside).len(), 2);
    drop(tx);
    assert_eq!(read().await, ["North"]);
    // An update and a delete are seen at once.
    ctx.update(
        made.meta.id,
        Territory {
            display_name: "Nord".into(),
            ..Default::default()
        },
        &["display_name".to_owned()],
        &made.meta.etag(),
    )
    .await
    .unwrap();
    assert_eq!(read().await, ["Nord"]);
    let now = ctx.get::<Territory>(made.meta.id).await.unwrap();
    ctx.delete::<Territory>(made.meta.id, &now.meta.etag())
        .await
        .unwrap();
    assert!(read().await.is_empty());
}

both!(
    cached_configuration_follows_writes,
    record_keys_and_counters,
    bulk_creates_check_each_record_and_journal_each,
    composed_writes_commit_together,
    composed_writes_roll_back_together,
    hooks_run_inside_the_transaction,
    custom_reads_apply_scope_and_field_rules,
    registry_matches_structs_and_schema,
);
