//! `crm demo`: a realistic tenant to try the API on, written through the same use cases as
//! the API (so every row has its audit record and outbox event).

use crate::config::Settings;
use crm_core::access::{Action, FieldAccess, FieldRule, Grant, Scope};
use crm_core::clock::{Clock, SystemClock};
use crm_core::db::Db;
use crm_core::error::Error;
use crm_core::ids::new_id;
use crm_core::model::{
    self, Account, Contact, Email, Order, OrderLine, Phone, Position, PostalAddress,
};
use crm_core::resource::Resource;
use crm_core::service::Ctx;
use crm_core::tenant;
use futures::stream::{self, StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::IsTerminal;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub accounts: usize,
    pub contacts: usize,
    pub products: usize,
    pub orders: usize,
    pub users: usize,
}

/// What the demo created that the caller needs.
pub struct Loaded {
    pub tenant: String,
    pub admin: Uuid,
    pub manager: Uuid,
    pub rep: Uuid,
}

impl Loaded {
    /// (role, user, token) for admin, manager and rep.
    pub fn tokens(&self, s: &Settings) -> Result<Vec<(&'static str, Uuid, String)>, String> {
        [
            ("admin", self.admin),
            ("manager", self.manager),
            ("rep", self.rep),
        ]
        .into_iter()
        .map(|(role, user)| {
            let p = crm_core::auth::Principal {
                tenant: self.tenant.clone(),
                user,
                roles: vec![role.to_owned()],
            };
            crm_core::auth::mint_hs256(
                s.auth.hs256_secret.as_bytes(),
                &s.auth.issuer,
                &s.auth.audience,
                &p,
                chrono::Utc::now().timestamp(),
                7 * 86_400,
            )
            .map(|t| (role, user, t))
            .map_err(|e| e.message)
        })
        .collect()
    }
}

const REGIONS: &[(&str, &str)] = &[
    ("DE", "EMEA"),
    ("FR", "EMEA"),
    ("GB", "EMEA"),
    ("JP", "APAC"),
    ("CN", "APAC"),
    ("KR", "APAC"),
    ("US", "AMER"),
    ("BR", "AMER"),
];
const INDUSTRIES: &[&str] = &[
    "manufacturing",
    "retail",
    "healthcare",
    "energy",
    "logistics",
    "software",
    "construction",
    "food",
];
const TAGS: &[&str] = &[
    "vip",
    "newsletter",
    "key-account",
    "partner",
    "prospect",
    "event-2026",
];
const LATIN_GIVEN: &[&str] = &[
    "Anna", "Lukas", "Marie", "Jonas", "Sophie", "Elias", "Emma", "Paul", "Olivia", "Noah",
    "Chloé", "Hugo", "James", "Amelia",
];
const LATIN_FAMILY: &[&str] = &[
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Martin",
    "Bernard",
    "Dubois",
    "Smith",
    "Jones",
    "Taylor",
    "Silva",
    "Santos",
];
const CJK_GIVEN: &[&str] = &["太郎", "花子", "翔", "美咲", "伟", "芳", "민준", "서연"];
const CJK_FAMILY: &[&str] = &["山田", "佐藤", "鈴木", "王", "李", "张", "김", "이"];
const COMPANY: &[&str] = &[
    "Alpen", "Nordic", "Sakura", "Pacific", "Atlas", "Rhein", "Lumière", "Orion", "Hanse", "Kiku",
    "Andes", "Delta",
];
const COMPANY_KIND: &[&str] = &[
    "Werke",
    "GmbH",
    "Industries",
    "Trading",
    "株式会社",
    "Logistics",
    "SA",
    "Holdings",
];
const TITLES: &[&str] = &[
    "Purchasing Manager",
    "CTO",
    "Head of Operations",
    "Buyer",
    "Engineer",
    "CEO",
    "Plant Manager",
    "部長",
];

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn progress(label: &str, total: usize) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(label.to_owned());
    bar
}

/// Rows written per transaction. Each row still gets its own checks, audit record and event.
const BATCH: usize = 250;

