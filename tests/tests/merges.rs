//! MergeService (crm-operational): merging duplicate contacts, accounts and leads, with
//! their related records moved, audited, and undone, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::google::longrunning as lro;
use crm_api::v1::*;
use crm_tests::{Backend, TestServer, both, expect_code, mask, req, violated_fields};
use tonic::Code;
use uuid::Uuid;

fn contact(given: &str, family: &str, email: &str) -> Contact {
    Contact {
        given_name: given.into(),
        family_name: family.into(),
        emails: vec![Email {
            address: email.into(),
            label: String::new(),
        }],
        region: "DE".into(),
        ..Default::default()
    }
}

async fn create_contact(s: &TestServer, t: &str, c: Contact) -> Contact {
    s.contacts()
        .create_contact(req(
            t,
            CreateContactRequest {
                contact: Some(c),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn create_deal(s: &TestServer, t: &str, title: &str, contact: &str, lead: &str) -> String {
    s.opportunities()
        .create_opportunity(req(
            t,
            CreateOpportunityRequest {
                opportunity: Some(Opportunity {
                    display_name: title.into(),
                    contact: contact.into(),
                    lead: lead.into(),
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

async fn deal(s: &TestServer, t: &str, name: &str) -> Opportunity {
    s.opportunities()
        .get_opportunity(req(t, GetOpportunityRequest { name: name.into() }))
        .await
        .unwrap()
        .into_inner()
}

fn merge_contacts(survivor: &str, merged: &str, fields: &[&str]) -> MergeContactsRequest {
    MergeContactsRequest {
        survivor: survivor.into(),
        merged: merged.into(),
        field_mask: mask(fields),
        ..Default::default()
    }
}

/// Two contacts of one person: the duplicate's e-mail is taken, its deal moves to the
/// survivor, it is gone; every write is audited; undo puts all of it back.
async fn contacts_merge_and_undo(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let keep = create_contact(&s, &t, contact("Anna", "Müller", "anna@old.example")).await;
    let dup = create_contact(&s, &t, contact("Anna", "Mueller", "anna@new.example")).await;
    let d1 = create_deal(&s, &t, "Pumps", &dup.name, "").await;
    let d2 = create_deal(&s, &t, "Valves", &keep.name, "").await;

    let m = s
        .merges()
        .merge_contacts(req(&t, merge_contacts(&keep.name, &dup.name, &["emails"])))
        .await
        .unwrap()
        .into_inner();
    let merge = m.merge.unwrap();
    let survivor = m.survivor.unwrap();
    assert_eq!(survivor.name, keep.name);
    assert_eq!(survivor.emails[0].address, "anna@new.example");
    assert_eq!(survivor.family_name, "Müller", "fields not named stay");
    assert_eq!(merge.state, MergeState::Merged as i32);
    assert_eq!(merge.survivor, keep.name);
    assert_eq!(merge.merged, dup.name);
    assert_eq!(
        merge
            .references
            .iter()
            .map(|r| (r.record.as_str(), r.field.as_str()))
            .collect::<Vec<_>>(),
        [(d1.as_str(), "contact")]
    );
    // The duplicate is gone, its deal points at the survivor, the other deal untouched.
    let gone = s
        .contacts()
        .get_contact(req(
            &t,
            GetContactRequest {
                name: dup.name.clone(),
            },
        ))
        .await;
    expect_code(gone, Code::NotFound);
    assert_eq!(deal(&s, &t, &d1).await.contact, keep.name);
    assert_eq!(deal(&s, &t, &d2).await.contact, keep.name);
    // The deal's move is in its audit trail; the duplicate's history is kept.
    let history = |parent: String| {
        let mut a = s.audit();
        let t = t.clone();
        async move {
            a.list_audit_records(req(
                &t,
                ListAuditRecordsRequest {
                    parent,
                    page_size: 50,
                    page_token: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .audit_records
        }
    };
    let moved = history(d1.clone()).await;
    assert_eq!(moved.len(), 2, "created, then moved: {moved:?}");
    let dup_history = history(dup.name.clone()).await;
    assert_eq!(
        dup_history.iter().map(|a| a.action).collect::<Vec<_>>(),
        [AuditAction::Delete as i32, AuditAction::Create as i32]
    );

    // Undo: the duplicate is back with its own e-mail, its deal points at it again, the
    // survivor has its e-mail back.
    let undone = s
        .merges()
        .undo_record_merge(req(
            &t,
            UndoRecordMergeRequest {
                name: merge.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(undone.state, MergeState::Undone as i32);
    assert!(undone.undo_conflicts.is_empty());
    let back = s
        .contacts()
        .get_contact(req(
            &t,
            GetContactRequest {
                name: dup.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.emails[0].address, "anna@new.example");
    assert_eq!(deal(&s, &t, &d1).await.contact, dup.name);
    assert_eq!(deal(&s, &t, &d2).await.contact, keep.name);
    let kept = s
        .contacts()
        .get_contact(req(
            &t,
            GetContactRequest {
                name: keep.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.emails[0].address, "anna@old.example");
    assert_eq!(
        history(dup.name.clone()).await.first().map(|a| a.action),
        Some(AuditAction::Undelete as i32)
    );
    // Twice is refused; the merge is listed with its state.
    let again = s
        .merges()
        .undo_record_merge(req(
            &t,
            UndoRecordMergeRequest {
                name: merge.name.clone(),
            },
        ))
        .await;
    expect_code(again, Code::FailedPrecondition);
    let listed = s
        .merges()
        .list_record_merges(req(
            &t,
            ListRecordMergesRequest {
                filter: "collection = \"contacts\" AND state = \"UNDONE\"".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .merges;
    assert_eq!(listed.len(), 1);
}

/// A survivor field changed after the merge is the user's: undo leaves it and says so.
async fn undo_keeps_later_changes(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let keep = create_contact(&s, &t, contact("Li", "Wei", "li@a.example")).await;
    let dup = create_contact(&s, &t, contact("Li", "Wei", "li@b.example")).await;
    let m = s
        .merges()
        .merge_contacts(req(&t, merge_contacts(&keep.name, &dup.name, &["emails"])))
        .await
        .unwrap()
        .into_inner();
    let survivor = m.survivor.unwrap();
    s.contacts()
        .update_contact(req(
            &t,
            UpdateContactRequest {
                contact: Some(Contact {
                    emails: vec![Email {
                        address: "li@c.example".into(),
                        label: String::new(),
                    }],
                    ..survivor.clone()
                }),
                update_mask: mask(&["emails"]),
            },
        ))
        .await
        .unwrap();
    let undone = s
        .merges()
        .undo_record_merge(req(
            &t,
            UndoRecordMergeRequest {
                name: m.merge.unwrap().name,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(undone.undo_conflicts, ["emails"]);
    let kept = s
        .contacts()
        .get_contact(req(&t, GetContactRequest { name: keep.name }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.emails[0].address, "li@c.example");
}

/// Leads and accounts merge the same way: a lead's deal moves, a child account moves.
async fn leads_and_accounts_merge(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let lead = |company: &str| Lead {
        given_name: "Jonas".into(),
        family_name: "Weber".into(),
        company: company.into(),
        source: "web_form".into(),
        ..Default::default()
    };
    let mut leads = s.leads();
    let a = leads
        .create_lead(req(
            &t,
            CreateLeadRequest {
                lead: Some(lead("Weber AG")),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let b = leads
        .create_lead(req(
            &t,
            CreateLeadRequest {
                lead: Some(lead("Weber Aktiengesellschaft")),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let d = create_deal(&s, &t, "From the fair", "", &b.name).await;
    let m = s
        .merges()
        .merge_leads(req(
            &t,
            MergeLeadsRequest {
                survivor: a.name.clone(),
                merged: b.name.clone(),
                field_mask: mask(&["company"]),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.survivor.unwrap().company, "Weber Aktiengesellschaft");
    assert_eq!(deal(&s, &t, &d).await.lead, a.name);

    let mut accounts = s.accounts();
    let account = |n: &str, parent: &str| Account {
        display_name: n.into(),
        parent: parent.into(),
        ..Default::default()
    };
    let make = |a: Account| {
        let t = t.clone();
        let mut c = accounts.clone();
        async move {
            c.create_account(req(
                &t,
                CreateAccountRequest {
                    account: Some(a),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
        }
    };
    let keep = make(account("Acme GmbH", "")).await;
    let dup = make(account("ACME G.m.b.H.", "")).await;
    let child = make(account("Acme Berlin", &dup.name)).await;
    let m = s
        .merges()
        .merge_accounts(req(
            &t,
            MergeAccountsRequest {
                survivor: keep.name.clone(),
                merged: dup.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.merge.unwrap().references.len(), 1);
    let moved = accounts
        .get_account(req(&t, GetAccountRequest { name: child.name }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.parent, keep.name);
}

/// Itself, another tenant's record, a field that does not exist, a stale etag, a caller
/// without the right to delete: each refused with its field, and nothing changed.
async fn bad_merges_are_refused(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("other").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let o = s.token("other", Uuid::now_v7(), &["admin"]);
    let a = create_contact(&s, &t, contact("Mia", "Fischer", "mia@a.example")).await;
    let b = create_contact(&s, &t, contact("Mia", "Fischer", "mia@b.example")).await;
    let theirs = create_contact(&s, &o, contact("Mia", "Fischer", "mia@c.example")).await;
    let mut m = s.merges();

    let e = expect_code(
        m.merge_contacts(req(&t, merge_contacts(&a.name, &a.name, &[])))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["merged"]);
    expect_code(
        m.merge_contacts(req(&t, merge_contacts(&a.name, &theirs.name, &[])))
            .await,
        Code::NotFound,
    );
    let e = expect_code(
        m.merge_contacts(req(&t, merge_contacts(&a.name, &b.name, &["shoe_size"])))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["field_mask.paths[0]"]);
    let e = expect_code(
        m.merge_contacts(req(&t, merge_contacts("accounts/x", &b.name, &[])))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["survivor"]);
    // A stale etag: the record changed since the caller looked.
    expect_code(
        m.merge_contacts(req(
            &t,
            MergeContactsRequest {
                merged_etag: "\"r0\"".into(),
                ..merge_contacts(&a.name, &b.name, &[])
            },
        ))
        .await,
        Code::Aborted,
    );
    // A rep may update their contacts but not delete them.
    let rep_user = Uuid::now_v7();
    let rep = s.token("acme", rep_user, &["rep"]);
    for r in crm_gateway::demo::roles() {
        s.admin_ctx("acme").create(r, "").await.unwrap();
    }
    let mine_a = create_contact(&s, &rep, contact("Finn", "Becker", "finn@a.example")).await;
    let mine_b = create_contact(&s, &rep, contact("Finn", "Becker", "finn@b.example")).await;
    expect_code(
        m.merge_contacts(req(
            &rep,
            merge_contacts(&mine_a.name, &mine_b.name, &["emails"]),
        ))
        .await,
        Code::PermissionDenied,
    );
    // Nothing of the refused merges happened.
    for c in [&a, &b, &mine_a, &mine_b] {
        let got = s
            .contacts()
            .get_contact(req(
                &t,
                GetContactRequest {
                    name: c.name.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.etag, c.etag, "{} changed", c.name);
    }
    assert_eq!(s.count("record_merges", "acme").await, 0);
    // A role that may merge contacts but not see their phones may not take them.
    use crm_core::access::{Action, FieldAccess, FieldRule, Grant, Scope};
    let grant = |c: &str, actions: &[Action]| Grant {
        collection: c.into(),
        actions: actions.to_vec(),
        scope: Scope::All,
    };
    s.admin_ctx("acme")
        .create(
            crm_core::model::Role {
                key: "merger".into(),
                display_name: "Merger".into(),
                grants: vec![
                    grant("contacts", &[Action::Read, Action::Update, Action::Delete]),
                    grant("recordMerges", &[Action::Read, Action::Create]),
                ],
                field_rules: vec![FieldRule {
                    collection: "contacts".into(),
                    field: "phones".into(),
                    access: FieldAccess::Hidden,
                }],
            },
            "",
        )
        .await
        .unwrap();
    let merger = s.token("acme", Uuid::now_v7(), &["merger"]);
    let e = expect_code(
        m.merge_contacts(req(&merger, merge_contacts(&a.name, &b.name, &["phones"])))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(crm_tests::reason(&e), "FIELD_NOT_WRITABLE");
    // A manager merges their own contacts.
    let manager = s.token("acme", Uuid::now_v7(), &["manager"]);
    let ma = create_contact(&s, &manager, contact("Lea", "Wagner", "lea@a.example")).await;
    let mb = create_contact(&s, &manager, contact("Lea", "Wagner", "lea@b.example")).await;
    let done = m
        .merge_contacts(req(
            &manager,
            merge_contacts(&ma.name, &mb.name, &["emails"]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.survivor.unwrap().emails[0].address, "lea@b.example");
}

async fn wait(s: &TestServer, token: &str, name: &str) -> lro::Operation {
    s.wait_operation(token, name).await
}

fn person(given: &str, family: &str, phone: &str, city: &str, postcode: &str) -> Contact {
    Contact {
        given_name: given.into(),
        family_name: family.into(),
        phones: vec![Phone {
            number: phone.into(),
            label: String::new(),
            extension: String::new(),
        }],
        addresses: vec![PostalAddress {
            lines: vec!["Hauptstraße 5".into()],
            locality: city.into(),
            postal_code: postcode.into(),
            region_code: "DE".into(),
            ..Default::default()
        }],
        region: "DE".into(),
        ..Default::default()
    }
}

/// A scan of the tenant's contacts finds the pair of one person entered twice (each pair
/// once), not the stranger; FindDuplicates answers the same for one record; a rep sees
/// neither the phones they may not read nor records outside their scope.
async fn scans_and_finds_duplicates(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("other").await;
    for r in crm_gateway::demo::roles() {
        s.admin_ctx("acme").create(r, "").await.unwrap();
    }
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let a = create_contact(
        &s,
        &t,
        person(
            "Katharina",
            "Schneider",
            "+49 30 1234567",
            "Berlin",
            "10115",
        ),
    )
    .await;
    let b = create_contact(
        &s,
        &t,
        person("Katarina", "Schneider", "030 1234567", "Berlin", "10115"),
    )
    .await;
    let c = create_contact(
        &s,
        &t,
        person("Wolfgang", "Amsel", "+49 89 7654321", "München", "80331"),
    )
    .await;

    let mut d = s.duplicates();
    let found = d
        .find_duplicates(req(
            &t,
            FindDuplicatesRequest {
                name: a.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.status, "MATCH", "{found:?}");
    assert_eq!(found.candidates[0].record, b.name);
    assert!(found.candidates.iter().all(|x| x.record != c.name));
    assert!(
        found.candidates[0]
            .evidence
            .iter()
            .any(|e| e.field == "phone" && !e.left.is_empty())
    );

    let op = d
        .start_duplicate_scan(req(
            &t,
            StartDuplicateScanRequest {
                collection: "contacts".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let done = wait(&s, &t, &op.name).await;
    assert!(
        matches!(done.result, Some(lro::operation::Result::Response(_))),
        "{done:?}"
    );
    let pairs = d
        .list_duplicate_pairs(req(
            &t,
            ListDuplicatePairsRequest {
                scan: op.name.clone(),
                page_size: 50,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .pairs;
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    let mut names = [pairs[0].record.clone(), pairs[0].other.clone()];
    names.sort();
    let mut want = [a.name.clone(), b.name.clone()];
    want.sort();
    assert_eq!(names, want);
    assert_eq!(pairs[0].decision, "MATCH");

    // Bad input and another tenant.
    let e = expect_code(
        d.start_duplicate_scan(req(
            &t,
            StartDuplicateScanRequest {
                collection: "orders".into(),
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["collection"]);
    let o = s.token("other", Uuid::now_v7(), &["admin"]);
    expect_code(
        d.list_duplicate_pairs(req(
            &o,
            ListDuplicatePairsRequest {
                scan: op.name.clone(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        d.find_duplicates(req(
            &o,
            FindDuplicatesRequest {
                name: a.name.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    let e = expect_code(
        d.find_duplicates(req(
            &t,
            FindDuplicatesRequest {
                name: "orders/0193".into(),
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["name"]);

    // A rep: their own two contacts match, phones (hidden from reps) are blanked, and the
    // admin's contacts are not shown.
    let rep_user = s
        .directory()
        .create_user(req(
            &t,
            CreateUserRequest {
                user: Some(User {
                    display_name: "Rep".into(),
                    email: "rep@acme.example".into(),
                    active: true,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .name;
    let rep_id = Uuid::parse_str(rep_user.trim_start_matches("users/")).unwrap();
    let rep = s.token("acme", rep_id, &["rep"]);
    // Reps may not write phones: the admin enters the rep's contacts.
    let owned = |c: Contact| Contact {
        owner: rep_user.clone(),
        ..c
    };
    let mine = create_contact(
        &s,
        &t,
        owned(person(
            "Katharina",
            "Schneider",
            "+49 30 1234567",
            "Berlin",
            "10115",
        )),
    )
    .await;
    let seen = d
        .find_duplicates(req(
            &rep,
            FindDuplicatesRequest {
                name: mine.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // The admin's two namesakes are not the rep's to see.
    assert!(
        seen.candidates
            .iter()
            .all(|x| x.record != a.name && x.record != b.name),
        "{seen:?}"
    );
    let mine2 = create_contact(
        &s,
        &t,
        owned(person(
            "Katharina",
            "Schneider",
            "030 1234567",
            "Berlin",
            "10115",
        )),
    )
    .await;
    let seen = d
        .find_duplicates(req(
            &rep,
            FindDuplicatesRequest {
                name: mine.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.candidates.len(), 1, "{seen:?}");
    assert_eq!(seen.candidates[0].record, mine2.name);
    for e in &seen.candidates[0].evidence {
        if e.field == "phone" {
            assert!(e.left.is_empty() && e.right.is_empty(), "{e:?}");
        }
    }
}

both!(
    scans_and_finds_duplicates,
    contacts_merge_and_undo,
    undo_keeps_later_changes,
    leads_and_accounts_merge,
    bad_merges_are_refused,
);
