//! LeadService (crm-operational): leads graded in their write transaction by the tenant's
//! active grading policy, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::v1::grading_condition::Condition as C;
use crm_api::v1::*;
use crm_tests::{Backend, TestServer, both, expect_code, mask, req, violated_fields};
use tonic::Code;
use uuid::Uuid;

fn values(v: &[&str]) -> ValueList {
    ValueList {
        values: v.iter().map(|s| (*s).to_string()).collect(),
    }
}

fn rule(id: &str, c: C, points: i32) -> GradingRule {
    GradingRule {
        id: id.into(),
        description: String::new(),
        when: Some(GradingCondition { condition: Some(c) }),
        points,
    }
}

/// Trade-show leads from Germany in manufacturing are hot; big companies add points;
/// students take points away.
fn policy(name: &str, active: bool) -> LeadGradingPolicy {
    LeadGradingPolicy {
        display_name: name.into(),
        active,
        rules: vec![
            rule("show", C::Source(values(&["trade_show"])), 40),
            rule("de", C::Region(values(&["DE"])), 20),
            rule(
                "big",
                C::CompanySize(CountRange {
                    min: Some(500),
                    max: None,
                }),
                15,
            ),
            rule(
                "student",
                C::Field(FieldValues {
                    field: "title".into(),
                    values: vec!["Student".into()],
                }),
                -50,
            ),
        ],
        thresholds: Some(GradeThresholds {
            hot: 70,
            warm: 40,
            cold: 10,
        }),
        ..Default::default()
    }
}

fn lead(source: &str, region: &str, employees: i64) -> Lead {
    Lead {
        given_name: "Anna".into(),
        family_name: "Schmidt".into(),
        company: "Muster GmbH".into(),
        phones: vec![Phone {
            number: "030 1234567".into(),
            ..Default::default()
        }],
        emails: vec![Email {
            address: "Anna.Schmidt@Muster.example".into(),
            ..Default::default()
        }],
        address: Some(PostalAddress {
            region_code: "de".into(),
            ..Default::default()
        }),
        source: source.into(),
        region: region.into(),
        employee_count: employees,
        ..Default::default()
    }
}