/// The first accounts may be parents of later ones.
const PARENTS: usize = 20;

/// Writes `items` through the create use case in batches, with bounded concurrency, showing
/// progress.
async fn create_all<R: Resource>(
    ctx: &Ctx,
    label: &str,
    items: Vec<(Uuid, R)>,
    concurrency: usize,
) -> Result<(), String> {
    let bar = progress(label, items.len());
    let total = items.len();
    let mut rest = items.into_iter();
    let batches = std::iter::from_fn(|| {
        let batch: Vec<(Uuid, R)> = rest.by_ref().take(BATCH).collect();
        (!batch.is_empty()).then_some(batch)
    });
    let done = std::sync::atomic::AtomicUsize::new(0);
    let next_log = std::sync::atomic::AtomicUsize::new(total / 10);
    stream::iter(batches)
        .map(|batch| {
            let (bar, done, next_log) = (bar.clone(), &done, &next_log);
            async move {
                let n = ctx
                    .create_many(batch)
                    .await
                    .map_err(|e: Error| format!("{label}: {e}"))?;
                bar.inc(n as u64);
                let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                if bar.is_hidden() && d >= next_log.load(std::sync::atomic::Ordering::Relaxed) {
                    next_log.fetch_add((total / 10).max(1), std::sync::atomic::Ordering::Relaxed);
                    tracing::info!("{label}: {d}/{total}");
                }
                Ok::<(), String>(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_for_each(|()| async { Ok(()) })
        .await?;
    bar.finish();
    Ok(())
}

fn rights(collection: &str, actions: &[Action], scope: Scope) -> Grant {
    Grant {
        collection: collection.into(),
        actions: actions.to_vec(),
        scope,
    }
}

/// The demo tenant's `manager` and `rep` roles (besides the built-in `admin`).
pub fn roles() -> Vec<model::Role> {
    use Action::*;
    let rw = [Read, Create, Update];
    vec![
        model::Role {
            key: "manager".into(),
            display_name: "Sales manager".into(),
            grants: vec![
                rights("accounts", &[Read, Create, Update, Delete], Scope::Subtree),
                rights("contacts", &[Read, Create, Update, Delete], Scope::Subtree),
                rights("orders", &[Read, Create, Update, Delete], Scope::Subtree),
                rights("leads", &[Read, Create, Update, Delete], Scope::Subtree),
                rights("leads", &[Read], Scope::Territory),
                rights(
                    "activities",
                    &[Read, Create, Update, Delete],
                    Scope::Subtree,
                ),
                rights(
                    "interactions",
                    &[Read, Create, Update, Delete],
                    Scope::Subtree,
                ),
                rights("cases", &[Read, Create, Update, Delete], Scope::Subtree),
                // The consent ledger of their people (K7): read and recorded, never changed.
                rights("consents", &[Read, Create], Scope::Subtree),
                rights("slaPolicySets", &[Read], Scope::All),
                rights("assignmentRuleSets", &[Read], Scope::All),
                rights("leadGradingPolicies", &[Read], Scope::All),
                rights("leadDuplicatePolicies", &[Read], Scope::All),
                rights("leadCapturePolicies", &[Read], Scope::All),
                // Customer lifecycle and the segments campaigns are sent to.
                rights("lifecycleModels", &[Read], Scope::All),
                rights("segments", &rw, Scope::All),
                rights("recordMerges", &[Read, Create, Update], Scope::All),
                rights("duplicatePairs", &[Read, Create], Scope::All),
                // Imports of leads, contacts and accounts, and the files they read.
                rights("importUploads", &rw, Scope::Subtree),
                rights("imports", &rw, Scope::Subtree),
                rights("accounts", &[Read], Scope::Territory),
                rights("contacts", &[Read], Scope::Territory),
                rights("products", &[Read], Scope::All),
                rights("productGroups", &[Read], Scope::All),
                rights("users", &[Read], Scope::All),
                rights("teams", &[Read], Scope::All),
                rights("territories", &[Read], Scope::All),
                rights("customFieldDefinitions", &[Read], Scope::All),
            ],
            field_rules: vec![],
        },
        model::Role {
            key: "rep".into(),
            display_name: "Sales representative".into(),
            grants: vec![
                rights("accounts", &rw, Scope::Own),
                rights("contacts", &rw, Scope::Own),
                rights("orders", &rw, Scope::Own),
                rights("leads", &rw, Scope::Own),
                rights("activities", &[Read, Create, Update, Delete], Scope::Own),
                rights("opportunities", &rw, Scope::Own),
                rights("interactions", &rw, Scope::Own),
                rights("cases", &rw, Scope::Own),
                rights("consents", &[Read, Create], Scope::Own),
                rights("slaPolicySets", &[Read], Scope::All),
                // Their own imports (of the leads, contacts and accounts they may create).
                rights("importUploads", &rw, Scope::Own),
                rights("imports", &rw, Scope::Own),
                rights("products", &[Read], Scope::All),
                rights("productGroups", &[Read], Scope::All),
                rights("users", &[Read], Scope::All),
                rights("teams", &[Read], Scope::All),
                rights("territories", &[Read], Scope::All),
                rights("customFieldDefinitions", &[Read], Scope::All),
            ],
            field_rules: vec![
                FieldRule {
                    collection: "contacts".into(),
                    field: "phones".into(),
                    access: FieldAccess::Hidden,
                },
                FieldRule {
                    collection: "contacts".into(),
                    field: "birth_date".into(),
                    access: FieldAccess::Hidden,
                },
                FieldRule {
                    collection: "accounts".into(),
                    field: "owner".into(),
                    access: FieldAccess::ReadOnly,
                },
                FieldRule {
                    collection: "contacts".into(),
                    field: "owner".into(),
                    access: FieldAccess::ReadOnly,
                },
            ],
        },
    ]
}

/// Creates the tenant and fills it.
pub async fn load(
    db: &Db,
    tenant_id: &str,
    sizes: Sizes,
    concurrency: usize,
    seed: u64,
) -> Result<Loaded, String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    tenant::create(
        db,
        clock.as_ref(),
        tenant_id,
        &format!("{tenant_id} (demo data)"),
    )
    .await
    .map_err(|e| e.message)?;
    let ctx = tenant::system_ctx(db, tenant_id, clock.clone());
    let conc = if db.backend() == sea_orm::DbBackend::Sqlite {
        1
    } else {
        concurrency
    };
    let mut rng = StdRng::seed_from_u64(seed);
    for r in roles() {
        ctx.create(r, "").await.map_err(|e| e.message)?;
    }

    // Territories: World > EMEA/APAC/AMER > countries.
    let world = new_id();
    let mut territories = vec![(
        world,
        model::Territory {
            display_name: "World".into(),
            parent: None,
            regions: vec![],
        },
    )];
    let mut macro_ids = std::collections::HashMap::new();
    for m in ["EMEA", "APAC", "AMER"] {
        let id = new_id();
        macro_ids.insert(m, id);
        territories.push((
            id,
            model::Territory {
                display_name: m.into(),
                parent: Some(world),
                regions: vec![],
            },
        ));
    }
    let mut country_territory = std::collections::HashMap::new();
    for (code, m) in REGIONS {
        let id = new_id();
        country_territory.insert(*code, id);
        territories.push((
            id,
            model::Territory {
                display_name: (*code).into(),
                parent: macro_ids.get(m).copied(),
                regions: vec![(*code).to_lowercase()],
            },
        ));
    }
    create_all(&ctx, "territories", territories, 1).await?;

    // Users first without teams (teams reference their lead), then teams, then memberships.
    let head = new_id();
    let team_names = ["Team EMEA", "Team APAC", "Team AMER", "Key Accounts"];
    let team_ids: Vec<Uuid> = team_names.iter().map(|_| new_id()).collect();
    let manager_ids: Vec<Uuid> = team_names.iter().map(|_| new_id()).collect();
    let mut users = vec![(
        head,
        model::User {
            display_name: "Hanna Vogel".into(),
            email: "hanna.vogel@demo.example".into(),
            territories: vec![world],
            skills: vec!["german".into(), "english".into()],
            capacity: 0,
            active: true,
            ..Default::default()
        },
    )];
    for (i, m) in manager_ids.iter().enumerate() {
        let macro_region = ["EMEA", "APAC", "AMER", "EMEA"][i];
        users.push((
            *m,
            model::User {
                display_name: format!(
                    "{} {}",
                    pick(&mut rng, LATIN_GIVEN),
                    pick(&mut rng, LATIN_FAMILY)
                ),
                email: format!("manager{}@demo.example", i + 1),
                manager: Some(head),
                territories: macro_ids.get(macro_region).copied().into_iter().collect(),
                skills: vec!["english".into()],
                capacity: 0,
                active: true,
                ..Default::default()
            },
        ));
    }
    let mut reps: Vec<(Uuid, usize, &str)> = Vec::new();
    for i in 0..sizes.users.saturating_sub(1 + manager_ids.len()) {
        let team = i % team_names.len();
        let (code, _) = REGIONS[i % REGIONS.len()];
        let id = new_id();
        reps.push((id, team, code));
        users.push((
            id,
            model::User {
                display_name: format!(
                    "{} {}",
                    pick(&mut rng, LATIN_GIVEN),
                    pick(&mut rng, LATIN_FAMILY)
                ),
                email: format!("rep{}@demo.example", i + 1),
                manager: manager_ids.get(team).copied(),
                territories: country_territory.get(code).copied().into_iter().collect(),
                skills: vec![
                    pick(&mut rng, &["german", "japanese", "french", "english"]).to_string(),
                ],
                capacity: rng.random_range(20..60),
                active: true,
                ..Default::default()
            },
        ));
    }
    create_all(&ctx, "users", users, 1).await?;
    let teams: Vec<(Uuid, model::Team)> = team_names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                team_ids[i],
                model::Team {
                    display_name: (*n).into(),
                    parent: None,
                    lead: manager_ids.get(i).copied(),
                },
            )
        })
        .collect();
    create_all(&ctx, "teams", teams, 1).await?;
    let mask = vec!["teams".to_string()];
    for (i, m) in manager_ids.iter().enumerate() {
        let patch = model::User {
            teams: vec![team_ids[i]],
            ..Default::default()
        };
        ctx.update(*m, patch, &mask, "")
            .await
            .map_err(|e| e.message)?;
    }
    for (id, team, _) in &reps {
        let patch = model::User {
            teams: vec![team_ids[*team]],
            ..Default::default()
        };
        ctx.update(*id, patch, &mask, "")
            .await
            .map_err(|e| e.message)?;
    }

    // Products.
    let mut groups = Vec::new();
    let mut leaf_groups = Vec::new();
    for root in ["Machines", "Spare parts", "Services"] {
        let rid = new_id();
        groups.push((
            rid,
            model::ProductGroup {
                display_name: root.into(),
                parent: None,
            },
        ));
        for sub in ["Standard", "Premium"] {
            let id = new_id();
            leaf_groups.push(id);
            groups.push((
                id,
                model::ProductGroup {
                    display_name: format!("{root} / {sub}"),
                    parent: Some(rid),
                },
            ));
        }
    }
    create_all(&ctx, "groups", groups, 1).await?;
    let products: Vec<(Uuid, model::Product)> = (0..sizes.products)
        .map(|i| {
            (
                new_id(),
                model::Product {
                    sku: format!("SKU-{:05}", i + 1),
                    display_name: format!(
                        "{} {}",
                        pick(
                            &mut rng,
                            &["Pump", "Valve", "Motor", "Sensor", "Gear", "Service plan"]
                        ),
                        i + 1
                    ),
                    product_group: Some(*pick(&mut rng, &leaf_groups)),
                    currency_code: "EUR".into(),
                    list_price: rng.random_range(1_000..5_000_000),
                    active: rng.random_bool(0.95),
                },
            )
        })
        .collect();
    let prices: Vec<(Uuid, i64)> = products.iter().map(|(id, p)| (*id, p.list_price)).collect();
    create_all(&ctx, "products", products, conc).await?;

    // Accounts, owned by reps, in their territory.
    let mut account_ids: Vec<(Uuid, Uuid, Option<Uuid>)> = Vec::with_capacity(sizes.accounts);
    let mut accounts: Vec<(Uuid, Account)> = Vec::with_capacity(sizes.accounts);
    for i in 0..sizes.accounts {
        let (owner, _, code) = *pick(&mut rng, &reps);
        let territory = country_territory.get(code).copied();
        let id = new_id();
        let parent = (i >= PARENTS && rng.random_bool(0.1))
            .then(|| account_ids[rng.random_range(0..PARENTS)].0);
        account_ids.push((id, owner, territory));
        accounts.push((
            id,
            Account {
                display_name: format!(
                    "{} {} {}",
                    pick(&mut rng, COMPANY),
                    pick(&mut rng, COMPANY_KIND),
                    i + 1
                ),
                industry: pick(&mut rng, INDUSTRIES).to_string(),
                region: code.into(),
                employee_count: rng.random_range(5..50_000),
                parent,
                owner: Some(owner),
                territory,
                website: format!("https://account{}.example", i + 1),
                addresses: vec![PostalAddress {
                    label: "head office".into(),
                    region_code: code.into(),
                    locality: "City".into(),
                    ..Default::default()
                }],
                tags: if rng.random_bool(0.2) {
                    vec![pick(&mut rng, TAGS).to_string()]
                } else {
                    vec![]
                },
                ..Default::default()
            },
        ));
    }
    // Parents (among the first accounts) are written before the accounts that point at them.
    let children = accounts.split_off(accounts.len().min(PARENTS));
    create_all(&ctx, "accounts", accounts, 1).await?;
    create_all(&ctx, "accounts", children, conc).await?;

    // Contacts with their positions.
    let mut contacts = Vec::with_capacity(sizes.contacts);
    let mut positions = Vec::with_capacity(sizes.contacts * 3 / 2);
    let mut contact_ids = Vec::with_capacity(sizes.contacts);
    for i in 0..sizes.contacts.min(if account_ids.is_empty() {
        sizes.contacts
    } else {
        usize::MAX
    }) {
        let (owner, _, code) = *pick(&mut rng, &reps);
        let cjk = ["JP", "CN", "KR"].contains(&code);
        let (given, family) = if cjk {
            (
                pick(&mut rng, CJK_GIVEN).to_string(),
                pick(&mut rng, CJK_FAMILY).to_string(),
            )
        } else {
            (
                pick(&mut rng, LATIN_GIVEN).to_string(),
                pick(&mut rng, LATIN_FAMILY).to_string(),
            )
        };
        let phone = match code {
            "DE" => format!("+49 30 {}", rng.random_range(1_000_000..9_999_999)),
            "JP" => format!(
                "+81 3 {} {}",
                rng.random_range(1000..9999),
                rng.random_range(1000..9999)
            ),
            "US" => format!("+1 212 555 {:04}", rng.random_range(100..9999)),
            "FR" => format!(
                "+33 1 {} {} {} {}",
                rng.random_range(10..99),
                rng.random_range(10..99),
                rng.random_range(10..99),
                rng.random_range(10..99)
            ),
            _ => format!("+44 20 7946 {:04}", rng.random_range(0..999)),
        };
        let id = new_id();
        contact_ids.push((id, owner));
        let mut tags: Vec<String> = Vec::new();
        for t in TAGS {
            if rng.random_bool(0.15) {
                tags.push((*t).to_string());
            }
        }
        contacts.push((
            id,
            Contact {
                given_name: given,
                family_name: family,
                phones: vec![Phone {
                    number: phone,
                    label: "work".into(),
                    extension: String::new(),
                }],
                emails: vec![Email {
                    address: format!("contact{}@mail{}.example", i + 1, i % 97),
                    label: "work".into(),
                }],
                birth_date: chrono::NaiveDate::from_ymd_opt(
                    rng.random_range(1950..2003),
                    rng.random_range(1..13),
                    rng.random_range(1..29),
                ),
                region: code.into(),
                tags,
                owner: Some(owner),
                territory: country_territory.get(code).copied(),
                ..Default::default()
            },
        ));
        if !account_ids.is_empty() {
            let (current, _, _) = *pick(&mut rng, &account_ids);
            let start = chrono::NaiveDate::from_ymd_opt(
                rng.random_range(2015..2024),
                rng.random_range(1..13),
                1,
            );
            if rng.random_bool(0.3) {
                let (previous, _, _) = *pick(&mut rng, &account_ids);
                positions.push((
                    new_id(),
                    Position {
                        contact: Some(id),
                        account: Some(previous),
                        title: pick(&mut rng, TITLES).to_string(),
                        role: "purchasing".into(),
                        start_date: chrono::NaiveDate::from_ymd_opt(2010, 1, 1),
                        end_date: start,
                    },
                ));
            }
            positions.push((
                new_id(),
                Position {
                    contact: Some(id),
                    account: Some(current),
                    title: pick(&mut rng, TITLES).to_string(),
                    role: pick(&mut rng, &["purchasing", "engineering", "management"]).to_string(),
                    start_date: start,
                    end_date: None,
                },
            ));
        }
    }
    create_all(&ctx, "contacts", contacts, conc).await?;
    create_all(&ctx, "positions", positions, conc).await?;

    // Orders over the last two years.
    let now = clock.now();
    let mut orders = Vec::with_capacity(sizes.orders);
    if !account_ids.is_empty() && !prices.is_empty() {
        for _ in 0..sizes.orders {
            let (account, owner, territory) = *pick(&mut rng, &account_ids);
            let n = rng.random_range(1..4);
            let lines = (0..n)
                .map(|_| {
                    let (product, price) = *pick(&mut rng, &prices);
                    OrderLine {
                        product: Some(product),
                        quantity: rng.random_range(1..20),
                        unit_price: price,
                        discount: 0,
                        amount: 0,
                    }
                })
                .collect();
            orders.push((
                new_id(),
                Order {
                    account: Some(account),
                    contact: contact_ids
                        .get(rng.random_range(0..contact_ids.len().max(1)))
                        .map(|c| c.0),
                    order_time: Some(
                        now - chrono::Duration::minutes(rng.random_range(0..2 * 365 * 24 * 60)),
                    ),
                    channel: *pick(
                        &mut rng,
                        &[
                            model::SalesChannel::Direct,
                            model::SalesChannel::Online,
                            model::SalesChannel::Retail,
                            model::SalesChannel::Partner,
                            model::SalesChannel::Phone,
                        ],
                    ),
                    status: *pick(
                        &mut rng,
                        &[
                            model::OrderStatus::Open,
                            model::OrderStatus::Fulfilled,
                            model::OrderStatus::Fulfilled,
                            model::OrderStatus::Fulfilled,
                            model::OrderStatus::Cancelled,
                        ],
                    ),
                    currency_code: "EUR".into(),
                    lines,
                    owner: Some(owner),
                    territory,
                    ..Default::default()
                },
            ));
        }
    }
    create_all(&ctx, "orders", orders, conc).await?;

    // Fresh planner statistics for every table (the load also wrote audit records, events
    // and the domain crates' derived keys), so the first queries after it do not take a plan
    // made for the empty tables (autovacuum would get there minutes later).
    db.analyze_all()
        .await
        .map_err(|e| format!("analyze after the load: {e}"))?;

    Ok(Loaded {
        tenant: tenant_id.to_owned(),
        admin: head,
        manager: manager_ids.first().copied().unwrap_or(head),
        rep: reps.first().map(|r| r.0).unwrap_or(head),
    })
}
