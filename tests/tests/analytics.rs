//! AnalyticsService (crm-analytical): RFM + value runs as long-running operations, their
//! results under the contacts' permissions, lifecycle models and evaluations, segments and
//! their refreshes, and the sales, funnel and cohort reports, on SQLite and PostgreSQL.
//!
//! The data set is small and checked by hand (see `seed`), and the stored results are also
//! checked against an independent SQL query over the same rows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, TimeZone, Utc};
use crm_api::google::longrunning::{self as lro, operations_client::OperationsClient};
use crm_api::v1::*;
use crm_core::model::order::OrderStatus;
use crm_core::model::{self, OrderLine};
use crm_tests::{Backend, TestServer, both, expect_code, req, violated_fields};
use sea_orm::{ConnectionTrait, Statement};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tonic::Code;
use uuid::Uuid;

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn pts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

/// The as-of instant and the period's start of the runs below.
fn as_of() -> DateTime<Utc> {
    at(2026, 6, 30, 0, 0)
}
fn period_from() -> DateTime<Utc> {
    at(2025, 7, 1, 0, 0)
}

struct Seeded {
    a: Uuid,
    b: Uuid,
    c: Uuid,
    d: Uuid,
    e: Uuid,
    group: Uuid,
}

/// Contacts A (EMEA), B (APAC), C (APAC), D (no orders), E (only a refund); an account X
/// (NA) with an account-only order. Orders (minor units):
///
/// | who | time (UTC)          | currency | total  | status    | note                          |
/// |-----|---------------------|----------|--------|-----------|-------------------------------|
/// | A   | 2026-06-20 10:00    | EUR      | 10000  | fulfilled | last purchase: 9 days         |
/// | A   | 2026-03-01 10:00    | EUR      |  5000  | fulfilled |                               |
/// | A   | 2026-05-31 10:00    | USD      |  2000  | fulfilled |                               |
/// | A   | 2026-06-25 10:00    | EUR      | 50000  | cancelled | never read                    |
/// | B   | 2026-01-31 23:30    | EUR      |  3000  | fulfilled | 149 days; February in Berlin  |
/// | B   | 2026-02-15 10:00    | EUR      |  4000  | returned  | refund: net 0, no purchase    |
/// | C   | 2025-12-01 10:00    | JPY      |  5000  | fulfilled | 210 days                      |
/// | C   | 2026-07-15 10:00    | JPY      |  9000  | open      | future-dated: left out        |
/// | C   | 2025-05-01 10:00    | EUR      |   999  | fulfilled | before the period             |
/// | E   | 2026-04-01 10:00    | EUR      |  2500  | returned  | E has no purchase             |
/// | X   | 2026-06-01 10:00    | EUR      |  7000  | fulfilled | no contact: not in RFM        |
async fn seed(s: &TestServer, tenant: &str) -> Seeded {
    let ctx = s.admin_ctx(tenant);
    let group = ctx
        .create(
            model::ProductGroup {
                display_name: "Pumps".into(),
                parent: None,
            },
            "",
        )
        .await
        .unwrap()
        .meta
        .id;
    let product = ctx
        .create(
            model::Product {
                sku: "P-1".into(),
                product_group: Some(group),
                display_name: "Pump".into(),
                currency_code: "EUR".into(),
                list_price: 100,
                active: true,
            },
            "",
        )
        .await
        .unwrap()
        .meta
        .id;
    let contact = |name: &str, region: &str| model::Contact {
        display_name: name.into(),
        region: region.into(),
        ..Default::default()
    };
    let mut ids = Vec::new();
    for (n, r) in [
        ("A", "EMEA"),
        ("B", "APAC"),
        ("C", "APAC"),
        ("D", "EMEA"),
        ("E", "EMEA"),
    ] {
        ids.push(ctx.create(contact(n, r), "").await.unwrap().meta.id);
    }
    let x = ctx
        .create(
            model::Account {
                display_name: "X".into(),
                region: "NA".into(),
                ..Default::default()
            },
            "",
        )
        .await
        .unwrap()
        .meta
        .id;
    let (a, b, c, d, e) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let order = |contact: Option<Uuid>,
                 account: Option<Uuid>,
                 t: DateTime<Utc>,
                 cur: &str,
                 total: i64,
                 status: OrderStatus| model::Order {
        contact,
        account,
        order_time: Some(t),
        currency_code: cur.into(),
        status,
        lines: vec![OrderLine {
            product: Some(product),
            quantity: 1,
            unit_price: total,
            ..Default::default()
        }],
        ..Default::default()
    };
    use OrderStatus::*;
    for o in [
        order(
            Some(a),
            None,
            at(2026, 6, 20, 10, 0),
            "EUR",
            10000,
            Fulfilled,
        ),
        order(Some(a), None, at(2026, 3, 1, 10, 0), "EUR", 5000, Fulfilled),
        order(
            Some(a),
            None,
            at(2026, 5, 31, 10, 0),
            "USD",
            2000,
            Fulfilled,
        ),
        order(
            Some(a),
            None,
            at(2026, 6, 25, 10, 0),
            "EUR",
            50000,
            Cancelled,
        ),
        order(
            Some(b),
            None,
            at(2026, 1, 31, 23, 30),
            "EUR",
            3000,
            Fulfilled,
        ),
        order(Some(b), None, at(2026, 2, 15, 10, 0), "EUR", 4000, Returned),
        order(
            Some(c),
            None,
            at(2025, 12, 1, 10, 0),
            "JPY",
            5000,
            Fulfilled,
        ),
        order(Some(c), None, at(2026, 7, 15, 10, 0), "JPY", 9000, Open),
        order(Some(c), None, at(2025, 5, 1, 10, 0), "EUR", 999, Fulfilled),
        order(Some(e), None, at(2026, 4, 1, 10, 0), "EUR", 2500, Returned),
        order(None, Some(x), at(2026, 6, 1, 10, 0), "EUR", 7000, Fulfilled),
    ] {
        ctx.create(o, "").await.unwrap();
    }
    Seeded {
        a,
        b,
        c,
        d,
        e,
        group,
    }
}

fn contact_name(id: Uuid) -> String {
    format!("contacts/{id}")
}