async fn create(s: &TestServer, t: &str, l: Lead) -> Result<Lead, tonic::Status> {
    s.leads()
        .create_lead(req(
            t,
            CreateLeadRequest {
                lead: Some(l),
                request_id: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn leads_are_captured_normalised_and_graded(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);

    // No policy yet: ungraded; phones and e-mails normalised; the name derived.
    let l = create(&s, &t, lead("trade_show", "DE", 800)).await.unwrap();
    assert_eq!(l.grade, LeadGrade::Ungraded as i32);
    assert_eq!(l.status, LeadStatus::New as i32);
    assert_eq!(l.phones[0].number, "+49301234567");
    assert_eq!(l.emails[0].address, "anna.schmidt@muster.example");
    assert_eq!(l.display_name, "Anna Schmidt");
    assert!(l.name.starts_with("leads/"));
    // No rule set: the creator owns it, and the decision says so.
    let a = l.assignment.clone().unwrap();
    assert_eq!(a.via, AssignmentVia::Manual as i32);
    assert_eq!(a.owner, l.owner);
    assert!(a.reason.contains("no active assignment rule set"), "{a:?}");
    assert_eq!(l.duplicates.clone().unwrap().status, "NONE");

    // An active policy grades every later write, with its reasons.
    let p = s
        .leads()
        .create_lead_grading_policy(req(
            &t,
            CreateLeadGradingPolicyRequest {
                policy: Some(policy("Default", true)),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(p.active);
    let hot = create(&s, &t, lead("trade_show", "DE", 800)).await.unwrap();
    assert_eq!(hot.grade, LeadGrade::Hot as i32, "{hot:?}");
    assert_eq!(hot.grade_points, 75);
    let reasons: Vec<(&str, i64)> = hot
        .grade_reasons
        .iter()
        .map(|r| (r.rule.as_str(), r.points))
        .collect();
    assert_eq!(reasons, [("show", 40), ("de", 20), ("big", 15)]);
    let warm = create(&s, &t, lead("trade_show", "FR", 10)).await.unwrap();
    assert_eq!(warm.grade, LeadGrade::Warm as i32);
    let cold = create(&s, &t, lead("web_form", "DE", 0)).await.unwrap();
    assert_eq!(cold.grade, LeadGrade::Cold as i32);

    // A grade the caller sends is replaced by grading.
    let mut forged = lead("web_form", "FR", 0);
    forged.grade = LeadGrade::Hot as i32;
    forged.grade_points = 1000;
    let forged = create(&s, &t, forged).await.unwrap();
    assert_eq!(forged.grade, LeadGrade::LongTerm as i32);
    assert_eq!(forged.grade_points, 0);

    // An update regrades: the student loses 50 points.
    let updated = s
        .leads()
        .update_lead(req(
            &t,
            UpdateLeadRequest {
                lead: Some(Lead {
                    name: hot.name.clone(),
                    title: "Student".into(),
                    etag: hot.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["title"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.grade_points, 25);
    assert_eq!(updated.grade, LeadGrade::Cold as i32);

    // Lists filter and sort by grade.
    let hot_ones = s
        .leads()
        .list_leads(req(
            &t,
            ListLeadsRequest {
                filter: "grade = \"WARM\"".into(),
                order_by: "grade_points desc".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .leads;
    assert_eq!(hot_ones.len(), 1);
    assert_eq!(hot_ones[0].name, warm.name);

    // Activating another policy switches the first one off, in the same write.
    let second = s
        .leads()
        .create_lead_grading_policy(req(
            &t,
            CreateLeadGradingPolicyRequest {
                policy: Some(policy("Second", true)),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let active = s
        .leads()
        .list_lead_grading_policies(req(
            &t,
            ListLeadGradingPoliciesRequest {
                filter: "active = true".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .policies;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].name, second.name);

    // Idempotent capture: the same request id gives the same lead, once.
    let rid = Uuid::now_v7().to_string();
    let mut names = Vec::new();
    for _ in 0..2 {
        let l = s
            .leads()
            .create_lead(req(
                &t,
                CreateLeadRequest {
                    lead: Some(lead("web_form", "DE", 5)),
                    request_id: rid.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        names.push(l.name);
    }
    assert_eq!(names[0], names[1]);
}

async fn bad_leads_and_policies_are_refused_by_field(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);

    let e = expect_code(
        create(
            &s,
            &t,
            Lead {
                phones: vec![Phone {
                    number: "++49".into(),
                    ..Default::default()
                }],
                emails: vec![Email {
                    address: "not an address".into(),
                    ..Default::default()
                }],
                employee_count: -1,
                status: 99,
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    let fields = violated_fields(&e);
    assert!(fields.contains(&"lead.status".to_string()), "{fields:?}");
    let e = expect_code(
        create(
            &s,
            &t,
            Lead {
                phones: vec![Phone {
                    number: "++49".into(),
                    ..Default::default()
                }],
                emails: vec![Email {
                    address: "not an address".into(),
                    ..Default::default()
                }],
                employee_count: -1,
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    let fields = violated_fields(&e);
    for f in [
        "lead.display_name",
        "lead.phones[0].number",
        "lead.emails[0].address",
        "lead.employee_count",
    ] {
        assert!(fields.contains(&f.to_string()), "{f} not in {fields:?}");
    }

    // Policies: reversed thresholds, an empty value list, a duplicate rule id, a rule
    // without a condition.
    let mut bad = policy("Bad", true);
    bad.thresholds = Some(GradeThresholds {
        hot: 10,
        warm: 40,
        cold: 5,
    });
    bad.rules.push(rule("show", C::Industry(values(&[])), 5));
    let e = expect_code(
        s.leads()
            .create_lead_grading_policy(req(
                &t,
                CreateLeadGradingPolicyRequest {
                    policy: Some(bad),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    let fields = violated_fields(&e);
    for f in [
        "policy.thresholds.hot",
        "policy.rules[4].id",
        "policy.rules[4].when.values",
    ] {
        assert!(
            fields.iter().any(|x| x.starts_with(f)),
            "{f} not in {fields:?}"
        );
    }
    let mut missing = policy("Missing", false);
    missing.rules[0].when = None;
    let e = expect_code(
        s.leads()
            .create_lead_grading_policy(req(
                &t,
                CreateLeadGradingPolicyRequest {
                    policy: Some(missing),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["policy.rules[0].when"]);
    // Nothing was written by the refused calls.
    assert_eq!(s.count("leads", "acme").await, 0);
    assert_eq!(s.count("lead_grading_policies", "acme").await, 0);
}

async fn leads_are_tenant_scoped_and_permission_checked(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("globex").await;
    let a = s.token("acme", Uuid::now_v7(), &["admin"]);
    let g = s.token("globex", Uuid::now_v7(), &["admin"]);
    let l = create(&s, &a, lead("web_form", "DE", 5)).await.unwrap();

    expect_code(
        s.leads()
            .get_lead(req(
                &g,
                GetLeadRequest {
                    name: l.name.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.leads()
            .update_lead(req(
                &g,
                UpdateLeadRequest {
                    lead: Some(Lead {
                        name: l.name.clone(),
                        notes: "hack".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["notes"]),
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.leads()
            .delete_lead(req(
                &g,
                DeleteLeadRequest {
                    name: l.name.clone(),
                    etag: String::new(),
                },
            ))
            .await,
        Code::NotFound,
    );
    let listed = s
        .leads()
        .list_leads(req(&g, ListLeadsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .leads;
    assert!(listed.is_empty());

    // A role with leads of its own only: sees its own, not the admin's; no grading
    // policies at all.
    use Action::*;
    s.access()
        .create_role(req(
            &a,
            CreateRoleRequest {
                role_id: "rep".into(),
                role: Some(Role {
                    display_name: "Rep".into(),
                    grants: vec![Grant {
                        collection: "leads".into(),
                        actions: [Read, Create, Update].iter().map(|x| *x as i32).collect(),
                        scope: Scope::Own as i32,
                    }],
                    field_rules: vec![FieldRule {
                        collection: "leads".into(),
                        field: "notes".into(),
                        access: FieldAccess::Hidden as i32,
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let rep = s.token("acme", Uuid::now_v7(), &["rep"]);
    let own = create(&s, &rep, lead("web_form", "DE", 5)).await.unwrap();
    // Inside the tenant, a record out of scope is PERMISSION_DENIED OUT_OF_SCOPE (another
    // tenant's is NOT_FOUND, above).
    let e = expect_code(
        s.leads()
            .get_lead(req(
                &rep,
                GetLeadRequest {
                    name: l.name.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(crm_tests::reason(&e), "OUT_OF_SCOPE");
    let mine = s
        .leads()
        .list_leads(req(&rep, ListLeadsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .leads;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].name, own.name);
    // A field the role hides is withheld, named, and not filterable.
    assert!(mine[0].notes.is_empty());
    assert!(mine[0].hidden_fields.contains(&"notes".to_string()));
    let e = s
        .leads()
        .list_leads(req(
            &rep,
            ListLeadsRequest {
                filter: "notes = \"x\"".into(),
                ..Default::default()
            },
        ))
        .await;
    assert!(e.is_err(), "filtering on a hidden field is refused");
    let e = expect_code(
        s.leads()
            .update_lead(req(
                &rep,
                UpdateLeadRequest {
                    lead: Some(Lead {
                        name: own.name.clone(),
                        notes: "x".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["notes"]),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(crm_tests::reason(&e), "FIELD_NOT_WRITABLE");
    expect_code(
        s.leads()
            .delete_lead(req(
                &rep,
                DeleteLeadRequest {
                    name: own.name.clone(),
                    etag: String::new(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        s.leads()
            .create_lead_grading_policy(req(
                &rep,
                CreateLeadGradingPolicyRequest {
                    policy: Some(policy("Mine", true)),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    // Leads are graded by the active policy whatever the caller may read of policies.
    s.leads()
        .create_lead_grading_policy(req(
            &a,
            CreateLeadGradingPolicyRequest {
                policy: Some(policy("Default", true)),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let graded = create(&s, &rep, lead("trade_show", "DE", 800))
        .await
        .unwrap();
    assert_eq!(graded.grade, LeadGrade::Hot as i32);
}

async fn user(s: &TestServer, t: &str, n: &str, capacity: i64, active: bool) -> String {
    s.directory()
        .create_user(req(
            t,
            CreateUserRequest {
                user: Some(User {
                    display_name: n.into(),
                    email: format!("{n}@acme.example"),
                    capacity,
                    active,
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

fn target(user: &str) -> AssignmentTarget {
    AssignmentTarget {
        user: user.into(),
        weight: 1,
        regional_manager: false,
    }
}

async fn rule_set(
    s: &TestServer,
    t: &str,
    rules: Vec<AssignmentRule>,
    fallback: &str,
) -> AssignmentRuleSet {
    s.leads()
        .create_assignment_rule_set(req(
            t,
            CreateAssignmentRuleSetRequest {
                rule_set: Some(AssignmentRuleSet {
                    display_name: "Routing".into(),
                    active: true,
                    rules,
                    fallback: fallback.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn leads_are_routed_by_the_active_rule_set(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let anna = user(&s, &t, "anna", 3, true).await;
    let ben = user(&s, &t, "ben", 0, true).await;
    let gone = user(&s, &t, "gone", 0, false).await;
    let queue = user(&s, &t, "queue", 0, true).await;
    let set = rule_set(
        &s,
        &t,
        vec![AssignmentRule {
            id: "dach".into(),
            regions: vec!["DE".into(), "AT".into()],
            targets: vec![target(&anna), target(&gone), target(&ben)],
            strategy: AssignmentStrategy::RoundRobin as i32,
            ..Default::default()
        }],
        &queue,
    )
    .await;
    assert_eq!(set.version, 1);

    // Where the next DACH lead would go, without a round-robin step.
    let dry = s
        .leads()
        .dry_run_assignment(req(
            &t,
            DryRunAssignmentRequest {
                lead: Some(lead("web_form", "DE", 5)),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.via, AssignmentVia::Rule as i32);
    let first_owner = dry.owner.clone();

    // In turn, skipping the deactivated user; anna holds at most 3 open leads.
    let mut owners = Vec::new();
    for _ in 0..6 {
        let l = create(&s, &t, lead("web_form", "DE", 5)).await.unwrap();
        let a = l.assignment.clone().unwrap();
        assert_eq!(a.owner, l.owner);
        assert_eq!(a.rule_set, set.name);
        owners.push((l.owner.clone(), a.via, a.rule));
    }
    assert_eq!(
        owners[0].0, first_owner,
        "the dry run did not move the rotation"
    );
    let by = |u: &str| owners.iter().filter(|o| o.0 == u).count();
    assert_eq!(by(&anna), 3, "{owners:?}");
    assert_eq!(by(&ben), 3, "{owners:?}");
    assert_eq!(by(&gone), 0);
    assert!(
        owners
            .iter()
            .all(|o| o.1 == AssignmentVia::Rule as i32 && o.2 == "dach")
    );
    // anna is full now: the next ones go to ben.
    let l = create(&s, &t, lead("web_form", "AT", 5)).await.unwrap();
    assert_eq!(l.owner, ben);
    let a = l.assignment.unwrap();
    let anna_note = a.tried[0]
        .candidates
        .iter()
        .find(|c| c.user == anna)
        .unwrap();
    assert_eq!(anna_note.outcome, "OVER_CAPACITY");
    let gone_note = a.tried[0]
        .candidates
        .iter()
        .find(|c| c.user == gone)
        .unwrap();
    assert_eq!(gone_note.outcome, "INACTIVE");

    // No rule matches: the fallback user. An owner named by the caller: manual.
    let fr = create(&s, &t, lead("web_form", "FR", 5)).await.unwrap();
    assert_eq!(fr.owner, queue);
    assert_eq!(fr.assignment.unwrap().via, AssignmentVia::Fallback as i32);
    let mut named = lead("web_form", "DE", 5);
    named.owner = ben.clone();
    let named = create(&s, &t, named).await.unwrap();
    assert_eq!(named.owner, ben);
    assert_eq!(named.assignment.unwrap().via, AssignmentVia::Manual as i32);

    // Reassignment by hand is recorded as manual, with the audit trail of the owner.
    let moved = s
        .leads()
        .update_lead(req(
            &t,
            UpdateLeadRequest {
                lead: Some(Lead {
                    name: fr.name.clone(),
                    owner: anna.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["owner"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.owner, anna);
    assert_eq!(moved.assignment.unwrap().via, AssignmentVia::Manual as i32);
}

async fn routing_under_concurrent_creates_is_exact(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let a = user(&s, &t, "a", 0, true).await;
    let b = user(&s, &t, "b", 0, true).await;
    let c = user(&s, &t, "c", 5, true).await;
    let q = user(&s, &t, "q", 0, true).await;
    rule_set(
        &s,
        &t,
        vec![
            AssignmentRule {
                id: "rr".into(),
                regions: vec!["DE".into()],
                targets: vec![target(&a), target(&b)],
                ..Default::default()
            },
            AssignmentRule {
                id: "cap".into(),
                regions: vec!["FR".into()],
                targets: vec![target(&c)],
                strategy: AssignmentStrategy::LeastLoaded as i32,
                ..Default::default()
            },
        ],
        &q,
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s2 = s.leads();
        let t2 = t.clone();
        let region = if i % 2 == 0 { "DE" } else { "FR" };
        let l = lead("web_form", region, 5);
        tasks.push(tokio::spawn(async move {
            let mut s2 = s2;
            s2.create_lead(req(
                &t2,
                CreateLeadRequest {
                    lead: Some(l),
                    request_id: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner().owner)
        }));
    }
    let mut owners = Vec::new();
    for task in tasks {
        owners.push(task.await.unwrap().unwrap());
    }
    let by = |u: &str| owners.iter().filter(|o| *o == u).count();
    // 12 DE leads split exactly in turn; 12 FR leads: c takes its capacity of 5, the
    // fallback the rest.
    assert_eq!((by(&a), by(&b)), (6, 6), "{owners:?}");
    assert_eq!((by(&c), by(&q)), (5, 7), "{owners:?}");
}

/// Owners' loads follow their leads: a lead qualified out or deleted frees a place, one
/// brought back by an update takes it again; capacity holds throughout.
async fn loads_follow_status_changes_and_deletes(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let c = user(&s, &t, "c", 1, true).await;
    let q = user(&s, &t, "q", 0, true).await;
    rule_set(
        &s,
        &t,
        vec![AssignmentRule {
            id: "cap".into(),
            targets: vec![target(&c)],
            strategy: AssignmentStrategy::LeastLoaded as i32,
            ..Default::default()
        }],
        &q,
    )
    .await;
    let first = create(&s, &t, lead("web_form", "FR", 5)).await.unwrap();
    assert_eq!(first.owner, c);
    let full = create(&s, &t, lead("web_form", "FR", 5)).await.unwrap();
    assert_eq!(full.owner, q, "c is at capacity");
    // Qualified out: c has room again.
    let mut leads = s.leads();
    let out = leads
        .update_lead(req(
            &t,
            UpdateLeadRequest {
                lead: Some(Lead {
                    status: LeadStatus::Unqualified as i32,
                    ..first.clone()
                }),
                update_mask: mask(&["status"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let second = create(&s, &t, lead("web_form", "FR", 5)).await.unwrap();
    assert_eq!(second.owner, c);
    // Deleted: room again.
    leads
        .delete_lead(req(
            &t,
            DeleteLeadRequest {
                name: second.name.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap();
    let third = create(&s, &t, lead("web_form", "FR", 5)).await.unwrap();
    assert_eq!(third.owner, c);
    // The first lead reopened by hand counts again: c is over (a manual change is the
    // user's), so routing gives c nothing until two of them close.
    leads
        .update_lead(req(
            &t,
            UpdateLeadRequest {
                lead: Some(Lead {
                    status: LeadStatus::Working as i32,
                    ..out
                }),
                update_mask: mask(&["status"]),
            },
        ))
        .await
        .unwrap();
    let fourth = create(&s, &t, lead("web_form", "FR", 5)).await.unwrap();
    assert_eq!(fourth.owner, q);
}

fn eur(units: i64, code: &str) -> crm_api::google::r#type::Money {
    crm_api::google::r#type::Money {
        currency_code: code.into(),
        units,
        nanos: 0,
    }
}

/// Big deals go to the key-account rep: the lead's expected value in the rule's currency
/// (another currency or no value does not match); bounds in two currencies are refused.
async fn deal_size_routes_big_leads(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let k = user(&s, &t, "k", 0, true).await;
    let q = user(&s, &t, "q", 0, true).await;
    let set = rule_set(
        &s,
        &t,
        vec![AssignmentRule {
            id: "big".into(),
            targets: vec![target(&k)],
            deal_size: Some(DealSizeRange {
                min: Some(eur(100_000, "EUR")),
                max: None,
            }),
            ..Default::default()
        }],
        &q,
    )
    .await;
    assert_eq!(
        set.rules[0].deal_size.as_ref().and_then(|d| d.min.clone()),
        Some(eur(100_000, "EUR"))
    );
    let valued = |v: Option<crm_api::google::r#type::Money>| Lead {
        expected_value: v,
        ..lead("web_form", "DE", 5)
    };
    let big = create(&s, &t, valued(Some(eur(250_000, "EUR"))))
        .await
        .unwrap();
    assert_eq!(big.owner, k);
    assert_eq!(big.expected_value, Some(eur(250_000, "EUR")));
    let small = create(&s, &t, valued(Some(eur(5_000, "EUR"))))
        .await
        .unwrap();
    assert_eq!(small.owner, q);
    let dollars = create(&s, &t, valued(Some(eur(250_000, "USD"))))
        .await
        .unwrap();
    assert_eq!(dollars.owner, q, "another currency is not compared");
    let unknown = create(&s, &t, valued(None)).await.unwrap();
    assert_eq!(unknown.owner, q);
    // A value in a currency that does not exist is refused on its field.
    let e = expect_code(
        create(&s, &t, valued(Some(eur(1, "XXY")))).await,
        Code::InvalidArgument,
    );
    assert!(
        violated_fields(&e)
            .iter()
            .any(|f| f.starts_with("lead.expected_value")),
        "{e:?}"
    );
    // Bounds in two currencies.
    let e = expect_code(
        s.leads()
            .create_assignment_rule_set(req(
                &t,
                CreateAssignmentRuleSetRequest {
                    rule_set: Some(AssignmentRuleSet {
                        display_name: "mixed".into(),
                        fallback: q.clone(),
                        rules: vec![AssignmentRule {
                            id: "mixed".into(),
                            targets: vec![target(&k)],
                            deal_size: Some(DealSizeRange {
                                min: Some(eur(1, "EUR")),
                                max: Some(eur(2, "USD")),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&e),
        ["rule_set.rules[0].deal_size.max.currency_code"]
    );
}

async fn bad_rule_sets_are_refused_by_field(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let a = user(&s, &t, "a", 0, true).await;
    let stranger = format!("users/{}", Uuid::now_v7());
    let create_set = |set: AssignmentRuleSet| {
        let mut c = s.leads();
        let t = t.clone();
        async move {
            c.create_assignment_rule_set(req(
                &t,
                CreateAssignmentRuleSetRequest {
                    rule_set: Some(set),
                    request_id: String::new(),
                },
            ))
            .await
        }
    };
    // No fallback, a target that does not exist, a rule without targets, duplicate ids.
    let e = expect_code(
        create_set(AssignmentRuleSet {
            display_name: "x".into(),
            rules: vec![
                AssignmentRule {
                    id: "r".into(),
                    targets: vec![target(&a)],
                    ..Default::default()
                },
                AssignmentRule {
                    id: "r".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    let fields = violated_fields(&e);
    assert!(
        fields.contains(&"rule_set.fallback".to_string()),
        "{fields:?}"
    );
    let e = expect_code(
        create_set(AssignmentRuleSet {
            display_name: "x".into(),
            rules: vec![
                AssignmentRule {
                    id: "r".into(),
                    targets: vec![target(&a)],
                    ..Default::default()
                },
                AssignmentRule {
                    id: "r".into(),
                    ..Default::default()
                },
            ],
            fallback: a.clone(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    let fields = violated_fields(&e);
    assert!(
        fields.iter().any(|f| f.starts_with("rule_set.rules[1].id")),
        "{fields:?}"
    );
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("rule_set.rules[1].targets")),
        "{fields:?}"
    );
    let e = expect_code(
        create_set(AssignmentRuleSet {
            display_name: "x".into(),
            rules: vec![AssignmentRule {
                id: "r".into(),
                targets: vec![target(&stranger)],
                ..Default::default()
            }],
            fallback: a.clone(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(
        violated_fields(&e)
            .iter()
            .any(|f| f.starts_with("rule_set.rules[0].targets[0]")),
        "{e:?}"
    );
    // Without an active rule set a dry run says so.
    expect_code(
        s.leads()
            .dry_run_assignment(req(
                &t,
                DryRunAssignmentRequest {
                    lead: Some(lead("web_form", "DE", 5)),
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(s.count("assignment_rule_sets", "acme").await, 0);
}

async fn new_leads_are_matched_against_leads_contacts_and_accounts(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("globex").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let g = s.token("globex", Uuid::now_v7(), &["admin"]);
    // Another tenant's twin is never a candidate.
    create(&s, &g, lead("web_form", "DE", 5)).await.unwrap();

    let contact = s
        .contacts()
        .create_contact(req(
            &t,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: "Anna".into(),
                    family_name: "Schmidt".into(),
                    emails: vec![Email {
                        address: "anna.schmidt@muster.example".into(),
                        ..Default::default()
                    }],
                    phones: vec![Phone {
                        number: "+49 30 1234567".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();

    // The same person, written differently: a match, with the evidence.
    let mut twin = lead("trade_show", "DE", 5);
    twin.given_name = "ANNA".into();
    twin.family_name = "Schmidt ".into();
    let twin = create(&s, &t, twin).await.unwrap();
    let d = twin.duplicates.clone().unwrap();
    assert_eq!(d.status, "MATCH", "{d:?}");
    assert_eq!(d.candidates.len(), 1, "{d:?}");
    assert_eq!(d.candidates[0].record, contact.name);
    let fields: Vec<&str> = d.candidates[0]
        .evidence
        .iter()
        .map(|e| e.field.as_str())
        .collect();
    assert!(
        fields.contains(&"email") && fields.contains(&"phone"),
        "{fields:?}"
    );

    // Someone else entirely: no candidates.
    let other = create(
        &s,
        &t,
        Lead {
            given_name: "Kenji".into(),
            family_name: "Watanabe".into(),
            emails: vec![Email {
                address: "kenji@example.jp".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(other.duplicates.unwrap().status, "NONE");

    // FindLeadDuplicates: the contact and the first lead, not the lead itself.
    let found = s
        .leads()
        .find_lead_duplicates(req(
            &t,
            FindLeadDuplicatesRequest {
                name: twin.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let records: Vec<&str> = found.candidates.iter().map(|c| c.record.as_str()).collect();
    assert!(records.contains(&contact.name.as_str()), "{records:?}");
    assert!(!records.contains(&twin.name.as_str()));

    // A policy that blocks web-form duplicates: refused, naming what it matches; other
    // sources are still flagged.
    s.leads()
        .create_lead_duplicate_policy(req(
            &t,
            CreateLeadDuplicatePolicyRequest {
                policy: Some(LeadDuplicatePolicy {
                    display_name: "Strict web".into(),
                    active: true,
                    on_match: "flag".into(),
                    on_match_by_source: [("web_form".to_string(), "BLOCK".to_string())].into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let before = s.count("leads", "acme").await;
    let e = expect_code(
        create(&s, &t, lead("web_form", "DE", 5)).await,
        Code::AlreadyExists,
    );
    assert!(e.message().contains(&contact.name), "{}", e.message());
    assert_eq!(s.count("leads", "acme").await, before, "nothing written");
    let flagged = create(&s, &t, lead("referral", "DE", 5)).await.unwrap();
    assert_eq!(flagged.duplicates.unwrap().status, "MATCH");

    // Keys follow deletes: once the contact and the leads are gone, nothing matches.
    s.contacts()
        .delete_contact(req(
            &t,
            DeleteContactRequest {
                name: contact.name.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap();
    for name in [twin.name.clone(), flagged.name.clone()] {
        s.leads()
            .delete_lead(req(
                &t,
                DeleteLeadRequest {
                    name,
                    etag: String::new(),
                },
            ))
            .await
            .unwrap();
    }
    let alone = create(&s, &t, lead("web_form", "DE", 5)).await.unwrap();
    assert_eq!(alone.duplicates.unwrap().status, "NONE");

    // Bad policies are refused by field.
    let e = expect_code(
        s.leads()
            .create_lead_duplicate_policy(req(
                &t,
                CreateLeadDuplicatePolicyRequest {
                    policy: Some(LeadDuplicatePolicy {
                        display_name: "Bad".into(),
                        on_match: "SHRUG".into(),
                        match_at: 1.5,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    let fields = violated_fields(&e);
    assert!(
        fields.contains(&"policy.on_match".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"policy.match_at".to_string()),
        "{fields:?}"
    );
}

async fn leads_convert_in_one_transaction(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let mut l = lead("trade_show", "DE", 40);
    l.title = "Buyer".into();
    let l = create(&s, &t, l).await.unwrap();

    // CONVERTED is not a status a caller sets.
    let e = expect_code(
        s.leads()
            .update_lead(req(
                &t,
                UpdateLeadRequest {
                    lead: Some(Lead {
                        name: l.name.clone(),
                        status: LeadStatus::Converted as i32,
                        ..Default::default()
                    }),
                    update_mask: mask(&["status"]),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["lead.status"]);

    // A role that may work leads but not create accounts or contacts: nothing is written.
    s.access()
        .create_role(req(
            &t,
            CreateRoleRequest {
                role_id: "leads-only".into(),
                role: Some(Role {
                    display_name: "Leads only".into(),
                    grants: vec![Grant {
                        collection: "leads".into(),
                        actions: [Action::Read, Action::Create, Action::Update]
                            .iter()
                            .map(|x| *x as i32)
                            .collect(),
                        scope: Scope::All as i32,
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let limited = s.token("acme", Uuid::now_v7(), &["leads-only"]);
    let (accounts, contacts, audits) = (
        s.count("accounts", "acme").await,
        s.count("contacts", "acme").await,
        s.count("audit_records", "acme").await,
    );
    expect_code(
        s.leads()
            .convert_lead(req(
                &limited,
                ConvertLeadRequest {
                    name: l.name.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(s.count("accounts", "acme").await, accounts);
    assert_eq!(s.count("contacts", "acme").await, contacts);
    assert_eq!(s.count("audit_records", "acme").await, audits);

    // The admin converts: account from the company, contact from the person, the position.
    let c = s
        .leads()
        .convert_lead(req(
            &t,
            ConvertLeadRequest {
                name: l.name.clone(),
                etag: l.etag.clone(),
                open_opportunity: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let opp = c.opportunity.clone().unwrap();
    let (lead_after, account, contact) = (c.lead.unwrap(), c.account.unwrap(), c.contact.unwrap());
    assert_eq!(opp.display_name, "Muster GmbH (from lead)");
    assert_eq!(opp.account, account.name);
    assert_eq!(opp.contact, contact.name);
    assert_eq!(opp.lead, l.name);
    assert_eq!(opp.stage, OpportunityStage::Prospecting as i32);
    // The opportunity is a resource of its own: amounts exact, currencies checked.
    let priced = s
        .opportunities()
        .update_opportunity(req(
            &t,
            UpdateOpportunityRequest {
                opportunity: Some(Opportunity {
                    name: opp.name.clone(),
                    amount: Some(crm_api::google::r#type::Money {
                        currency_code: "EUR".into(),
                        units: 12_500,
                        nanos: 990_000_000,
                    }),
                    stage: OpportunityStage::Proposal as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["amount", "stage"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let m = priced.amount.unwrap();
    assert_eq!(
        (m.currency_code.as_str(), m.units, m.nanos),
        ("EUR", 12_500, 990_000_000)
    );
    let e = expect_code(
        s.opportunities()
            .create_opportunity(req(
                &t,
                CreateOpportunityRequest {
                    opportunity: Some(Opportunity {
                        display_name: "x".into(),
                        amount: Some(crm_api::google::r#type::Money {
                            currency_code: "XYZ".into(),
                            units: 1,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        violated_fields(&e)
            .iter()
            .any(|f| f.starts_with("opportunity.")),
        "{e:?}"
    );
    assert_eq!(lead_after.status, LeadStatus::Converted as i32);
    assert_eq!(lead_after.converted_account, account.name);
    assert_eq!(lead_after.converted_contact, contact.name);
    assert!(lead_after.convert_time.is_some());
    assert_eq!(account.display_name, "Muster GmbH");
    assert_eq!(account.employee_count, 40);
    assert_eq!(contact.display_name, "Anna Schmidt");
    assert_eq!(contact.emails[0].address, "anna.schmidt@muster.example");
    let positions = s
        .contacts()
        .list_positions(req(
            &t,
            ListPositionsRequest {
                parent: contact.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .positions;
    assert_eq!(positions.len(), 1);
    assert_eq!(positions[0].account, account.name);
    assert_eq!(positions[0].title, "Buyer");

    // Once: converting again, or moving the lead out of CONVERTED, is refused.
    let e = expect_code(
        s.leads()
            .convert_lead(req(
                &t,
                ConvertLeadRequest {
                    name: l.name.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(crm_tests::reason(&e), "LEAD_CONVERTED");
    expect_code(
        s.leads()
            .update_lead(req(
                &t,
                UpdateLeadRequest {
                    lead: Some(Lead {
                        name: l.name.clone(),
                        status: LeadStatus::Working as i32,
                        ..Default::default()
                    }),
                    update_mask: mask(&["status"]),
                },
            ))
            .await,
        Code::FailedPrecondition,
    );

    // Into an existing contact (the duplicate found on capture): no second contact.
    let twin = create(&s, &t, lead("web_form", "DE", 0)).await.unwrap();
    assert_eq!(twin.duplicates.clone().unwrap().status, "MATCH");
    let before = s.count("contacts", "acme").await;
    let c = s
        .leads()
        .convert_lead(req(
            &t,
            ConvertLeadRequest {
                name: twin.name.clone(),
                contact: contact.name.clone(),
                account: account.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.contact.unwrap().name, contact.name);
    assert_eq!(s.count("contacts", "acme").await, before);
}

async fn untouched_routed_leads_are_escalated_to_the_managers(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let boss = user(&s, &t, "boss", 0, true).await;
    let rep = s
        .directory()
        .create_user(req(
            &t,
            CreateUserRequest {
                user: Some(User {
                    display_name: "rep".into(),
                    email: "rep@acme.example".into(),
                    manager: boss.clone(),
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
    let mut set = AssignmentRuleSet {
        display_name: "Routing".into(),
        active: true,
        rules: vec![AssignmentRule {
            id: "all".into(),
            targets: vec![target(&rep)],
            ..Default::default()
        }],
        fallback: boss.clone(),
        escalate_after_seconds: 4,
        ..Default::default()
    };
    let created = s
        .leads()
        .create_assignment_rule_set(req(
            &t,
            CreateAssignmentRuleSetRequest {
                rule_set: Some(set.clone()),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.escalate_after_seconds, 4);
    let idle = create(&s, &t, lead("web_form", "DE", 5)).await.unwrap();
    let worked = create(&s, &t, lead("web_form", "FR", 5)).await.unwrap();
    assert_eq!(idle.owner, rep);
    s.leads()
        .update_lead(req(
            &t,
            UpdateLeadRequest {
                lead: Some(Lead {
                    name: worked.name.clone(),
                    status: LeadStatus::Working as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["status"]),
            },
        ))
        .await
        .unwrap();
    // The timer fires about four seconds later (runner poll: 1 s); the worked lead was
    // moved on well before.
    let mut escalated = None;
    for _ in 0..120 {
        let l = s
            .leads()
            .get_lead(req(
                &t,
                GetLeadRequest {
                    name: idle.name.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        if !l.escalated_to.is_empty() {
            escalated = Some(l);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let l = escalated.expect("the idle lead was escalated");
    assert_eq!(l.escalated_to, boss);
    assert!(l.escalate_time.is_some());
    assert_eq!(l.owner, rep, "escalation does not move the lead");
    let w = s
        .leads()
        .get_lead(req(
            &t,
            GetLeadRequest {
                name: worked.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        w.escalated_to.is_empty(),
        "a lead worked on is not escalated"
    );
    // Out of range settings are refused by field.
    set.escalate_after_seconds = -1;
    let e = expect_code(
        s.leads()
            .create_assignment_rule_set(req(
                &t,
                CreateAssignmentRuleSetRequest {
                    rule_set: Some(set),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["rule_set.escalate_after_seconds"]);
}

async fn activities_follow_leads_up_with_reminders(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("globex").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let g = s.token("globex", Uuid::now_v7(), &["admin"]);
    let l = create(&s, &t, lead("web_form", "DE", 5)).await.unwrap();
    assert_eq!(l.status, LeadStatus::New as i32);
    let due = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    let a = s
        .activities()
        .create_activity(req(
            &t,
            CreateActivityRequest {
                activity: Some(Activity {
                    kind: ActivityKind::Call as i32,
                    subject: "First call".into(),
                    lead: l.name.clone(),
                    due_time: Some(due.into()),
                    remind_before_seconds: 1,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, ActivityStatus::Open as i32);
    assert!(a.reminded_time.is_none());
    // Following a NEW lead up puts it to WORKING.
    let now = s
        .leads()
        .get_lead(req(
            &t,
            GetLeadRequest {
                name: l.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.status, LeadStatus::Working as i32);
    // The reminder fires about a second before the due time.
    let mut reminded = None;
    for _ in 0..120 {
        let x = s
            .activities()
            .get_activity(req(
                &t,
                GetActivityRequest {
                    name: a.name.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        if x.reminded_time.is_some() {
            reminded = Some(x);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let x = reminded.expect("the reminder fired");
    // Done, with its outcome and time.
    let done = s
        .activities()
        .update_activity(req(
            &t,
            UpdateActivityRequest {
                activity: Some(Activity {
                    name: x.name.clone(),
                    status: ActivityStatus::Done as i32,
                    outcome: "Reached; wants a quote".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["status", "outcome"]),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(done.done_time.is_some());
    assert_eq!(done.reminded_time, x.reminded_time, "kept");
    // Lists by lead; another tenant's ids are not found; a reminder needs a due time.
    let listed = s
        .activities()
        .list_activities(req(
            &t,
            ListActivitiesRequest {
                filter: format!("lead = \"{}\"", l.name),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .activities;
    assert_eq!(listed.len(), 1);
    expect_code(
        s.activities()
            .get_activity(req(
                &g,
                GetActivityRequest {
                    name: a.name.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );
    let e = expect_code(
        s.activities()
            .create_activity(req(
                &t,
                CreateActivityRequest {
                    activity: Some(Activity {
                        subject: "x".into(),
                        remind_before_seconds: 60,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["activity.due_time"]);
}

/// The trade-show story end to end: business cards captured as leads, matched against the
/// existing customers, graded, routed by industry and region, followed up, reminded,
/// escalated when left alone, and converted.
async fn trade_show_cards_from_capture_to_conversion(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let manager = user(&s, &t, "manager", 0, true).await;
    let mut reps = Vec::new();
    for n in ["rep-de-1", "rep-de-2", "rep-machines"] {
        let r = s
            .directory()
            .create_user(req(
                &t,
                CreateUserRequest {
                    user: Some(User {
                        display_name: n.into(),
                        email: format!("{n}@acme.example"),
                        manager: manager.clone(),
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
        reps.push(r);
    }
    // An existing customer met again at the show.
    let known = s
        .contacts()
        .create_contact(req(
            &t,
            CreateContactRequest {
                contact: Some(Contact {
                    given_name: "Jürgen".into(),
                    family_name: "Weber".into(),
                    emails: vec![Email {
                        address: "j.weber@weber-maschinen.example".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    s.leads()
        .create_lead_grading_policy(req(
            &t,
            CreateLeadGradingPolicyRequest {
                policy: Some(policy("Show", true)),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    s.leads()
        .create_assignment_rule_set(req(
            &t,
            CreateAssignmentRuleSetRequest {
                rule_set: Some(AssignmentRuleSet {
                    display_name: "Show routing".into(),
                    active: true,
                    mode: RuleSetMode::Ordered as i32,
                    rules: vec![
                        AssignmentRule {
                            id: "machines".into(),
                            industries: vec!["Machinery".into()],
                            targets: vec![target(&reps[2])],
                            ..Default::default()
                        },
                        AssignmentRule {
                            id: "de".into(),
                            regions: vec!["DE".into()],
                            targets: vec![target(&reps[0]), target(&reps[1])],
                            ..Default::default()
                        },
                    ],
                    fallback: manager.clone(),
                    escalate_after_seconds: 4,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();

    // The cards.
    let card = |given: &str, family: &str, email: &str, industry: &str, region: &str| Lead {
        given_name: given.into(),
        family_name: family.into(),
        emails: vec![Email {
            address: email.into(),
            ..Default::default()
        }],
        industry: industry.into(),
        region: region.into(),
        source: "trade_show".into(),
        employee_count: 600,
        ..Default::default()
    };
    let weber = create(
        &s,
        &t,
        card(
            "JÜRGEN",
            "Weber",
            "J.Weber@weber-maschinen.example",
            "Machinery",
            "DE",
        ),
    )
    .await
    .unwrap();
    let a = create(
        &s,
        &t,
        card("Lena", "Koch", "lena@koch.example", "Retail", "DE"),
    )
    .await
    .unwrap();
    let b = create(
        &s,
        &t,
        card("Tim", "Berg", "tim@berg.example", "Retail", "DE"),
    )
    .await
    .unwrap();
    let c = create(
        &s,
        &t,
        card("Ana", "Lima", "ana@lima.example", "Retail", "PT"),
    )
    .await
    .unwrap();

    // Matched against the existing customer; graded; routed by industry, then region.
    let d = weber.duplicates.clone().unwrap();
    assert_eq!(d.status, "MATCH");
    assert_eq!(d.candidates[0].record, known.name);
    assert_eq!(
        weber.grade,
        LeadGrade::Hot as i32,
        "show 40 + DE 20 + big 15"
    );
    assert_eq!(weber.owner, reps[2]);
    assert_eq!(
        (a.owner.as_str(), b.owner.as_str()),
        (reps[0].as_str(), reps[1].as_str())
    );
    assert_eq!(c.owner, manager, "no rule for PT: the fallback");
    assert_eq!(c.grade, LeadGrade::Warm as i32);

    // The machines rep calls Weber at once (the lead goes to WORKING); Lena is left alone.
    let rep_token = s.token(
        "acme",
        Uuid::parse_str(reps[2].trim_start_matches("users/")).unwrap(),
        &["admin"],
    );
    s.activities()
        .create_activity(req(
            &rep_token,
            CreateActivityRequest {
                activity: Some(Activity {
                    kind: ActivityKind::Call as i32,
                    subject: "Follow-up from the show".into(),
                    lead: weber.name.clone(),
                    due_time: Some(
                        (std::time::SystemTime::now() + std::time::Duration::from_secs(1)).into(),
                    ),
                    remind_before_seconds: 1,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    // Escalation of the untouched ones, none of the worked one.
    let get = |name: String| {
        let mut c = s.leads();
        let t = t.clone();
        async move {
            c.get_lead(req(&t, GetLeadRequest { name }))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut escalated = false;
    for _ in 0..120 {
        if !get(a.name.clone()).await.escalated_to.is_empty() {
            escalated = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(escalated, "Lena's lead was escalated");
    assert_eq!(get(a.name.clone()).await.escalated_to, manager);
    let w = get(weber.name.clone()).await;
    assert_eq!(w.status, LeadStatus::Working as i32);
    assert!(w.escalated_to.is_empty());

    // Weber converts into the customer already known: no second contact.
    let contacts = s.count("contacts", "acme").await;
    let conv = s
        .leads()
        .convert_lead(req(
            &t,
            ConvertLeadRequest {
                name: weber.name.clone(),
                contact: known.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(conv.contact.unwrap().name, known.name);
    assert_eq!(conv.lead.unwrap().status, LeadStatus::Converted as i32);
    assert_eq!(s.count("contacts", "acme").await, contacts);
}

both!(
    lead_effectiveness_is_exact_and_scoped,
    trade_show_cards_from_capture_to_conversion,
    activities_follow_leads_up_with_reminders,
    untouched_routed_leads_are_escalated_to_the_managers,
    leads_convert_in_one_transaction,
    new_leads_are_matched_against_leads_contacts_and_accounts,
    leads_are_routed_by_the_active_rule_set,
    routing_under_concurrent_creates_is_exact,
    loads_follow_status_changes_and_deletes,
    deal_size_routes_big_leads,
    bad_rule_sets_are_refused_by_field,
    leads_are_captured_normalised_and_graded,
    bad_leads_and_policies_are_refused_by_field,
    leads_are_tenant_scoped_and_permission_checked,
);

/// Lead effectiveness (O5): known leads created, touched, qualified and converted at known
/// times (an engine context on a manual clock) give exact figures per source, owner,
/// campaign and local day; a rep sees only their own leads; bad requests name the field.
async fn lead_effectiveness_is_exact_and_scoped(backend: Backend) {
    use crm_core::clock::ManualClock;
    use crm_operational::activity::{Activity as DActivity, ActivityKind as DKind};
    use crm_operational::lead::{Lead as DLead, LeadStatus as DStatus};
    use std::sync::Arc;

    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let boot = s.token("acme", Uuid::now_v7(), &["admin"]);
    let id_of = |name: String| Uuid::parse_str(name.trim_start_matches("users/")).unwrap();
    let admin = id_of(user(&s, &boot, "boss", 0, true).await);
    let rep = id_of(user(&s, &boot, "rep", 0, true).await);
    let a = s.token("acme", admin, &["admin"]);
    use Action::*;
    for (id, grants, rules) in [
        (
            "rep",
            vec![Grant {
                collection: "leads".into(),
                actions: [Read, Create, Update].iter().map(|x| *x as i32).collect(),
                scope: Scope::Own as i32,
            }],
            vec![],
        ),
        (
            "analyst",
            vec![Grant {
                collection: "leads".into(),
                actions: vec![Read as i32],
                scope: Scope::All as i32,
            }],
            vec![FieldRule {
                collection: "leads".into(),
                field: "campaign".into(),
                access: FieldAccess::Hidden as i32,
            }],
        ),
    ] {
        s.access()
            .create_role(req(
                &a,
                CreateRoleRequest {
                    role_id: id.into(),
                    role: Some(Role {
                        display_name: id.into(),
                        grants,
                        field_rules: rules,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap();
    }
    let r = s.token("acme", rep, &["rep"]);
    let analyst = s.token("acme", Uuid::now_v7(), &["analyst"]);

    // The admin works on a manual clock.
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let clock = ManualClock::new(at("2026-03-02T09:00:00Z"));
    let mut ctx = s.ctx_for_roles("acme", admin, &["admin"]).await;
    ctx.clock = Arc::new(clock.clone());
    let new_lead = |name: &str, source: &str, campaign: &str, owner: Uuid, status: DStatus| DLead {
        display_name: name.into(),
        source: source.into(),
        campaign: campaign.into(),
        owner: Some(owner),
        status,
        ..Default::default()
    };
    let call = |lead: Uuid| DActivity {
        kind: DKind::Call,
        subject: "Call".into(),
        lead: Some(lead),
        ..Default::default()
    };
    let set_status = |id: Uuid, status: DStatus| {
        let ctx = &ctx;
        async move {
            let l = ctx.get::<DLead>(id).await.unwrap();
            ctx.update(
                id,
                DLead {
                    status,
                    ..Default::default()
                },
                &["status".to_owned()],
                &l.meta.etag(),
            )
            .await
            .unwrap()
        }
    };
    let h = chrono::Duration::hours;
    let m = chrono::Duration::minutes;

    // Outside the range, and deleted: never counted.
    clock.set(at("2026-02-27T12:00:00Z"));
    ctx.create(new_lead("Old", "web", "", admin, DStatus::New), "")
        .await
        .unwrap();
    clock.set(at("2026-03-02T08:00:00Z"));
    let gone = ctx
        .create(new_lead("Gone", "web", "", admin, DStatus::New), "")
        .await
        .unwrap();
    ctx.delete::<DLead>(gone.meta.id, "").await.unwrap();

    // A: web, spring, the admin's; called after 1 h, qualified, converted the next day.
    clock.set(at("2026-03-02T09:00:00Z"));
    let la = ctx
        .create(new_lead("A", "web", "spring", admin, DStatus::New), "")
        .await
        .unwrap();
    // B: web, the rep's; called after 3 h. C: web, the rep's; untouched.
    clock.set(at("2026-03-02T09:10:00Z"));
    let lb = ctx
        .create(new_lead("B", "web", "", rep, DStatus::New), "")
        .await
        .unwrap();
    clock.set(at("2026-03-02T09:20:00Z"));
    ctx.create(new_lead("C", "web", "", rep, DStatus::New), "")
        .await
        .unwrap();
    clock.set(at("2026-03-02T10:00:00Z"));
    ctx.create(call(la.meta.id), "").await.unwrap();
    clock.set(at("2026-03-02T11:00:00Z"));
    set_status(la.meta.id, DStatus::Qualified).await;
    clock.set(at("2026-03-02T12:10:00Z"));
    ctx.create(call(lb.meta.id), "").await.unwrap();
    // A second activity is not a new first touch.
    clock.advance(h(1));
    ctx.create(call(lb.meta.id), "").await.unwrap();
    clock.set(at("2026-03-03T09:00:00Z"));
    let conv = crm_operational::lead::convert(&ctx, la.meta.id, "", None, None, None)
        .await
        .unwrap();
    assert_eq!(conv.lead.data.status, DStatus::Converted);
    // D: show, spring, the admin's; disqualified after 30 min (no activity).
    clock.set(at("2026-03-03T10:00:00Z"));
    let ld = ctx
        .create(new_lead("D", "show", "spring", admin, DStatus::New), "")
        .await
        .unwrap();
    clock.advance(m(30));
    set_status(ld.meta.id, DStatus::Unqualified).await;
    // E: show, spring, the rep's; qualified after 5 h.
    clock.set(at("2026-03-03T11:00:00Z"));
    let le = ctx
        .create(new_lead("E", "show", "spring", rep, DStatus::New), "")
        .await
        .unwrap();
    clock.advance(h(5));
    set_status(le.meta.id, DStatus::Qualified).await;
    // F: show, the rep's; captured as WORKING (contacted, no time), at 22:00 in New York on
    // March 3rd but March 4th in UTC.
    clock.set(at("2026-03-04T03:00:00Z"));
    ctx.create(new_lead("F", "show", "", rep, DStatus::Working), "")
        .await
        .unwrap();

    // The first touch is on the lead.
    let got = s
        .leads()
        .get_lead(req(
            &a,
            GetLeadRequest {
                name: format!("leads/{}", lb.meta.id),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.first_touch_time.map(|t| t.seconds),
        Some(at("2026-03-02T12:10:00Z").timestamp())
    );

    let ts = |t: &str| {
        let t = at(t);
        Some(prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: 0,
        })
    };
    let march = GetLeadEffectivenessRequest {
        start_time: ts("2026-03-01T00:00:00Z"),
        end_time: ts("2026-04-01T00:00:00Z"),
        ..Default::default()
    };
    let report = |token: &str, q: GetLeadEffectivenessRequest| {
        let s = &s;
        let token = token.to_owned();
        async move {
            s.leads()
                .get_lead_effectiveness(req(&token, q))
                .await
                .map(|r| r.into_inner())
        }
    };
    let secs = |d: &Option<prost_types::Duration>| d.as_ref().map(|d| d.seconds);
    // (group, created, contacted, timed, qualified, converted, median s, p90 s)
    type Figures = (String, i64, i64, i64, i64, i64, Option<i64>, Option<i64>);
    let figures = |r: &LeadEffectivenessRow| -> Figures {
        assert_eq!(
            r.median_time_to_first_touch.as_ref().map_or(0, |d| d.nanos),
            0
        );
        (
            r.group.clone(),
            r.created,
            r.contacted,
            r.timed,
            r.qualified,
            r.converted,
            secs(&r.median_time_to_first_touch),
            secs(&r.p90_time_to_first_touch),
        )
    };
    let f = |g: &str, c, ct, t, q, cv, md: Option<i64>, p9: Option<i64>| -> Figures {
        (g.to_owned(), c, ct, t, q, cv, md, p9)
    };

    // By source (the default): show = D, E, F; web = A, B, C.
    let by_source = report(&a, march.clone()).await.unwrap();
    assert_eq!(by_source.group_by, LeadEffectivenessGrouping::Source as i32);
    assert_eq!(by_source.time_zone, "UTC");
    let rows: Vec<Figures> = by_source.rows.iter().map(figures).collect();
    assert_eq!(
        rows,
        [
            // 30 min and 5 h: median 2 h 45 min, p90 30 min + 0.9 * 4 h 30 min.
            f("show", 3, 3, 2, 1, 0, Some(9_900), Some(16_380)),
            // 1 h and 3 h.
            f("web", 3, 2, 2, 1, 1, Some(7_200), Some(10_080)),
        ]
    );
    let total = by_source.total.clone().unwrap();
    // 30 min, 1 h, 3 h, 5 h: median 2 h; p90 at rank 2.7: 3 h + 0.7 * 2 h.
    assert_eq!(
        figures(&total),
        f("", 6, 5, 4, 2, 1, Some(7_200), Some(15_840))
    );
    assert!((total.contact_rate - 5.0 / 6.0).abs() < 1e-12);
    assert!((total.qualification_rate - 2.0 / 6.0).abs() < 1e-12);
    assert!((total.conversion_rate - 1.0 / 6.0).abs() < 1e-12);
    assert!((by_source.rows[1].conversion_rate - 1.0 / 3.0).abs() < 1e-12);

    // By owner.
    let by_owner = report(
        &a,
        GetLeadEffectivenessRequest {
            group_by: LeadEffectivenessGrouping::Owner as i32,
            ..march.clone()
        },
    )
    .await
    .unwrap();
    let mut rows: Vec<Figures> = by_owner.rows.iter().map(figures).collect();
    rows.sort();
    let mut want = vec![
        f(
            &format!("users/{admin}"),
            2,
            2,
            2,
            1,
            1,
            Some(2_700),
            Some(3_420),
        ),
        f(
            &format!("users/{rep}"),
            4,
            3,
            2,
            1,
            0,
            Some(14_400),
            Some(17_280),
        ),
    ];
    want.sort();
    assert_eq!(rows, want);

    // By local day in New York, the days the range touches, empty ones included.
    let by_day = report(
        &a,
        GetLeadEffectivenessRequest {
            start_time: ts("2026-03-02T05:00:00Z"),
            end_time: ts("2026-03-05T05:00:00Z"),
            group_by: LeadEffectivenessGrouping::Period as i32,
            granularity: LeadEffectivenessGranularity::Day as i32,
            time_zone: "America/New_York".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(by_day.time_zone, "America/New_York");
    assert_eq!(by_day.granularity, LeadEffectivenessGranularity::Day as i32);
    let rows: Vec<Figures> = by_day.rows.iter().map(figures).collect();
    assert_eq!(
        rows,
        [
            f("2026-03-02", 3, 2, 2, 1, 1, Some(7_200), Some(10_080)),
            f("2026-03-03", 3, 3, 2, 1, 0, Some(9_900), Some(16_380)),
            f("2026-03-04", 0, 0, 0, 0, 0, None, None),
        ]
    );
    assert_eq!(
        by_day.rows[0].period_start_time.as_ref().map(|t| t.seconds),
        Some(at("2026-03-02T05:00:00Z").timestamp())
    );
    assert_eq!(by_day.rows[2].contact_rate, 0.0);

    // Filters: web leads by owner; the rep's leads by campaign.
    let web = report(
        &a,
        GetLeadEffectivenessRequest {
            group_by: LeadEffectivenessGrouping::Owner as i32,
            source: Some("web".into()),
            ..march.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(web.total.unwrap().created, 3);
    let mut rows: Vec<Figures> = web.rows.iter().map(figures).collect();
    rows.sort();
    let mut want = vec![
        f(
            &format!("users/{admin}"),
            1,
            1,
            1,
            1,
            1,
            Some(3_600),
            Some(3_600),
        ),
        f(
            &format!("users/{rep}"),
            2,
            1,
            1,
            0,
            0,
            Some(10_800),
            Some(10_800),
        ),
    ];
    want.sort();
    assert_eq!(rows, want);
    let reps = report(
        &a,
        GetLeadEffectivenessRequest {
            group_by: LeadEffectivenessGrouping::Campaign as i32,
            owner: Some(format!("users/{rep}")),
            ..march.clone()
        },
    )
    .await
    .unwrap();
    let rows: Vec<Figures> = reps.rows.iter().map(figures).collect();
    assert_eq!(
        rows,
        [
            f("", 3, 2, 1, 0, 0, Some(10_800), Some(10_800)),
            f("spring", 1, 1, 1, 1, 0, Some(18_000), Some(18_000)),
        ]
    );

    // The rep sees their own leads only (B, C, E, F), whatever they ask for.
    let mine = report(&r, march.clone()).await.unwrap();
    let rows: Vec<Figures> = mine.rows.iter().map(figures).collect();
    assert_eq!(
        rows,
        [
            f("show", 2, 2, 1, 1, 0, Some(18_000), Some(18_000)),
            f("web", 2, 1, 1, 0, 0, Some(10_800), Some(10_800)),
        ]
    );
    assert_eq!(
        figures(&mine.total.unwrap()),
        f("", 4, 3, 2, 1, 0, Some(14_400), Some(17_280))
    );
    let theirs = report(
        &r,
        GetLeadEffectivenessRequest {
            owner: Some(format!("users/{admin}")),
            ..march.clone()
        },
    )
    .await
    .unwrap();
    assert!(theirs.rows.is_empty());
    assert_eq!(theirs.total.unwrap().created, 0);

    // A hidden field cannot be grouped on; the others can.
    let st = expect_code(
        report(
            &analyst,
            GetLeadEffectivenessRequest {
                group_by: LeadEffectivenessGrouping::Campaign as i32,
                ..march.clone()
            },
        )
        .await,
        Code::PermissionDenied,
    );
    assert_eq!(crm_tests::reason(&st), "FIELD_HIDDEN");
    assert_eq!(
        report(&analyst, march.clone())
            .await
            .unwrap()
            .total
            .unwrap()
            .created,
        6
    );

    // Bad requests name the field.
    for (q, field) in [
        (
            GetLeadEffectivenessRequest {
                start_time: None,
                ..march.clone()
            },
            "start_time",
        ),
        (
            GetLeadEffectivenessRequest {
                end_time: None,
                ..march.clone()
            },
            "end_time",
        ),
        (
            GetLeadEffectivenessRequest {
                end_time: ts("2026-02-01T00:00:00Z"),
                ..march.clone()
            },
            "end_time",
        ),
        (
            GetLeadEffectivenessRequest {
                end_time: ts("2029-03-02T00:00:00Z"),
                ..march.clone()
            },
            "end_time",
        ),
        (
            GetLeadEffectivenessRequest {
                time_zone: "Mars/Olympus_Mons".into(),
                ..march.clone()
            },
            "time_zone",
        ),
        (
            GetLeadEffectivenessRequest {
                group_by: 42,
                ..march.clone()
            },
            "group_by",
        ),
        (
            GetLeadEffectivenessRequest {
                granularity: 42,
                ..march.clone()
            },
            "granularity",
        ),
        (
            GetLeadEffectivenessRequest {
                owner: Some("accounts/x".into()),
                ..march.clone()
            },
            "owner",
        ),
    ] {
        let st = expect_code(report(&a, q).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&st), [field], "{st:?}");
    }
}
