use super::labelled::{evaluate, generate};
use super::*;
use proptest::prelude::*;

fn prep(r: MatchRecord) -> PreparedRecord {
    PreparedRecord::new(&r)
}

fn person(given: &str, family: &str) -> MatchRecord {
    MatchRecord {
        given_name: given.into(),
        family_name: family.into(),
        ..MatchRecord::default()
    }
}

#[test]
fn same_person_written_differently_matches() {
    let a = prep(MatchRecord {
        emails: vec!["robert.mueller@example.com".into()],
        phones: vec!["+49 30 12345678".into()],
        street: "Hauptstraße 12".into(),
        postcode: "10115".into(),
        city: "Berlin".into(),
        country: "DE".into(),
        company: "Müller Maschinenbau GmbH".into(),
        ..person("Robert", "Müller")
    });
    let b = prep(MatchRecord {
        full_name: "MUELLER, Bob".into(),
        emails: vec!["Robert.Mueller@EXAMPLE.com".into()],
        phones: vec!["030 1234 5678".into()],
        street: "Hauptstr. 12".into(),
        postcode: "10115".into(),
        city: "BERLIN".into(),
        country: "DE".into(),
        company: "Müller Maschinenbau".into(),
        ..MatchRecord::default()
    });
    let s = score(&a, &b, &Thresholds::default());
    assert_eq!(s.decision, Decision::Match, "{s:#?}");
    let fields: Vec<MatchField> = s.evidence.iter().map(|e| e.field).collect();
    assert_eq!(
        fields,
        vec![
            MatchField::Name,
            MatchField::Company,
            MatchField::Email,
            MatchField::Phone,
            MatchField::Street,
            MatchField::Postcode,
            MatchField::City
        ]
    );
    assert!(s.evidence.iter().all(|e| e.weight > 0.0), "{s:#?}");
}

#[test]
fn cjk_scripts_and_width_match() {
    let a = prep(MatchRecord {
        full_name: "陳大文".into(),
        phones: vec!["+86 138 1234 5678".into()],
        city: "臺北市".into(),
        ..MatchRecord::default()
    });
    let b = prep(MatchRecord {
        given_name: "大文".into(),
        family_name: "陈".into(),
        phones: vec!["１３８ １２３４ ５６７８".into()],
        country: "CN".into(),
        city: "台北".into(),
        ..MatchRecord::default()
    });
    let s = score(&a, &b, &Thresholds::default());
    assert_eq!(s.decision, Decision::Match, "{s:#?}");
}

#[test]
fn household_members_and_namesakes_do_not_match() {
    let home = MatchRecord {
        phones: vec!["+49 30 12345678".into()],
        street: "Hauptstraße 12".into(),
        postcode: "10115".into(),
        city: "Berlin".into(),
        ..MatchRecord::default()
    };
    let anna = prep(MatchRecord {
        birth_date: chrono::NaiveDate::from_ymd_opt(1970, 1, 2),
        ..person("Anna", "Schmidt").with_address(&home)
    });
    let thomas = prep(MatchRecord {
        birth_date: chrono::NaiveDate::from_ymd_opt(1968, 5, 17),
        ..person("Thomas", "Schmidt").with_address(&home)
    });
    assert_eq!(
        score(&anna, &thomas, &Thresholds::default()).decision,
        Decision::NoMatch
    );
    let namesake = prep(MatchRecord {
        city: "Hamburg".into(),
        postcode: "20095".into(),
        emails: vec!["a.schmidt@web.de".into()],
        ..person("Anna", "Schmidt")
    });
    let anna2 = prep(MatchRecord {
        emails: vec!["anna@schmidt.de".into()],
        ..person("Anna", "Schmidt").with_address(&home)
    });
    assert_eq!(
        score(&anna2, &namesake, &Thresholds::default()).decision,
        Decision::NoMatch
    );
}

impl MatchRecord {
    fn with_address(mut self, other: &MatchRecord) -> Self {
        self.phones = other.phones.clone();
        self.street = other.street.clone();
        self.postcode = other.postcode.clone();
        self.city = other.city.clone();
        self
    }
}

#[test]
fn accounts_compare_company_names() {
    let a = prep(MatchRecord {
        company: "Acme Corp.".into(),
        city: "Boston".into(),
        phones: vec!["+1 617 253 1000".into()],
        ..MatchRecord::default()
    });
    let b = prep(MatchRecord {
        company: "ACME Corporation".into(),
        city: "Boston".into(),
        phones: vec!["(617) 253-1000".into()],
        country: "US".into(),
        ..MatchRecord::default()
    });
    let s = score(&a, &b, &Thresholds::default());
    assert_eq!(s.decision, Decision::Match, "{s:#?}");
    let c = prep(MatchRecord {
        company: "Acme Logistics Inc.".into(),
        city: "Boston".into(),
        ..MatchRecord::default()
    });
    assert_ne!(
        score(&a, &c, &Thresholds::default()).decision,
        Decision::Match
    );
}