/// Starts a run and waits for its operation; returns the run's name.
async fn run_rfm(s: &TestServer, token: &str, config: &str) -> String {
    let op = s
        .analytics()
        .start_rfm_run(req(
            token,
            StartRfmRunRequest {
                config: config.into(),
                period_start_time: Some(pts(period_from())),
                as_of_time: Some(pts(as_of())),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(op.name.starts_with("operations/"), "{op:?}");
    let op = wait(s, token, &op.name).await;
    let Some(lro::operation::Result::Response(any)) = op.result else {
        panic!("the run failed: {op:?}")
    };
    let result: OperationResult = prost::Message::decode(any.value.as_slice()).unwrap();
    let Some(prost_types::value::Kind::StructValue(st)) = result.result.and_then(|v| v.kind) else {
        panic!("no result")
    };
    let Some(prost_types::value::Kind::StringValue(run)) =
        st.fields.get("run").and_then(|v| v.kind.clone())
    else {
        panic!("no run in {st:?}")
    };
    run
}

async fn wait(s: &TestServer, token: &str, name: &str) -> lro::Operation {
    let op = s.wait_operation(token, name).await;
    // GetOperation answers the same.
    let got = OperationsClient::new(s.channel.clone())
        .get_operation(req(token, lro::GetOperationRequest { name: name.into() }))
        .await
        .unwrap()
        .into_inner();
    assert!(got.done);
    op
}

async fn all_results(s: &TestServer, token: &str, run: &str, segment: &str) -> Vec<RfmResult> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = s
            .analytics()
            .list_rfm_results(req(
                token,
                ListRfmResultsRequest {
                    run: run.into(),
                    segment: segment.into(),
                    page_size: 2,
                    page_token: page_token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        out.extend(page.results);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// (contact, currency) -> (orders, purchases, net) by an independent SQL query.
/// Rows of the journal table `table` (audit records, events) about `collection`.
async fn journal_rows(s: &TestServer, table: &str, collection: &str) -> i64 {
    let backend = s.db.backend();
    let p = match backend {
        sea_orm::DbBackend::Postgres => "$1",
        _ => "?",
    };
    let row =
        s.db.conn
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                format!("SELECT COUNT(*) AS n FROM {table} WHERE collection = {p}"),
                [collection.into()],
            ))
            .await
            .unwrap()
            .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

async fn sql_measures(s: &TestServer, tenant: &str) -> BTreeMap<(Uuid, String), (i64, i64, i64)> {
    let backend = s.db.backend();
    let (p1, p2, p3) = match backend {
        sea_orm::DbBackend::Postgres => ("$1", "$2", "$3"),
        _ => ("?", "?", "?"),
    };
    let sql = format!(
        "SELECT contact_id, currency_code, COUNT(*) AS n, \
         CAST(SUM(CASE WHEN status <> 'RETURNED' AND total > 0 THEN 1 ELSE 0 END) AS BIGINT) AS p, \
         CAST(SUM(CASE WHEN status = 'RETURNED' THEN 0 ELSE total END) AS BIGINT) AS net \
         FROM orders WHERE tenant_id = {p1} AND delete_time IS NULL AND status <> 'CANCELLED' \
         AND contact_id IS NOT NULL AND order_time >= {p2} AND order_time <= {p3} \
         GROUP BY contact_id, currency_code"
    );
    let rows =
        s.db.conn
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [tenant.into(), period_from().into(), as_of().into()],
            ))
            .await
            .unwrap();
    rows.iter()
        .map(|r| {
            (
                (
                    r.try_get::<Uuid>("", "contact_id").unwrap(),
                    r.try_get::<String>("", "currency_code").unwrap(),
                ),
                (
                    r.try_get::<i64>("", "n").unwrap(),
                    r.try_get::<i64>("", "p").unwrap(),
                    r.try_get::<i64>("", "net").unwrap(),
                ),
            )
        })
        .collect()
}

async fn rfm_runs_are_operations_with_hand_checked_results(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("other").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let seeded = seed(&s, "acme").await;

    // No run yet: nothing to read.
    let e = expect_code(
        s.analytics()
            .list_rfm_results(req(&t, ListRfmResultsRequest::default()))
            .await,
        Code::NotFound,
    );
    assert!(e.message().contains("rfmRuns"), "{e:?}");

    let run = run_rfm(&s, &t, "").await;
    let got = s
        .analytics()
        .get_rfm_run(req(&t, GetRfmRunRequest { name: run.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, RfmRunState::Succeeded as i32);
    let stats = got.stats.unwrap();
    assert_eq!(stats.customers, 5);
    assert_eq!(stats.scored, 3);
    assert_eq!(stats.no_orders, 1);
    assert_eq!(stats.no_purchases, 1);
    // A 3 + B 2 + C 1 + E 1 (cancelled, future and before-period orders are not read).
    assert_eq!(stats.orders_in_period, 7);
    assert_eq!(stats.future_dated_orders, 1);
    assert_eq!(stats.orders_without_contact, 1);
    // Results are derived records: audited and evented as their run (created, then
    // succeeded), not one by one.
    assert_eq!(journal_rows(&s, "audit_records", "rfmResults").await, 0);
    assert_eq!(journal_rows(&s, "outbox_events", "rfmResults").await, 0);
    assert_eq!(journal_rows(&s, "audit_records", "rfmRuns").await, 2);
    assert_eq!(journal_rows(&s, "outbox_events", "rfmRuns").await, 2);

    // Every contact has one result; the latest run is the default.
    let results = all_results(&s, &t, "", "").await;
    assert_eq!(results.len(), 5);
    let by: HashMap<String, RfmResult> = results
        .into_iter()
        .map(|r| (r.customer.clone(), r))
        .collect();
    let a = &by[&contact_name(seeded.a)];
    let b = &by[&contact_name(seeded.b)];
    let c = &by[&contact_name(seeded.c)];
    let d = &by[&contact_name(seeded.d)];
    let e = &by[&contact_name(seeded.e)];
    assert_eq!(a.run, run);

    // Hand-computed measures.
    assert_eq!(a.status, RfmResultStatus::Scored as i32);
    assert_eq!(a.recency_days, Some(9));
    assert_eq!(a.frequency, 3);
    assert_eq!(a.orders, 3);
    assert_eq!(
        a.monetary_minor,
        HashMap::from([("EUR".into(), 15000), ("USD".into(), 2000)])
    );
    assert_eq!(b.recency_days, Some(149));
    assert_eq!((b.frequency, b.orders), (1, 2));
    assert_eq!(b.monetary_minor, HashMap::from([("EUR".into(), 3000)]));
    assert_eq!(c.recency_days, Some(210));
    assert_eq!((c.frequency, c.orders), (1, 1));
    assert_eq!(c.monetary_minor, HashMap::from([("JPY".into(), 5000)]));
    assert_eq!(d.status, RfmResultStatus::NoOrders as i32);
    assert_eq!(
        (d.recency_days, d.frequency, d.orders, d.r),
        (None, 0, 0, 0)
    );
    assert_eq!(e.status, RfmResultStatus::NoPurchases as i32);
    assert_eq!((e.recency_days, e.frequency, e.orders), (None, 0, 1));
    assert_eq!(e.monetary_minor, HashMap::from([("EUR".into(), 0)]));
    assert_eq!(e.segment, "");

    // Hand-computed scores (5 bins, mid-rank quantiles among A, B, C; M per currency, the
    // highest per-currency score) and the classic segments.
    assert_eq!((a.r, a.f, a.m), (5, 5, 4));
    assert_eq!(
        a.m_by_currency,
        HashMap::from([("EUR".into(), 4), ("USD".into(), 3)])
    );
    assert_eq!((b.r, b.f, b.m), (3, 2, 2));
    assert_eq!((c.r, c.f, c.m), (1, 2, 3));
    assert_eq!(a.segment, "champions");
    assert_eq!(b.segment, "about_to_sleep");
    assert_eq!(c.segment, "lost");

    // Value: weights 1/1/1 on (s - 1) / 4: A (1 + 1 + 0.75) / 3, B 1 / 3, C 0.75 / 3.
    let score = |r: &RfmResult| r.value.as_ref().unwrap().score;
    assert!((score(a) - 275.0 / 3.0).abs() < 1e-9, "{}", score(a));
    assert!((score(b) - 100.0 / 3.0).abs() < 1e-9, "{}", score(b));
    assert!((score(c) - 25.0).abs() < 1e-9, "{}", score(c));
    assert_eq!(score(d), 0.0);
    let sum: f64 = a
        .value
        .as_ref()
        .unwrap()
        .contributions
        .iter()
        .map(|c| c.contribution)
        .sum();
    assert!((sum - score(a)).abs() < 1e-9);

    // The stored measures agree with an independent SQL query over the same rows.
    let sql = sql_measures(&s, "acme").await;
    for r in by.values() {
        let id = Uuid::parse_str(r.customer.trim_start_matches("contacts/")).unwrap();
        let mine: Vec<_> = sql.iter().filter(|((c, _), _)| *c == id).collect();
        let orders: i64 = mine.iter().map(|(_, v)| v.0).sum();
        let purchases: i64 = mine.iter().map(|(_, v)| v.1).sum();
        let money: HashMap<String, i64> = mine
            .iter()
            .map(|((_, cur), v)| (cur.clone(), v.2))
            .collect();
        assert_eq!(
            (r.orders, r.frequency),
            (orders, purchases),
            "{}",
            r.customer
        );
        assert_eq!(r.monetary_minor, money, "{}", r.customer);
    }

    // One segment; one customer.
    let champions = all_results(&s, &t, &run, "champions").await;
    assert_eq!(champions.len(), 1);
    assert_eq!(champions[0].customer, contact_name(seeded.a));
    let one = s
        .analytics()
        .get_customer_rfm(req(
            &t,
            GetCustomerRfmRequest {
                customer: contact_name(seeded.b),
                run: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.segment, "about_to_sleep");

    // Another tenant sees none of it: NOT_FOUND for the run, its results and the contact.
    let o = s.token("other", Uuid::now_v7(), &["admin"]);
    expect_code(
        s.analytics()
            .get_rfm_run(req(&o, GetRfmRunRequest { name: run.clone() }))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.analytics()
            .list_rfm_results(req(
                &o,
                ListRfmResultsRequest {
                    run: run.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.analytics()
            .get_customer_rfm(req(
                &o,
                GetCustomerRfmRequest {
                    customer: contact_name(seeded.a),
                    run: run.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );

    // A role that may read runs but not contacts may not read results.
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    s.access()
        .create_role(req(
            &admin,
            CreateRoleRequest {
                role_id: "analyst".into(),
                role: Some(Role {
                    display_name: "Analyst".into(),
                    grants: vec![Grant {
                        collection: "rfmRuns".into(),
                        actions: vec![Action::Read as i32],
                        scope: Scope::All as i32,
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let analyst = s.token("acme", Uuid::now_v7(), &["analyst"]);
    s.analytics()
        .get_rfm_run(req(&analyst, GetRfmRunRequest { name: run.clone() }))
        .await
        .unwrap();
    expect_code(
        s.analytics()
            .list_rfm_results(req(&analyst, ListRfmResultsRequest::default()))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        s.analytics()
            .get_customer_rfm(req(
                &analyst,
                GetCustomerRfmRequest {
                    customer: contact_name(seeded.a),
                    run: String::new(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    // Nor start one (no create on rfmRuns).
    expect_code(
        s.analytics()
            .start_rfm_run(req(&analyst, StartRfmRunRequest::default()))
            .await,
        Code::PermissionDenied,
    );
}

async fn configs_are_validated_and_used_by_runs(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let seeded = seed(&s, "acme").await;
    let create = |config: RfmConfig| {
        let mut c = s.analytics();
        let t = t.clone();
        async move {
            c.create_rfm_config(req(
                &t,
                CreateRfmConfigRequest {
                    config: Some(config),
                    request_id: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner())
        }
    };

    // Weights that sum to zero, bins out of range: INVALID_ARGUMENT naming the field.
    let e = expect_code(
        create(RfmConfig {
            display_name: "zero".into(),
            value_model: Some(ValueModel {
                weights: Some(ValueWeights::default()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(
        violated_fields(&e)
            .iter()
            .any(|f| f.starts_with("config.value_model.weights")),
        "{:?}",
        violated_fields(&e)
    );
    let e = expect_code(
        create(RfmConfig {
            display_name: "bins".into(),
            rfm: Some(RfmParameters {
                bins: 11,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), vec!["config.rfm.bins".to_string()]);
    let e = expect_code(
        create(RfmConfig {
            display_name: "tz".into(),
            time_zone: "Mars/Olympus".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), vec!["config.time_zone".to_string()]);
    assert_eq!(s.count("rfm_configs", "acme").await, 0);

    // Frequency by thresholds (2 purchases or more scores 2 of 2 bins), monetary weighted only.
    let config = create(RfmConfig {
        display_name: "two bins".into(),
        rfm: Some(RfmParameters {
            bins: 2,
            frequency: Some(RfmBinning {
                method: RfmBinningMethod::Thresholds as i32,
                thresholds: vec![2],
                ..Default::default()
            }),
            segments: vec![
                RfmSegmentRule {
                    segment: "regulars".into(),
                    f: Some(ScoreRange { min: 2, max: 2 }),
                    ..Default::default()
                },
                RfmSegmentRule {
                    segment: "others".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        value_model: Some(ValueModel {
            weights: Some(ValueWeights {
                monetary: 2.0,
                ..Default::default()
            }),
            ..Default::default()
        }),
        time_zone: "Europe/Berlin".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(config.value_model.as_ref().unwrap().version, 1);
    let run = run_rfm(&s, &t, &config.name).await;
    let results = all_results(&s, &t, &run, "regulars").await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].customer, contact_name(seeded.a));
    assert_eq!(results[0].value.as_ref().unwrap().model_version, 1);
    let others = all_results(&s, &t, &run, "others").await;
    assert_eq!(others.len(), 2);
    let _ = (seeded.c, seeded.d, seeded.e);

    // A bad segment name in a list is refused, not built into a filter.
    expect_code(
        s.analytics()
            .list_rfm_results(req(
                &t,
                ListRfmResultsRequest {
                    segment: "x\" OR run != \"".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::InvalidArgument,
    );
}

async fn sales_report_by_month_and_region(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let seeded = seed(&s, "acme").await;
    let report = |tz: &str, chart: bool| {
        let mut c = s.analytics();
        let t = t.clone();
        let tz = tz.to_owned();
        async move {
            c.sales_report(req(
                &t,
                SalesReportRequest {
                    start_time: Some(pts(period_from())),
                    end_time: Some(pts(at(2026, 7, 1, 0, 0))),
                    granularity: ReportGranularity::Month as i32,
                    dimension: SalesDimension::Region as i32,
                    time_zone: tz,
                    include_chart: chart,
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner())
        }
    };
    let r = report("Europe/Berlin", true).await.unwrap();
    let cells: Vec<(String, String, String, i64, i64)> = r
        .cells
        .iter()
        .map(|c| {
            (
                c.period.clone(),
                c.dimension.clone(),
                c.currency_code.clone(),
                c.amount_minor,
                c.orders,
            )
        })
        .collect();
    let cell = |p: &str, d: &str, cur: &str, amount: i64, n: i64| {
        (p.to_owned(), d.to_owned(), cur.to_owned(), amount, n)
    };
    assert_eq!(
        cells,
        vec![
            cell("2025-12", "APAC", "JPY", 5000, 1),
            // 2026-01-31 23:30 UTC is February in Berlin; the refund adds 0 and no order.
            cell("2026-02", "APAC", "EUR", 3000, 1),
            cell("2026-03", "EMEA", "EUR", 5000, 1),
            cell("2026-04", "EMEA", "EUR", 0, 0),
            cell("2026-05", "EMEA", "USD", 2000, 1),
            cell("2026-06", "EMEA", "EUR", 10000, 1),
            cell("2026-06", "NA", "EUR", 7000, 1),
        ]
    );
    assert_eq!(
        r.totals_minor,
        HashMap::from([
            ("EUR".into(), 25000),
            ("USD".into(), 2000),
            ("JPY".into(), 5000)
        ])
    );
    assert_eq!(r.charts.len(), 3);
    assert!(
        r.charts["EUR"].starts_with("<svg"),
        "{}",
        &r.charts["EUR"][..50]
    );
    assert_eq!(r.cells[1].period_start_date.as_ref().unwrap().month, 2);

    // In UTC the late-January order is January's.
    let utc = report("", false).await.unwrap();
    assert!(utc.charts.is_empty());
    assert!(
        utc.cells
            .iter()
            .any(|c| c.period == "2026-01" && c.amount_minor == 3000)
    );

    // By product group (order lines, streamed): one group, the same months and amounts.
    let by_group = s
        .analytics()
        .sales_report(req(
            &t,
            SalesReportRequest {
                start_time: Some(pts(period_from())),
                end_time: Some(pts(at(2026, 7, 1, 0, 0))),
                granularity: ReportGranularity::Quarter as i32,
                dimension: SalesDimension::ProductGroup as i32,
                time_zone: "Europe/Berlin".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let group = format!("productGroups/{}", seeded.group);
    assert!(
        by_group.cells.iter().all(|c| c.dimension == group),
        "{by_group:?}"
    );
    let quarters: Vec<(String, String, i64, i64)> = by_group
        .cells
        .iter()
        .map(|c| {
            (
                c.period.clone(),
                c.currency_code.clone(),
                c.amount_minor,
                c.orders,
            )
        })
        .collect();
    let q = |p: &str, cur: &str, amount: i64, n: i64| (p.to_owned(), cur.to_owned(), amount, n);
    assert_eq!(
        quarters,
        vec![
            q("2025-Q4", "JPY", 5000, 1),
            q("2026-Q1", "EUR", 8000, 2),
            q("2026-Q2", "EUR", 17000, 2),
            q("2026-Q2", "USD", 2000, 1),
        ]
    );
    assert_eq!(by_group.totals_minor, r.totals_minor);

    // Bad input names the field.
    let e = expect_code(report("Nowhere/Land", false).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&e), vec!["time_zone".to_string()]);

    // A rep sees the orders of their own scope only (none here: the admin owns them).
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    s.access()
        .create_role(req(
            &admin,
            CreateRoleRequest {
                role_id: "rep".into(),
                role: Some(Role {
                    display_name: "Rep".into(),
                    grants: vec![Grant {
                        collection: "orders".into(),
                        actions: vec![Action::Read as i32],
                        scope: Scope::Own as i32,
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let rep = s.token("acme", Uuid::now_v7(), &["rep"]);
    let mine = s
        .analytics()
        .sales_report(req(
            &rep,
            SalesReportRequest {
                start_time: Some(pts(period_from())),
                end_time: Some(pts(at(2026, 7, 1, 0, 0))),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(mine.cells.is_empty());
    let nobody = s.token("acme", Uuid::now_v7(), &[]);
    expect_code(
        s.analytics()
            .sales_report(req(
                &nobody,
                SalesReportRequest {
                    start_time: Some(pts(period_from())),
                    end_time: Some(pts(at(2026, 7, 1, 0, 0))),
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
    );
}

async fn a_run_started_twice_runs_once(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    seed(&s, "acme").await;
    let start = || {
        let mut c = s.analytics();
        let t = t.clone();
        async move {
            c.start_rfm_run(req(
                &t,
                StartRfmRunRequest {
                    config: String::new(),
                    period_start_time: Some(pts(period_from())),
                    as_of_time: Some(pts(as_of())),
                },
            ))
            .await
            .unwrap()
            .into_inner()
        }
    };
    let (x, y) = tokio::join!(start(), start());
    let first = wait(&s, &t, &x.name).await;
    wait(&s, &t, &y.name).await;
    assert!(first.done);
    // Started together: the second found the first running (the same operation), or came
    // after it had finished and ran anew; never two runs at once.
    let runs = s
        .analytics()
        .list_rfm_runs(req(&t, ListRfmRunsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .runs;
    if x.name == y.name {
        assert_eq!(runs.len(), 1);
    }
    assert!(
        runs.iter()
            .all(|r| r.state == RfmRunState::Succeeded as i32),
        "{runs:?}"
    );
    // One result per contact per run.
    assert_eq!(
        s.count("rfm_results", "acme").await,
        5 * i64::try_from(runs.len()).unwrap()
    );
}

async fn a_cancelled_run_is_never_read(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    seed(&s, "acme").await;
    let op = s
        .analytics()
        .start_rfm_run(req(
            &t,
            StartRfmRunRequest {
                as_of_time: Some(pts(as_of())),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    OperationsClient::new(s.channel.clone())
        .cancel_operation(req(
            &t,
            lro::CancelOperationRequest {
                name: op.name.clone(),
            },
        ))
        .await
        .unwrap();
    let op = wait(&s, &t, &op.name).await;
    let runs = s
        .analytics()
        .list_rfm_runs(req(&t, ListRfmRunsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(runs.len(), 1);
    let first = runs[0].name.clone();
    let cancelled = matches!(op.result, Some(lro::operation::Result::Error(_)));
    if cancelled {
        // Whatever it wrote is never read.
        let e = expect_code(
            s.analytics()
                .list_rfm_results(req(
                    &t,
                    ListRfmResultsRequest {
                        run: first.clone(),
                        ..Default::default()
                    },
                ))
                .await,
            Code::FailedPrecondition,
        );
        assert_eq!(crm_tests::reason(&e), "RUN_NOT_SUCCEEDED");
        expect_code(
            s.analytics()
                .list_rfm_results(req(&t, ListRfmResultsRequest::default()))
                .await,
            Code::NotFound,
        );
    }
    // It does not block the next run, which then is the latest.
    let second = run_rfm(&s, &t, "").await;
    let page = s
        .analytics()
        .list_rfm_results(req(&t, ListRfmResultsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.run, second);
    let old = s
        .analytics()
        .get_rfm_run(req(&t, GetRfmRunRequest { name: first }))
        .await
        .unwrap()
        .into_inner();
    let want = if cancelled {
        RfmRunState::Failed
    } else {
        RfmRunState::Succeeded
    };
    assert_eq!(old.state, want as i32, "{old:?}");
}

/// The JSON result of a finished operation.
async fn op_result(s: &TestServer, token: &str, name: &str) -> prost_types::Struct {
    let op = wait(s, token, name).await;
    let Some(lro::operation::Result::Response(any)) = op.result else {
        panic!("the operation failed: {op:?}")
    };
    let result: OperationResult = prost::Message::decode(any.value.as_slice()).unwrap();
    let Some(prost_types::value::Kind::StructValue(st)) = result.result.and_then(|v| v.kind) else {
        panic!("no result")
    };
    st
}

fn num(st: &prost_types::Struct, key: &str) -> f64 {
    match st.fields.get(key).and_then(|v| v.kind.clone()) {
        Some(prost_types::value::Kind::NumberValue(n)) => n,
        other => panic!("{key}: {other:?} in {st:?}"),
    }
}

/// A role reading and creating its own contacts only, reading its own orders, lifecycle
/// models and segments.
async fn create_rep_role(s: &TestServer, admin: &str) {
    use Action::*;
    let grant = |collection: &str, actions: &[Action], scope: Scope| Grant {
        collection: collection.into(),
        actions: actions.iter().map(|a| *a as i32).collect(),
        scope: scope as i32,
    };
    s.access()
        .create_role(req(
            admin,
            CreateRoleRequest {
                role_id: "rep".into(),
                role: Some(Role {
                    display_name: "Rep".into(),
                    grants: vec![
                        grant("contacts", &[Read, Create, Update], Scope::Own),
                        grant("lifecycleModels", &[Read], Scope::All),
                        grant("segments", &[Read], Scope::All),
                        grant("orders", &[Read], Scope::Own),
                    ],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
}

async fn rep_contact(s: &TestServer, rep: &str, name: &str) -> String {
    s.contacts()
        .create_contact(req(
            rep,
            CreateContactRequest {
                contact: Some(Contact {
                    display_name: name.into(),
                    region: "EMEA".into(),
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

fn cond(fact: &str, op: &str, value: i64) -> LifecycleCondition {
    LifecycleCondition {
        fact: fact.into(),
        op: op.into(),
        value,
        ..Default::default()
    }
}

async fn lifecycle_models_are_validated_and_evaluated(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("other").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let seeded = seed(&s, "acme").await;
    create_rep_role(&s, &t).await;
    let rep = s.token("acme", Uuid::now_v7(), &["rep"]);
    let r = rep_contact(&s, &rep, "R").await;
    let create = |m: LifecycleModel| {
        let mut c = s.analytics();
        let t = t.clone();
        async move {
            c.create_lifecycle_model(req(
                &t,
                CreateLifecycleModelRequest {
                    lifecycle_model: Some(m),
                    request_id: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner())
        }
    };
    let stage = |k: &str| LifecycleStage {
        key: k.into(),
        display_name: k.to_uppercase(),
    };

    // A rule on an unknown fact, an unknown operator, a rule into an unknown stage, an
    // unknown template: INVALID_ARGUMENT naming each field; nothing written.
    let written = (
        s.count("audit_records", "acme").await,
        s.count("outbox_events", "acme").await,
    );
    let e = expect_code(
        create(LifecycleModel {
            display_name: "custom".into(),
            stages: vec![stage("new"), stage("buyer")],
            initial: "new".into(),
            transitions: vec![LifecycleRule {
                from: vec!["new".into()],
                to: "buyer".into(),
                when: vec![cond("order_count", ">=", 1), cond("mood", ">", 3)],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&e),
        vec!["lifecycle_model.transitions[0].when[1].fact".to_string()]
    );
    assert!(e.message().contains("mood"), "{e:?}");
    let e = expect_code(
        create(LifecycleModel {
            display_name: "custom".into(),
            stages: vec![stage("new"), stage("buyer")],
            initial: "new".into(),
            transitions: vec![LifecycleRule {
                to: "vip".into(),
                when: vec![cond("order_count", "=>", 1)],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&e),
        vec!["lifecycle_model.transitions[0].when[0].op".to_string()]
    );
    let e = expect_code(
        create(LifecycleModel {
            display_name: "custom".into(),
            stages: vec![stage("new"), stage("buyer")],
            initial: "new".into(),
            transitions: vec![LifecycleRule {
                to: "vip".into(),
                when: vec![cond("order_count", ">=", 1)],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(
        violated_fields(&e).contains(&"lifecycle_model.transitions[0].to".to_string()),
        "{:?}",
        violated_fields(&e)
    );
    let e = expect_code(
        create(LifecycleModel {
            display_name: "t".into(),
            template: "funnel".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&e),
        vec!["lifecycle_model.template".to_string()]
    );
    assert_eq!(s.count("lifecycle_models", "acme").await, 0);
    assert_eq!(
        (
            s.count("audit_records", "acme").await,
            s.count("outbox_events", "acme").await
        ),
        written
    );

    // No active model: nothing to evaluate.
    let e = expect_code(
        s.analytics()
            .evaluate_lifecycle(req(&t, EvaluateLifecycleRequest::default()))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(crm_tests::reason(&e), "NO_ACTIVE_LIFECYCLE_MODEL");

    // From the templates; activating the second switches the first off.
    let eight = create(LifecycleModel {
        display_name: "CRM process".into(),
        template: "crm_process".into(),
        active: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(eight.stages.len(), 8);
    assert_eq!(eight.initial, "identify");
    let four = create(LifecycleModel {
        display_name: "Relationship".into(),
        template: "relationship".into(),
        active: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let keys: Vec<&str> = four.stages.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["explore", "form", "stable", "decline"]);
    assert_eq!(four.transitions[0].when[0].fact, "order_count");
    let eight = s
        .analytics()
        .get_lifecycle_model(req(
            &t,
            GetLifecycleModelRequest {
                name: eight.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!eight.active);
    let active = s
        .analytics()
        .list_lifecycle_models(req(
            &t,
            ListLifecycleModelsRequest {
                filter: "active = true".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .lifecycle_models;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].name, four.name);

    // Evaluated at the as-of instant (lifetime facts, the future order left out):
    // A 3 purchases, the last 9 days before: explore -> form -> stable;
    // B 1 purchase 149 days before: explore -> form;
    // C 2 purchases (one before the RFM period), the last 210 days before: explore -> form
    // -> decline; D, E (only a refund) and R: explore.
    let evaluate = || {
        let mut c = s.analytics();
        let t = t.clone();
        async move {
            c.evaluate_lifecycle(req(
                &t,
                EvaluateLifecycleRequest {
                    as_of_time: Some(pts(as_of())),
                },
            ))
            .await
            .unwrap()
            .into_inner()
        }
    };
    let op = evaluate().await;
    let st = op_result(&s, &t, &op.name).await;
    assert_eq!(num(&st, "evaluated"), 6.0);
    assert_eq!(num(&st, "changed"), 6.0);
    assert_eq!(num(&st, "transitions"), 11.0);
    let stage_of = |who: String| {
        let mut c = s.analytics();
        let t = t.clone();
        async move {
            c.get_customer_lifecycle(req(&t, GetCustomerLifecycleRequest { customer: who }))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let a = stage_of(contact_name(seeded.a)).await;
    assert_eq!(a.stage, "stable");
    assert_eq!(a.model, four.name);
    assert_eq!(a.enter_time, Some(pts(as_of())));
    assert_eq!(stage_of(contact_name(seeded.b)).await.stage, "form");
    assert_eq!(stage_of(contact_name(seeded.c)).await.stage, "decline");
    assert_eq!(stage_of(contact_name(seeded.d)).await.stage, "explore");
    assert_eq!(stage_of(contact_name(seeded.e)).await.stage, "explore");

    // A's history, oldest first, in pages of two.
    let mut history = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = s
            .analytics()
            .list_lifecycle_transitions(req(
                &t,
                ListLifecycleTransitionsRequest {
                    customer: contact_name(seeded.a),
                    page_size: 2,
                    page_token: page_token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.transitions.len() <= 2);
        history.extend(page.transitions);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let steps: Vec<(&str, &str, &str, i64)> = history
        .iter()
        .map(|h| {
            (
                h.from_stage.as_str(),
                h.to_stage.as_str(),
                h.reason.as_str(),
                h.rule,
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            ("", "explore", "entered the lifecycle model", -1),
            ("explore", "form", "first purchase", 0),
            (
                "form",
                "stable",
                "three purchases, the last within 90 days",
                3
            ),
        ]
    );
    assert!(
        history.iter().all(
            |h| h.transition_time == Some(pts(as_of())) && h.customer == contact_name(seeded.a)
        )
    );

    // Evaluating again at the same instant changes nothing and writes nothing.
    let again = evaluate().await;
    let st = op_result(&s, &t, &again.name).await;
    assert_eq!(num(&st, "changed"), 0.0);
    assert_eq!(s.count("lifecycle_transitions", "acme").await, 11);

    // Three or more open service cases make a stable customer decline.
    for title in ["Pump leaks", "Pump noisy", "Pump late", "Old question"] {
        s.cases()
            .create_case(req(
                &t,
                CreateCaseRequest {
                    case: Some(Case {
                        title: title.into(),
                        contact: contact_name(seeded.a),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap();
    }
    let op = evaluate().await;
    let st = op_result(&s, &t, &op.name).await;
    assert_eq!(num(&st, "changed"), 1.0);
    assert_eq!(stage_of(contact_name(seeded.a)).await.stage, "decline");
    let last = s
        .analytics()
        .list_lifecycle_transitions(req(
            &t,
            ListLifecycleTransitionsRequest {
                customer: contact_name(seeded.a),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .transitions;
    assert_eq!(last.len(), 4);
    assert_eq!(
        (
            last[3].from_stage.as_str(),
            last[3].to_stage.as_str(),
            last[3].reason.as_str()
        ),
        ("stable", "decline", "three or more open cases")
    );

    // Another tenant: NOT_FOUND for the contact's stage, its history and the model.
    let o = s.token("other", Uuid::now_v7(), &["admin"]);
    expect_code(
        s.analytics()
            .get_customer_lifecycle(req(
                &o,
                GetCustomerLifecycleRequest {
                    customer: contact_name(seeded.a),
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.analytics()
            .list_lifecycle_transitions(req(
                &o,
                ListLifecycleTransitionsRequest {
                    customer: contact_name(seeded.a),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.analytics()
            .get_lifecycle_model(req(
                &o,
                GetLifecycleModelRequest {
                    name: four.name.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );

    // A rep reads the stage of their own contact only, and may not start evaluations.
    let mine = s
        .analytics()
        .get_customer_lifecycle(req(&rep, GetCustomerLifecycleRequest { customer: r }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.stage, "explore");
    let e = expect_code(
        s.analytics()
            .get_customer_lifecycle(req(
                &rep,
                GetCustomerLifecycleRequest {
                    customer: contact_name(seeded.a),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(crm_tests::reason(&e), "OUT_OF_SCOPE");
    expect_code(
        s.analytics()
            .evaluate_lifecycle(req(&rep, EvaluateLifecycleRequest::default()))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        s.analytics()
            .create_lifecycle_model(req(
                &rep,
                CreateLifecycleModelRequest {
                    lifecycle_model: Some(LifecycleModel {
                        display_name: "mine".into(),
                        template: "relationship".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
}

/// A gateway whose own job runner is off: the test starts one when it wants jobs to run.
async fn server_without_jobs(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |s| s.jobs.enabled = false).await
}

fn runner(s: &TestServer) -> crm_core::jobs::Runner {
    let mut h = crm_core::jobs::JobHandlers::new();
    crm_gateway::server::register_jobs(&mut h).unwrap();
    crm_core::jobs::Runner::start(
        s.db.clone(),
        std::sync::Arc::new(crm_core::clock::SystemClock),
        h,
        crm_core::jobs::RunnerSettings {
            poll_interval: std::time::Duration::from_millis(50),
            ..Default::default()
        },
    )
}

async fn members_of(s: &TestServer, token: &str, segment: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = s
            .analytics()
            .list_segment_members(req(
                token,
                ListSegmentMembersRequest {
                    segment: segment.into(),
                    page_size: 2,
                    page_token: page_token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.members.len() <= 2);
        for m in page.members {
            assert_eq!(m.segment, segment);
            assert!(out.insert(m.customer));
        }
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

async fn tags_of(s: &TestServer, token: &str, contact: &str) -> Vec<String> {
    s.contacts()
        .get_contact(req(
            token,
            GetContactRequest {
                name: contact.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tags
}

async fn get_segment(s: &TestServer, token: &str, name: &str) -> Segment {
    s.analytics()
        .get_segment(req(token, GetSegmentRequest { name: name.into() }))
        .await
        .unwrap()
        .into_inner()
}

/// Waits until the segment's last refresh is another than `before` and has finished.
async fn next_refresh(s: &TestServer, token: &str, name: &str, before: &str) -> Segment {
    let seg = get_segment(s, token, name).await;
    assert_ne!(seg.operation, before, "no refresh followed");
    wait(s, token, &seg.operation).await;
    get_segment(s, token, name).await
}

async fn segments_are_refreshed_tagged_and_kept_up_to_date(backend: Backend) {
    let s = server_without_jobs(backend).await;
    s.tenant("acme").await;
    s.tenant("other").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let seeded = seed(&s, "acme").await;
    create_rep_role(&s, &t).await;
    let rep = s.token("acme", Uuid::now_v7(), &["rep"]);
    let r = rep_contact(&s, &rep, "R").await;
    let (a, b, c, d, e) = (
        contact_name(seeded.a),
        contact_name(seeded.b),
        contact_name(seeded.c),
        contact_name(seeded.d),
        contact_name(seeded.e),
    );
    let create = |display_name: &str, rule: &str, tag: &str| {
        let mut cl = s.analytics();
        let t = t.clone();
        let seg = Segment {
            display_name: display_name.into(),
            rule: rule.into(),
            tag: tag.into(),
            ..Default::default()
        };
        async move {
            cl.create_segment(req(
                &t,
                CreateSegmentRequest {
                    segment: Some(seg),
                    request_id: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner())
        }
    };
    let refresh = |name: &str| {
        let mut cl = s.analytics();
        let t = t.clone();
        let name = name.to_owned();
        async move {
            cl.refresh_segment(req(&t, RefreshSegmentRequest { name }))
                .await
                .unwrap()
                .into_inner()
        }
    };

    // Unknown fields (also a custom field not defined yet), a wrong literal: named; nothing
    // written.
    let written = (
        s.count("audit_records", "acme").await,
        s.count("outbox_events", "acme").await,
    );
    for rule in ["regionx = \"EMEA\"", "custom.tier = gold", "rfm.r >= high"] {
        let err = expect_code(create("bad", rule, "").await, Code::InvalidArgument);
        assert_eq!(
            violated_fields(&err),
            vec!["segment.rule".to_string()],
            "{rule}"
        );
    }
    let err = expect_code(
        create("bad", "regionx = \"EMEA\"", "").await,
        Code::InvalidArgument,
    );
    assert!(err.message().contains("regionx"), "{err:?}");
    assert_eq!(s.count("segments", "acme").await, 0);
    assert_eq!(
        (
            s.count("audit_records", "acme").await,
            s.count("outbox_events", "acme").await
        ),
        written
    );

    // A custom field of contacts, and B is gold.
    let admin = s.admin_ctx("acme");
    admin
        .create(
            model::custom_field::CustomFieldDefinition {
                collection: "contacts".into(),
                key: "tier".into(),
                display_name: "Tier".into(),
                value_type: "ENUM".into(),
                enum_values: vec!["gold".into(), "silver".into()],
                required: false,
            },
            "",
        )
        .await
        .unwrap();
    admin
        .update(
            seeded.b,
            model::Contact {
                custom_fields: BTreeMap::from([(
                    "tier".to_owned(),
                    model::custom_field::CustomValue::Enum("gold".into()),
                )]),
                ..Default::default()
            },
            &["custom_fields".into()],
            "",
        )
        .await
        .unwrap();

    let emea = create("EMEA", "region = \"EMEA\"", "EMEA-list")
        .await
        .unwrap();
    assert_eq!(emea.tag, "emea-list");
    let best = create(
        "Best",
        "rfm.segment = \"champions\" OR custom.tier = gold",
        "",
    )
    .await
    .unwrap();
    let decline = create("Decline", "lifecycle.stage = \"decline\"", "winback")
        .await
        .unwrap();

    // A second refresh while the first has not finished answers the first.
    let first = refresh(&emea.name).await;
    assert!(!first.done);
    let second = refresh(&emea.name).await;
    assert_eq!(second.name, first.name);
    // Who may only read segments gets no refresh, not even the running one.
    expect_code(
        s.analytics()
            .refresh_segment(req(
                &rep,
                RefreshSegmentRequest {
                    name: emea.name.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    let jobs = runner(&s);

    let st = op_result(&s, &t, &first.name).await;
    assert_eq!(num(&st, "evaluated"), 6.0);
    assert_eq!(num(&st, "members"), 4.0);
    assert_eq!(num(&st, "tagged"), 4.0);
    let want: BTreeSet<String> = [&a, &d, &e, &r].into_iter().cloned().collect();
    assert_eq!(members_of(&s, &t, &emea.name).await, want);
    let got = get_segment(&s, &t, &emea.name).await;
    assert_eq!(got.member_count, 4);
    assert_eq!(got.operation, first.name);
    assert!(got.refresh_time.is_some());
    assert!(tags_of(&s, &t, &a).await.contains(&"emea-list".to_string()));
    assert!(!tags_of(&s, &t, &b).await.contains(&"emea-list".to_string()));
    // The tag was written through the engine: audited as an update of the contact.
    let history = s
        .audit()
        .list_audit_records(req(
            &t,
            ListAuditRecordsRequest {
                parent: a.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        history
            .audit_records
            .iter()
            .any(|h| h.action == AuditAction::Update as i32),
        "{history:?}"
    );

    // The rep sees their own contact only among the members; may not refresh.
    let mine = members_of(&s, &rep, &emea.name).await;
    assert_eq!(mine, BTreeSet::from([r.clone()]));
    expect_code(
        s.analytics()
            .refresh_segment(req(
                &rep,
                RefreshSegmentRequest {
                    name: emea.name.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );

    // Another tenant: NOT_FOUND for the members and for a refresh.
    let o = s.token("other", Uuid::now_v7(), &["admin"]);
    expect_code(
        s.analytics()
            .list_segment_members(req(
                &o,
                ListSegmentMembersRequest {
                    segment: emea.name.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.analytics()
            .refresh_segment(req(
                &o,
                RefreshSegmentRequest {
                    name: emea.name.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );

    // Before any RFM run or lifecycle evaluation: B is gold, nobody declines.
    let op = refresh(&best.name).await;
    wait(&s, &t, &op.name).await;
    assert_eq!(
        members_of(&s, &t, &best.name).await,
        BTreeSet::from([b.clone()])
    );
    let op = refresh(&decline.name).await;
    wait(&s, &t, &op.name).await;
    assert!(members_of(&s, &t, &decline.name).await.is_empty());
    let before_best = get_segment(&s, &t, &best.name).await.operation;
    let before_decline = get_segment(&s, &t, &decline.name).await.operation;
    let before_emea = get_segment(&s, &t, &emea.name).await.operation;

    // An RFM run refreshes the segments reading RFM (A is a champion), not the others.
    run_rfm(&s, &t, "").await;
    let best_now = next_refresh(&s, &t, &best.name, &before_best).await;
    assert_eq!(best_now.member_count, 2);
    assert_eq!(
        members_of(&s, &t, &best.name).await,
        BTreeSet::from([a.clone(), b.clone()])
    );
    assert_eq!(get_segment(&s, &t, &emea.name).await.operation, before_emea);

    // A lifecycle evaluation refreshes the segments reading stages: C declines, tagged.
    s.analytics()
        .create_lifecycle_model(req(
            &t,
            CreateLifecycleModelRequest {
                lifecycle_model: Some(LifecycleModel {
                    display_name: "Relationship".into(),
                    template: "relationship".into(),
                    active: true,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let op = s
        .analytics()
        .evaluate_lifecycle(req(
            &t,
            EvaluateLifecycleRequest {
                as_of_time: Some(pts(as_of())),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    wait(&s, &t, &op.name).await;
    // Kept in the evaluation's own transactions, for the changed customers: no refresh.
    let now = get_segment(&s, &t, &decline.name).await;
    assert_eq!(now.operation, before_decline);
    assert_eq!(now.member_count, 1);
    assert_eq!(
        members_of(&s, &t, &decline.name).await,
        BTreeSet::from([c.clone()])
    );
    assert!(tags_of(&s, &t, &c).await.contains(&"winback".to_string()));
    // A year later A and B have lapsed too.
    let op = s
        .analytics()
        .evaluate_lifecycle(req(
            &t,
            EvaluateLifecycleRequest {
                as_of_time: Some(pts(at(2027, 6, 30, 0, 0))),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    wait(&s, &t, &op.name).await;
    assert_eq!(get_segment(&s, &t, &decline.name).await.member_count, 3);
    assert_eq!(
        members_of(&s, &t, &decline.name).await,
        BTreeSet::from([a.clone(), b.clone(), c.clone()])
    );
    assert!(tags_of(&s, &t, &a).await.contains(&"winback".to_string()));

    // A changed rule: those who leave lose the tag, those who enter get it; tags set by
    // hand stay.
    let current = get_segment(&s, &t, &emea.name).await;
    s.analytics()
        .update_segment(req(
            &t,
            UpdateSegmentRequest {
                segment: Some(Segment {
                    name: emea.name.clone(),
                    rule: "region = \"APAC\"".into(),
                    etag: current.etag.clone(),
                    ..Default::default()
                }),
                update_mask: crm_tests::mask(&["rule"]),
            },
        ))
        .await
        .unwrap();
    let e2 = expect_code(
        s.analytics()
            .update_segment(req(
                &t,
                UpdateSegmentRequest {
                    segment: Some(Segment {
                        name: emea.name.clone(),
                        rule: "lifecycle.phase = x".into(),
                        ..Default::default()
                    }),
                    update_mask: crm_tests::mask(&["rule"]),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e2), vec!["segment.rule".to_string()]);
    // What refreshes write is not the caller's to set.
    let e3 = expect_code(
        s.analytics()
            .update_segment(req(
                &t,
                UpdateSegmentRequest {
                    segment: Some(Segment {
                        name: emea.name.clone(),
                        member_count: 99,
                        ..Default::default()
                    }),
                    update_mask: crm_tests::mask(&["member_count"]),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e3), vec!["update_mask".to_string()]);
    let op = refresh(&emea.name).await;
    let st = op_result(&s, &t, &op.name).await;
    assert_eq!(num(&st, "entered"), 2.0);
    assert_eq!(num(&st, "left"), 4.0);
    assert_eq!(
        members_of(&s, &t, &emea.name).await,
        BTreeSet::from([b.clone(), c.clone()])
    );
    assert!(!tags_of(&s, &t, &a).await.contains(&"emea-list".to_string()));
    let c_tags = tags_of(&s, &t, &c).await;
    assert!(c_tags.contains(&"emea-list".to_string()), "{c_tags:?}");
    assert!(c_tags.contains(&"winback".to_string()), "{c_tags:?}");
    jobs.shutdown().await;
}

async fn funnel_and_cohort_reports(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("other").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    seed(&s, "acme").await;
    create_rep_role(&s, &t).await;
    let rep = s.token("acme", Uuid::now_v7(), &["rep"]);
    rep_contact(&s, &rep, "R").await;
    let funnel = |token: &str, f: FunnelReportRequest| {
        let mut c = s.analytics();
        let token = token.to_owned();
        async move {
            c.funnel_report(req(&token, f))
                .await
                .map(|r| r.into_inner())
        }
    };

    // No active model: nothing to report on.
    let e = expect_code(
        funnel(&t, FunnelReportRequest::default()).await,
        Code::FailedPrecondition,
    );
    assert_eq!(crm_tests::reason(&e), "NO_ACTIVE_LIFECYCLE_MODEL");
    let model = s
        .analytics()
        .create_lifecycle_model(req(
            &t,
            CreateLifecycleModelRequest {
                lifecycle_model: Some(LifecycleModel {
                    display_name: "Relationship".into(),
                    template: "relationship".into(),
                    active: true,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let op = s
        .analytics()
        .evaluate_lifecycle(req(
            &t,
            EvaluateLifecycleRequest {
                as_of_time: Some(pts(as_of())),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    wait(&s, &t, &op.name).await;

    // Reached: A explore, form, stable; B explore, form; C explore, form, decline; D, E
    // and R explore.
    let f = funnel(
        &t,
        FunnelReportRequest {
            include_chart: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(f.model, model.name);
    let steps: Vec<(&str, i64)> = f
        .steps
        .iter()
        .map(|s| (s.stage.as_str(), s.reached))
        .collect();
    assert_eq!(
        steps,
        vec![("explore", 6), ("form", 3), ("stable", 1), ("decline", 1)]
    );
    assert!(f.steps[0].from_previous.is_none());
    let form = &f.steps[1];
    let prev = form.from_previous.unwrap();
    assert_eq!((prev.numerator, prev.denominator), (3, 6));
    assert_eq!(prev.rate, Some(0.5));
    let first = f.steps[3].from_first.unwrap();
    assert_eq!((first.numerator, first.denominator), (1, 6));
    assert!(
        f.chart.starts_with("<svg"),
        "{}",
        &f.chart[..40.min(f.chart.len())]
    );

    // Cumulative: C's decline counts for stable too; a chosen order of stages.
    let f = funnel(
        &t,
        FunnelReportRequest {
            stages: vec![
                "explore".into(),
                "form".into(),
                "stable".into(),
                "decline".into(),
            ],
            cumulative: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let steps: Vec<i64> = f.steps.iter().map(|s| s.reached).collect();
    assert_eq!(steps, vec![6, 3, 2, 1]);
    assert!(f.chart.is_empty());

    // Bad input is named.
    let e = expect_code(
        funnel(
            &t,
            FunnelReportRequest {
                stages: vec!["explore".into(), "vip".into()],
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), vec!["stages[1]".to_string()]);
    let e = expect_code(
        funnel(
            &t,
            FunnelReportRequest {
                include_chart: true,
                chart_width: 5,
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), vec!["chart_width".to_string()]);

    // A rep counts only the contacts they may read (their own R); another tenant does not
    // find the model.
    let mine = funnel(&rep, FunnelReportRequest::default()).await.unwrap();
    let steps: Vec<i64> = mine.steps.iter().map(|s| s.reached).collect();
    assert_eq!(steps, vec![1, 0, 0, 0]);
    let o = s.token("other", Uuid::now_v7(), &["admin"]);
    expect_code(
        funnel(
            &o,
            FunnelReportRequest {
                model: model.name.clone(),
                ..Default::default()
            },
        )
        .await,
        Code::NotFound,
    );

    // Cohorts by first-purchase month (UTC): C in 2025-05 (again in 2025-12), B in
    // 2026-01, A in 2026-03 (again in May and June); refunds, cancelled, future and
    // account-only orders are no purchases.
    let cohorts = |token: &str, c: CohortReportRequest| {
        let mut cl = s.analytics();
        let token = token.to_owned();
        async move {
            cl.cohort_report(req(&token, c))
                .await
                .map(|r| r.into_inner())
        }
    };
    let r = cohorts(
        &t,
        CohortReportRequest {
            as_of_time: Some(pts(as_of())),
            include_chart: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(r.time_zone, "UTC");
    let rows: Vec<(&str, i64, Vec<i64>)> = r
        .cohorts
        .iter()
        .map(|c| (c.cohort.as_str(), c.size, c.active.clone()))
        .collect();
    let mut c_row = vec![0; 14];
    c_row[0] = 1;
    c_row[7] = 1;
    assert_eq!(
        rows,
        vec![
            ("2025-05", 1, c_row),
            ("2026-01", 1, vec![1, 0, 0, 0, 0, 0]),
            ("2026-03", 1, vec![1, 0, 1, 1]),
        ]
    );
    assert_eq!(r.cohorts[2].retention, vec![1.0, 0.0, 1.0, 1.0]);
    assert_eq!(r.cohorts[1].cohort_start_date.as_ref().unwrap().month, 1);
    assert!(r.chart.starts_with("<svg"));

    // In Berlin B's first purchase is February's; from 2026 on only.
    let r = cohorts(
        &t,
        CohortReportRequest {
            as_of_time: Some(pts(as_of())),
            start_time: Some(pts(at(2026, 1, 1, 0, 0))),
            time_zone: "Europe/Berlin".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let names: Vec<&str> = r.cohorts.iter().map(|c| c.cohort.as_str()).collect();
    assert_eq!(names, vec!["2026-02", "2026-03"]);
    let e = expect_code(
        cohorts(
            &t,
            CohortReportRequest {
                time_zone: "Atlantis/Capital".into(),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), vec!["time_zone".to_string()]);

    // The rep reads their own orders only (none); another tenant has none; a role without
    // orders may not ask.
    assert!(
        cohorts(&rep, CohortReportRequest::default())
            .await
            .unwrap()
            .cohorts
            .is_empty()
    );
    assert!(
        cohorts(&o, CohortReportRequest::default())
            .await
            .unwrap()
            .cohorts
            .is_empty()
    );
    let nobody = s.token("acme", Uuid::now_v7(), &[]);
    expect_code(
        cohorts(&nobody, CohortReportRequest::default()).await,
        Code::PermissionDenied,
    );
}

async fn the_demo_manager_builds_segments_and_the_rep_does_not(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    for r in crm_gateway::demo::roles() {
        s.admin_ctx("acme").create(r, "").await.unwrap();
    }
    let manager = s.token("acme", Uuid::now_v7(), &["manager"]);
    let rep = s.token("acme", Uuid::now_v7(), &["rep"]);
    let segment = |t: &str| {
        req(
            t,
            CreateSegmentRequest {
                segment: Some(Segment {
                    display_name: "Germany".into(),
                    rule: "region = \"DE\"".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        )
    };
    let created = s
        .analytics()
        .create_segment(segment(&manager))
        .await
        .unwrap()
        .into_inner();
    let op = s
        .analytics()
        .refresh_segment(req(
            &manager,
            RefreshSegmentRequest {
                name: created.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let done = s.wait_operation(&manager, &op.name).await;
    assert!(
        matches!(
            done.result,
            Some(crm_api::google::longrunning::operation::Result::Response(_))
        ),
        "{done:?}"
    );
    s.analytics()
        .list_lifecycle_models(req(&manager, ListLifecycleModelsRequest::default()))
        .await
        .unwrap();
    expect_code(
        s.analytics().create_segment(segment(&rep)).await,
        Code::PermissionDenied,
    );
    expect_code(
        s.analytics()
            .list_segments(req(&rep, ListSegmentsRequest::default()))
            .await,
        Code::PermissionDenied,
    );
}

/// An attempt that died after writing some results (in batches cut elsewhere than the next
/// attempt cuts them): the next attempt writes every other result, and none twice.
async fn a_retried_run_writes_each_missing_result_once(backend: Backend) {
    use crm_analytical::store::RfmResult;
    use crm_analytical::store::rfm_runs::{self, RFM_JOB, result_id};
    use crm_core::jobs::{JobContext, JobHandlers};
    let s = server_without_jobs(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let seeded = seed(&s, "acme").await;
    let op = s
        .analytics()
        .start_rfm_run(req(
            &t,
            StartRfmRunRequest {
                config: String::new(),
                period_start_time: Some(pts(period_from())),
                as_of_time: Some(pts(as_of())),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let (b, d) = (seeded.b, seeded.d);
    let mut h = JobHandlers::new();
    h.register(RFM_JOB, move |job: JobContext| async move {
        if job.attempt == 1 {
            // What an earlier attempt left: the results of two customers, then a crash.
            let payload: serde_json::Value = job.payload_as()?;
            let run = payload
                .get("run")
                .and_then(|v| v.as_str())
                .and_then(|v| Uuid::try_parse(v).ok())
                .ok_or_else(|| crm_core::error::Error::internal("no run"))?;
            let ctx = job.system_ctx(None);
            let tx = ctx.begin().await?;
            let earlier = [b, d]
                .into_iter()
                .map(|c| {
                    (
                        result_id(run, c),
                        RfmResult {
                            run: Some(run),
                            customer: Some(c),
                            ..Default::default()
                        },
                    )
                })
                .collect();
            tx.create_many_as_system(earlier).await?;
            tx.commit().await?;
            return Err(crm_core::error::Error::unavailable("the attempt died"));
        }
        rfm_runs::run_job(job).await
    })
    .unwrap();
    let r = crm_core::jobs::Runner::start(
        s.db.clone(),
        std::sync::Arc::new(crm_core::clock::SystemClock),
        h,
        crm_core::jobs::RunnerSettings {
            poll_interval: std::time::Duration::from_millis(50),
            retry_base: std::time::Duration::from_millis(100),
            ..Default::default()
        },
    );
    let done = wait(&s, &t, &op.name).await;
    r.shutdown().await;
    assert!(
        matches!(done.result, Some(lro::operation::Result::Response(_))),
        "{done:?}"
    );
    // Five contacts, five results: the two of the first attempt kept, three written now.
    assert_eq!(s.count("rfm_results", "acme").await, 5);
    let rows =
        s.db.conn
            .query_all_raw(Statement::from_string(
                s.db.conn.get_database_backend(),
                "SELECT customer_id FROM rfm_results",
            ))
            .await
            .unwrap();
    let customers: BTreeSet<Uuid> = rows
        .iter()
        .map(|r| r.try_get::<Uuid>("", "customer_id").unwrap())
        .collect();
    assert_eq!(
        customers,
        BTreeSet::from([seeded.a, seeded.b, seeded.c, seeded.d, seeded.e])
    );
}

both!(
    a_retried_run_writes_each_missing_result_once,
    the_demo_manager_builds_segments_and_the_rep_does_not,
    a_cancelled_run_is_never_read,
    rfm_runs_are_operations_with_hand_checked_results,
    configs_are_validated_and_used_by_runs,
    sales_report_by_month_and_region,
    a_run_started_twice_runs_once,
    lifecycle_models_are_validated_and_evaluated,
    segments_are_refreshed_tagged_and_kept_up_to_date,
    funnel_and_cohort_reports,
);
