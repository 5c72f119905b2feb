//! AIP-160 filters on text mean the same on SQLite and PostgreSQL: one table of filters and
//! the family names each must find, run on both databases.
//!
//! `:` is a case-insensitive contains under Unicode simple case folding with the literal
//! taken literally; `= "x*"` / `!= "x*"` is a case-sensitive prefix match.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::v1::*;
use crm_tests::{Backend, TestServer, both, req};
use uuid::Uuid;

/// `K` below is U+212A KELVIN SIGN, whose simple case folding is `k`.
const NAMES: &[&str] = &[
    "Äpfel",
    "ÉCOLE",
    "Ωmega",
    "vipGold",
    "VIPPlatinum",
    "Straße",
    "Иванов",
    "山田",
    "50%_off",
    "a.b*c",
    "ΟΔΥΣΣΕΥΣ",
    "\u{212A}elvin",
    "O'Brien",
    "back\\slash",
];

/// (filter, the family names it finds).
const CASES: &[(&str, &[&str])] = &[
    // `:` folds case in every script.
    (r#"family_name:"äpfel""#, &["Äpfel"]),
    (r#"family_name:"ÄPFEL""#, &["Äpfel"]),
    (r#"family_name:"école""#, &["ÉCOLE"]),
    (r#"family_name:"ω""#, &["Ωmega"]),
    (r#"family_name:"ИВАН""#, &["Иванов"]),
    (r#"family_name:"山""#, &["山田"]),
    (r#"family_name:"vip""#, &["VIPPlatinum", "vipGold"]),
    (r#"family_name:"OBRIEN""#, &[]),
    (r#"family_name:"o'b""#, &["O'Brien"]),
    // Simple folding: final sigma, the Kelvin sign and capital sharp s fold; ß is not "ss";
    // diacritics are not ignored.
    (r#"family_name:"ς""#, &["ΟΔΥΣΣΕΥΣ"]),
    (r#"family_name:"οδυσσευσ""#, &["ΟΔΥΣΣΕΥΣ"]),
    (r#"family_name:"KEL""#, &["\u{212A}elvin"]),
    (r#"family_name:"STRAẞE""#, &["Straße"]),
    (r#"family_name:"STRASSE""#, &[]),
    (r#"family_name:"apfel""#, &[]),
    // The literal is literal: no LIKE, GLOB or regex meaning.
    (r#"family_name:"%""#, &["50%_off"]),
    (r#"family_name:"_""#, &["50%_off"]),
    (r#"family_name:"%_O""#, &["50%_off"]),
    (r#"family_name:".""#, &["a.b*c"]),
    (r#"family_name:"*""#, &["a.b*c"]),
    (r#"family_name:"B*C""#, &["a.b*c"]),
    (r#"family_name:"a.b""#, &["a.b*c"]),
    (r#"family_name:"a?b""#, &[]),
    (r#"family_name:"[a]""#, &[]),
    (r#"family_name:"K\\S""#, &["back\\slash"]),
    (r#"family_name:"(""#, &[]),
    // Negation and OR.
    (
        r#"-family_name:"A""#,
        &[
            "50%_off",
            "O'Brien",
            "vipGold",
            "Äpfel",
            "ÉCOLE",
            "ΟΔΥΣΣΕΥΣ",
            "Иванов",
            "\u{212A}elvin",
            "山田",
        ],
    ),
    (r#"family_name:"é" OR family_name:"ä""#, &["Äpfel", "ÉCOLE"]),
    // `=` and `!=` are exact and case-sensitive.
    (r#"family_name = "山田""#, &["山田"]),
    (r#"family_name = "äpfel""#, &[]),
    (r#"family_name = "a.b*c""#, &["a.b*c"]),
    (r#"family_name = "a.b*C""#, &[]),
    // A trailing `*` makes a case-sensitive prefix match; the rest is literal.
    (r#"family_name = "VIP*""#, &["VIPPlatinum"]),
    (r#"family_name = "vip*""#, &["vipGold"]),
    (r#"family_name = "Vip*""#, &[]),
    (r#"family_name = "Ä*""#, &["Äpfel"]),
    (r#"family_name = "ä*""#, &[]),
    (r#"family_name = "K*""#, &[]),
    (r#"family_name = "a.b*""#, &["a.b*c"]),
    (r#"family_name = "a.b**""#, &["a.b*c"]),
    (r#"family_name = "a?b*""#, &[]),
    (r#"family_name = "a_b*""#, &[]),
    (r#"family_name = "50%*""#, &["50%_off"]),
    (r#"family_name = "5%*""#, &[]),
    (r#"family_name = "[5]*""#, &[]),
    (
        r#"family_name != "VIP*""#,
        &[
            "50%_off",
            "O'Brien",
            "Straße",
            "a.b*c",
            "back\\slash",
            "vipGold",
            "Äpfel",
            "ÉCOLE",
            "ΟΔΥΣΣΕΥΣ",
            "Иванов",
            "Ωmega",
            "\u{212A}elvin",
            "山田",
        ],
    ),
];

async fn family_names(s: &TestServer, t: &str, filter: &str) -> Vec<String> {
    let page = s
        .contacts()
        .list_contacts(req(
            t,
            ListContactsRequest {
                page_size: 1000,
                page_token: String::new(),
                filter: filter.into(),
                order_by: String::new(),
            },
        ))
        .await
        .unwrap_or_else(|e| panic!("{filter}: {e:?}"))
        .into_inner();
    assert!(page.next_page_token.is_empty(), "{filter}");
    let mut names: Vec<String> = page.contacts.into_iter().map(|c| c.family_name).collect();
    names.sort();
    names
}

async fn text_filters_mean_the_same_on_both_databases(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("t").await;
    let t = s.token("t", Uuid::now_v7(), &["admin"]);
    let mut c = s.contacts();
    for name in NAMES {
        c.create_contact(req(
            &t,
            CreateContactRequest {
                contact: Some(Contact {
                    family_name: (*name).into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    }
    let mut all: Vec<String> = NAMES.iter().map(|n| (*n).to_string()).collect();
    all.sort();
    assert_eq!(family_names(&s, &t, "").await, all);
    assert_eq!(family_names(&s, &t, "family_name:*").await, all);

    let mut failures = Vec::new();
    for (filter, expected) in CASES {
        let mut expected: Vec<String> = expected.iter().map(|n| (*n).to_string()).collect();
        expected.sort();
        let got = family_names(&s, &t, filter).await;
        if got != expected {
            failures.push(format!("{filter}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{backend:?}:\n{}", failures.join("\n"));

    // The longest literal a filter can hold compiles and runs on both.
    let long = format!("family_name:\"{}\"", "Ωk".repeat(2700));
    assert!(family_names(&s, &t, &long).await.is_empty());
}

both!(text_filters_mean_the_same_on_both_databases);