#[test]
fn thresholds_and_policy_validate() {
    assert!(Thresholds::default().validate().is_ok());
    let bad = Thresholds {
        match_at: 0.4,
        possible_at: 0.6,
    };
    let errs = bad.validate().err().unwrap_or_default();
    assert_eq!(errs.first().map(|e| e.field.as_str()), Some("possible_at"));
    let bad = DuplicatePolicy {
        thresholds: Thresholds {
            match_at: 1.5,
            possible_at: 0.5,
        },
        ..DuplicatePolicy::default()
    };
    let errs = bad.validate().err().unwrap_or_default();
    assert_eq!(
        errs.first().map(|e| e.field.as_str()),
        Some("thresholds.match_at")
    );
    let mut policy = DuplicatePolicy::default();
    policy
        .on_match_by_source
        .insert("import".into(), DuplicateAction::Merge);
    assert_eq!(
        policy.action("import", Decision::Match),
        DuplicateAction::Merge
    );
    assert_eq!(policy.action("web", Decision::Match), DuplicateAction::Flag);
    assert_eq!(
        policy.action("import", Decision::Possible),
        DuplicateAction::Flag
    );
}

/// The quality bar of issue O2 on the generated set (see [`labelled`]).
#[test]
fn labelled_set_precision_and_recall() {
    let set = generate(20_261_124, 1500);
    let again = generate(20_261_124, 1500);
    assert_eq!(
        set.records.iter().map(|r| &r.record).collect::<Vec<_>>(),
        again.records.iter().map(|r| &r.record).collect::<Vec<_>>(),
        "the set is deterministic"
    );
    let q = evaluate(&set, &Thresholds::default());
    eprintln!(
        "labelled set: {q:?}\nprecision {:.4} recall {:.4} blocking recall {:.4}",
        q.precision(),
        q.recall(),
        q.blocking_recall()
    );
    assert!(q.precision() >= 0.98, "precision {}", q.precision());
    assert!(q.recall() >= 0.95, "recall {}", q.recall());
}

fn arb_record() -> impl Strategy<Value = MatchRecord> {
    let name = prop::sample::select(vec![
        "",
        "John",
        "Jon",
        "Smith",
        "Smiht",
        "Müller",
        "Mueller",
        "Bob",
        "Robert",
        "陳大文",
        "陈大文",
        "大文",
        "陈",
        "Ｊｏｈｎ",
        "J.",
    ]);
    let phone = prop::sample::select(vec![
        "",
        "+49 30 12345678",
        "030 12345678",
        "+1 617 253 1000",
    ]);
    let email = prop::sample::select(vec!["", "a@b.com", "A@B.com", "x@y.org"]);
    let city = prop::sample::select(vec!["", "Berlin", "BERLIN", "北京市", "Boston"]);
    (
        (name.clone(), name.clone(), name, ".{0,12}"),
        (phone, email, city, "[0-9 ]{0,6}", "[A-Za-z ß.]{0,14}"),
        prop::option::of((1950i32..2000, 1u32..13, 1u32..29)),
    )
        .prop_map(
            |((g, f, full, company), (ph, em, city, pc, street), birth)| MatchRecord {
                given_name: g.into(),
                family_name: f.into(),
                full_name: full.into(),
                company,
                emails: vec![em.into()],
                phones: vec![ph.into()],
                street,
                postcode: pc,
                city: city.into(),
                country: "DE".into(),
                birth_date: birth.and_then(|(y, m, d)| chrono::NaiveDate::from_ymd_opt(y, m, d)),
            },
        )
}

proptest! {
    #[test]
    fn matching_is_symmetric_and_bounded(a in arb_record(), b in arb_record()) {
        let (pa, pb) = (prep(a), prep(b));
        let t = Thresholds::default();
        let ab = score(&pa, &pb, &t);
        let ba = score(&pb, &pa, &t);
        prop_assert!((0.0..=1.0).contains(&ab.score));
        prop_assert_eq!(ab.score.to_bits(), ba.score.to_bits());
        prop_assert_eq!(ab.decision, ba.decision);
        for (x, y) in ab.evidence.iter().zip(ba.evidence.iter()) {
            prop_assert_eq!(x.field, y.field);
            prop_assert!((0.0..=1.0).contains(&x.similarity));
            prop_assert_eq!(x.similarity.to_bits(), y.similarity.to_bits());
        }
        // A record matches itself.
        let aa = score(&pa, &pa, &t);
        prop_assert!(aa.evidence.iter().all(|e| e.similarity == 1.0), "{:?}", aa);
    }

    #[test]
    fn blocking_keys_are_deterministic(a in arb_record()) {
        let p = prep(a);
        prop_assert_eq!(blocking_keys(&p), blocking_keys(&p.clone()));
    }
}
