//! A labelled record-linkage set, generated deterministically from a seed, and its evaluation.
//!
//! # How the set is made
//!
//! 1. **Base people and organisations.** Each base entity is drawn from built-in lists: 80 %
//!    people with Latin-script names (about 70 given names and 100 family names from English,
//!    German, French, Spanish, Nordic, Polish, Turkish, Vietnamese... usage, many with
//!    diacritics; a quarter get a middle name), 12 % people with Chinese names (30 family
//!    names, one or two given characters from 40, each with its traditional form), 8 %
//!    organisations (two-word names plus a legal form of their country). Each gets a country
//!    (DE, US, GB, FR or CN) and, with the probabilities of a real CRM export, an e-mail
//!    (80 %, unique), a phone valid for that country (80 %), a birth date (60 %), a street
//!    address with postcode and city (85 %) and a company (40 %).
//! 2. **True pairs.** Each base is written out once in a default style and once more (and a
//!    third time for 30 % of them) as a *variant* with one to three perturbations from: a
//!    typo in a name token (substitution, insertion, deletion), an adjacent transposition,
//!    given and family name swapped (fields swapped, `FAMILY, Given`, or for Chinese the
//!    given name first without a space), a nickname (`Robert` → `Bob`), a dropped middle
//!    name or a given name cut to its initial, umlauts and accents transliterated
//!    (`Müller` → `Mueller`) or dropped, upper case, full-width Latin letters and digits,
//!    traditional Chinese characters, a reformatted phone (international, compact, national
//!    with trunk prefix, `00` prefix), an upper-cased e-mail, an abbreviated street
//!    (`Straße` → `Str.`, `Street` → `St.`), a respaced postcode, another or no legal form,
//!    and, as real changes, a new e-mail or phone or a dropped field (e-mail, phone, birth
//!    date, address, company).
//! 3. **False pairs of similar but different people.** For each base one more entity that
//!    resembles it: a namesake elsewhere, a namesake in the same city, a household member
//!    (same family name, address and often phone, another given name and birth date), a
//!    father or son of the same name at the same address with the same phone (birth dates
//!    kept on both: without them the two are indistinguishable), a colleague (same company,
//!    office address and switchboard phone), a person whose family name differs by one
//!    letter, or, for organisations, a company sharing the first word of the name. These are
//!    written in a random style with random missing fields, like the variants.
//!
//! All records are put in one pool. Candidate pairs are those sharing a [blocking
//! key](super::blocking_keys) (as a database would find them); each is scored. A pair is
//! predicted a duplicate when its decision is [`Decision::Match`]. Precision is over the
//! predicted pairs; recall is over *all* pairs of records of the same entity, so a true pair
//! the blocking keys miss counts against recall. Random namesakes among the bases add
//! further hard negatives.
//!
//! This set is built from the same ideas the scorer was designed with, so it measures the
//! rules as designed; an independent set measures how well those ideas carry over.

use super::{Decision, MatchRecord, PreparedRecord, Thresholds, blocking_keys, score};
use chrono::NaiveDate;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// A small deterministic generator (SplitMix64), so the set is the same on every machine and
/// every version of every dependency.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next_u64() % u64::try_from(n).unwrap_or(u64::MAX)).unwrap_or(0)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits as a fraction in [0, 1).
        let x = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }

    /// One element of a non-empty list (the default for an empty one).
    pub fn pick<T: Copy + Default>(&mut self, xs: &[T]) -> T {
        xs.get(self.below(xs.len())).copied().unwrap_or_default()
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + u8::try_from(self.below(10)).unwrap_or(0)))
            .collect()
    }
}

const GIVEN: &[&str] = &[
    "John",
    "Michael",
    "Thomas",
    "Anna",
    "Maria",
    "Sarah",
    "David",
    "Laura",
    "Peter",
    "Julia",
    "Robert",
    "William",
    "Elizabeth",
    "Margaret",
    "Richard",
    "James",
    "Katherine",
    "Daniel",
    "Stefan",
    "Jürgen",
    "François",
    "Zoë",
    "José",
    "Søren",
    "Łukasz",
    "Chloé",
    "Andreas",
    "Sophie",
    "Lukas",
    "Emma",
    "Olivia",
    "Noah",
    "Liam",
    "Mateo",
    "Lucía",
    "Hélène",
    "Björn",
    "Ingrid",
    "Frederick",
    "Alexander",
    "Christine",
    "Patrick",
    "Susan",
    "Jennifer",
    "Henry",
    "Charles",
    "Edward",
    "Nicholas",
    "Timothy",
    "Rebecca",
    "Gregory",
    "Samuel",
    "Benjamin",
    "Victoria",
    "Dorothy",
    "Leonard",
    "Raymond",
    "Hannah",
    "Felix",
    "Paul",
    "Claire",
    "Marco",
    "Giulia",
    "Aleksandra",
    "Mehmet",
    "Ayşe",
    "Fatima",
    "Omar",
    "Priya",
    "Arjun",
];

const FAMILY: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "García",
    "Rodríguez",
    "Martínez",
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Dubois",
    "Lefèvre",
    "Moreau",
    "Laurent",
    "Bernard",
    "Rossi",
    "Russo",
    "Bianchi",
    "Kowalski",
    "Nowak",
    "Wiśniewski",
    "Jensen",
    "Nielsen",
    "Hansen",
    "Andersson",
    "Johansson",
    "O'Brien",
    "Murphy",
    "Kelly",
    "Nguyen",
    "Tran",
    "Kim",
    "Park",
    "Yılmaz",
    "Kaya",
    "Novák",
    "Horváth",
    "Costa",
    "Silva",
    "Santos",
    "Ferreira",
    "van der Berg",
    "de Jong",
    "Janssen",
    "Peeters",
    "Fernández",
    "López",
    "González",
    "Pérez",
    "Sánchez",
    "Taylor",
    "Anderson",
    "Jackson",
    "White",
    "Harris",
    "Martin",
    "Thompson",
    "Robinson",
    "Clark",
    "Lewis",
    "Walker",
    "Hall",
    "Allen",
    "Young",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
    "Adams",
    "Nelson",
    "Hill",
    "Campbell",
    "Mitchell",
    "Roberts",
    "Carter",
    "Phillips",
    "Evans",
    "Turner",
    "Torres",
    "Parker",
    "Collins",
    "Edwards",
    "Stewart",
    "Flores",
    "Morris",
    "Murray",
    "Zimmermann",
    "Krüger",
    "Schäfer",
];

/// Chinese family names: (simplified, traditional).
const CN_FAMILY: &[(&str, &str)] = &[
    ("王", "王"),
    ("李", "李"),
    ("张", "張"),
    ("刘", "劉"),
    ("陈", "陳"),
    ("杨", "楊"),
    ("黄", "黃"),
    ("赵", "趙"),
    ("吴", "吳"),
    ("周", "周"),
    ("徐", "徐"),
    ("孙", "孫"),
    ("马", "馬"),
    ("朱", "朱"),
    ("胡", "胡"),
    ("郭", "郭"),
    ("何", "何"),
    ("林", "林"),
    ("罗", "羅"),
    ("郑", "鄭"),
    ("梁", "梁"),
    ("谢", "謝"),
    ("宋", "宋"),
    ("唐", "唐"),
    ("许", "許"),
    ("韩", "韓"),
    ("冯", "馮"),
    ("邓", "鄧"),
    ("曹", "曹"),
    ("彭", "彭"),
];

/// Chinese given-name characters: (simplified, traditional).
const CN_GIVEN: &[(&str, &str)] = &[
    ("伟", "偉"),
    ("芳", "芳"),
    ("娜", "娜"),
    ("敏", "敏"),
    ("静", "靜"),
    ("丽", "麗"),
    ("强", "強"),
    ("磊", "磊"),
    ("军", "軍"),
    ("洋", "洋"),
    ("勇", "勇"),
    ("艳", "艷"),
    ("杰", "傑"),
    ("娟", "娟"),
    ("涛", "濤"),
    ("明", "明"),
    ("超", "超"),
    ("秀", "秀"),
    ("霞", "霞"),
    ("平", "平"),
    ("刚", "剛"),
    ("华", "華"),
    ("红", "紅"),
    ("东", "東"),
    ("国", "國"),
    ("龙", "龍"),
    ("凤", "鳳"),
    ("玲", "玲"),
    ("建", "建"),
    ("文", "文"),
    ("辉", "輝"),
    ("鹏", "鵬"),
    ("飞", "飛"),
    ("宇", "宇"),
    ("晓", "曉"),
    ("婷", "婷"),
    ("颖", "穎"),
    ("斌", "斌"),
    ("海", "海"),
    ("雪", "雪"),
];

const CN_CITIES: &[(&str, &str)] = &[
    ("北京", "北京"),
    ("上海", "上海"),
    ("广州", "廣州"),
    ("深圳", "深圳"),
    ("台北", "臺北"),
    ("天津", "天津"),
];
const CN_STREETS: &[(&str, &str)] = &[
    ("建国路", "建國路"),
    ("中山路", "中山路"),
    ("人民路", "人民路"),
    ("解放路", "解放路"),
    ("长安街", "長安街"),
];
const CN_COMPANIES: &[(&str, &str)] = &[
    ("华为技术", "華為技術"),
    ("腾讯科技", "騰訊科技"),
    ("联想电脑", "聯想電腦"),
    ("海尔电器", "海爾電器"),
    ("比亚迪汽车", "比亞迪汽車"),
    ("长城电子", "長城電子"),
];
const CN_LEGAL: &[(&str, &str)] = &[("有限公司", "有限公司"), ("股份有限公司", "股份有限公司")];

const ORG_FIRST: &[&str] = &[
    "Alpine",
    "Nordic",
    "Global",
    "Atlas",
    "Summit",
    "Pioneer",
    "Horizon",
    "Vertex",
    "Blue River",
    "Silverline",
    "Granite",
    "Cedar",
    "Meridian",
    "Orion",
    "Falcon",
];
const ORG_SECOND: &[&str] = &[
    "Logistics",
    "Systems",
    "Foods",
    "Consulting",
    "Maschinenbau",
    "Textiles",
    "Software",
    "Pharma",
    "Energy",
    "Trading",
    "Optics",
    "Robotics",
    "Media",
    "Insurance",
    "Materials",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Country {
    #[default]
    De,
    Us,
    Gb,
    Fr,
    Cn,
}

impl Country {
    fn code(self) -> &'static str {
        match self {
            Self::De => "DE",
            Self::Us => "US",
            Self::Gb => "GB",
            Self::Fr => "FR",
            Self::Cn => "CN",
        }
    }
    fn cities(self) -> &'static [&'static str] {
        match self {
            Self::De => &[
                "Berlin",
                "München",
                "Hamburg",
                "Köln",
                "Frankfurt am Main",
                "Düsseldorf",
                "Leipzig",
            ],
            Self::Us => &[
                "New York",
                "Chicago",
                "Boston",
                "San Francisco",
                "Seattle",
                "Austin",
            ],
            Self::Gb => &["London", "Manchester", "Leeds", "Bristol", "Edinburgh"],
            Self::Fr => &["Paris", "Lyon", "Marseille", "Toulouse", "Nice"],
            Self::Cn => &[],
        }
    }
    fn streets(self) -> &'static [&'static str] {
        match self {
            Self::De => &[
                "Hauptstraße",
                "Bahnhofstraße",
                "Schillerstraße",
                "Goethestraße",
                "Gartenweg",
                "Lindenallee",
                "Kirchplatz",
            ],
            Self::Us => &[
                "Main Street",
                "Oak Avenue",
                "Maple Road",
                "Park Place",
                "Washington Boulevard",
                "Elm Street",
                "Lake Drive",
            ],
            Self::Gb => &[
                "High Street",
                "Church Road",
                "Station Road",
                "Victoria Road",
                "Green Lane",
            ],
            Self::Fr => &[
                "rue de la Paix",
                "avenue Victor Hugo",
                "boulevard Saint-Michel",
                "rue du Moulin",
                "chemin des Vignes",
            ],
            Self::Cn => &[],
        }
    }
    fn legal_forms(self) -> &'static [&'static str] {
        match self {
            Self::De => &["GmbH", "AG", "GmbH & Co. KG"],
            Self::Us => &["Inc.", "LLC", "Corp."],
            Self::Gb => &["Ltd", "Limited", "PLC"],
            Self::Fr => &["SA", "SARL", "S.A.S."],
            Self::Cn => &[],
        }
    }
    fn latin() -> [Self; 4] {
        [Self::De, Self::Us, Self::Gb, Self::Fr]
    }
}

/// A phone as country code, national significant number and trunk prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Phone {
    cc: &'static str,
    national: String,
    trunk: &'static str,
}

impl Phone {
    fn random(country: Country, rng: &mut SplitMix) -> Self {
        match country {
            Country::De => {
                let area = rng.pick(&["30", "40", "89", "69"]);
                Self {
                    cc: "49",
                    national: format!("{area}{}", rng.digits(8)),
                    trunk: "0",
                }
            }
            Country::Us => {
                let area = rng.pick(&["212", "312", "617", "415", "206", "512"]);
                let exch = 2 + rng.below(8);
                Self {
                    cc: "1",
                    national: format!("{area}{exch}{}", rng.digits(6)),
                    trunk: "",
                }
            }
            Country::Gb => Self {
                cc: "44",
                national: format!("207{}", rng.digits(7)),
                trunk: "0",
            },
            Country::Fr => Self {
                cc: "33",
                national: format!("1{}", rng.digits(8)),
                trunk: "0",
            },
            Country::Cn => {
                let pre = rng.pick(&["138", "139", "186", "158", "135"]);
                Self {
                    cc: "86",
                    national: format!("{pre}{}", rng.digits(8)),
                    trunk: "",
                }
            }
        }
    }

    fn render(&self, style: usize) -> String {
        let spaced = |s: &str| {
            let cs: Vec<char> = s.chars().collect();
            cs.chunks(3)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join(" ")
        };
        match style % 5 {
            0 => format!("+{} {}", self.cc, spaced(&self.national)),
            1 => format!("+{}{}", self.cc, self.national),
            2 => format!("{}{}", self.trunk, self.national),
            3 if self.cc != "1" => format!("00{} {}", self.cc, self.national),
            _ => format!("+{}-{}", self.cc, spaced(&self.national).replace(' ', "-")),
        }
    }
}

/// The truth about one entity.
#[derive(Debug, Clone, Default)]
struct Entity {
    org: bool,
    cjk: bool,
    given: String,
    given_t: String,
    middle: Option<String>,
    family: String,
    family_t: String,
    email: Option<String>,
    phone: Option<Phone>,
    birth: Option<NaiveDate>,
    country: Country,
    street: String,
    street_t: String,
    number: u32,
    postcode: String,
    city: String,
    city_t: String,
    company: Option<(String, String, &'static str)>,
}

/// How an entity is written out, and what was changed.
#[derive(Debug, Clone, Default)]
struct Style {
    layout: usize,
    upper: bool,
    fullwidth: bool,
    traditional: bool,
    translit: usize,
    nickname: bool,
    initial: bool,
    drop_middle: bool,
    phone_fmt: usize,
    email_upper: bool,
    street_abbrev: bool,
    postcode_fmt: usize,
    legal_variant: usize,
    typo: usize,
    transpose: usize,
    drop: [bool; 5],
}

/// Where a record of the set came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A base entity in its default style.
    Base,
    /// A perturbed copy of a base entity (same entity).
    Variant,
    /// A similar but different entity.
    HardNegative,
}

/// One record of the set with its entity (the ground truth).
#[derive(Debug, Clone)]
pub struct LabelledRecord {
    /// Records with the same entity are duplicates of each other.
    pub entity: u32,
    /// How the record was made.
    pub origin: Origin,
    /// The record.
    pub record: MatchRecord,
}

/// A generated set.
#[derive(Debug, Clone, Default)]
pub struct LabelledSet {
    /// All records.
    pub records: Vec<LabelledRecord>,
}

fn random_date(rng: &mut SplitMix, from_year: i32, years: usize) -> Option<NaiveDate> {
    let y = from_year + i32::try_from(rng.below(years)).unwrap_or(0);
    let m = u32::try_from(1 + rng.below(12)).unwrap_or(1);
    let d = u32::try_from(1 + rng.below(28)).unwrap_or(1);
    NaiveDate::from_ymd_opt(y, m, d)
}

fn ascii_fold(s: &str) -> String {
    crate::normalize::fold(s)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

struct Generator {
    rng: SplitMix,
    emails: HashSet<String>,
}

impl Generator {
    fn unique_email(&mut self, local: &str, domain: &str) -> String {
        let mut e = format!("{local}@{domain}");
        while self.emails.contains(&e) {
            e = format!("{local}{}@{domain}", self.rng.below(1000));
        }
        self.emails.insert(e.clone());
        e
    }

    fn person_email(&mut self, p: &Entity) -> String {
        let rng = &mut self.rng;
        if p.cjk {
            let local = format!("user{}", rng.digits(6));
            let domain = rng.pick(&["163.com", "qq.com", "126.com"]);
            return self.unique_email(&local, domain);
        }
        let g = ascii_fold(&p.given);
        let f = ascii_fold(&p.family);
        let local = match rng.below(4) {
            0 => format!("{g}.{f}"),
            1 => format!("{}{f}", g.chars().next().unwrap_or('x')),
            2 => format!("{g}{}", rng.digits(2)),
            _ => format!("{f}.{g}{}", rng.digits(2)),
        };
        let domain = if let Some((core, _, _)) = &p.company {
            format!("{}.com", ascii_fold(core))
        } else {
            rng.pick(&[
                "gmail.com",
                "yahoo.com",
                "outlook.com",
                "web.de",
                "gmx.de",
                "orange.fr",
            ])
            .to_owned()
        };
        self.unique_email(&local, &domain)
    }

    fn address(&mut self, p: &mut Entity) {
        let rng = &mut self.rng;
        p.number = u32::try_from(1 + rng.below(150)).unwrap_or(1);
        match p.country {
            Country::Cn => {
                let (s, t) = rng.pick(CN_STREETS);
                let (c, ct) = rng.pick(CN_CITIES);
                (p.street, p.street_t, p.city, p.city_t) =
                    (s.into(), t.into(), c.into(), ct.into());
                p.postcode = rng.digits(6);
            }
            c => {
                p.street = rng.pick(c.streets()).to_owned();
                p.street_t = p.street.clone();
                p.city = rng.pick(c.cities()).to_owned();
                p.city_t = p.city.clone();
                p.postcode = if c == Country::Gb {
                    let l = |r: &mut SplitMix| {
                        char::from(b'A' + u8::try_from(r.below(26)).unwrap_or(0))
                    };
                    format!(
                        "{}{}{} {}{}{}",
                        l(&mut *rng),
                        l(&mut *rng),
                        rng.below(10),
                        rng.below(10),
                        l(&mut *rng),
                        l(&mut *rng)
                    )
                } else {
                    rng.digits(5)
                };
            }
        }
    }

    fn company(&mut self, country: Country) -> (String, String, &'static str) {
        let rng = &mut self.rng;
        if country == Country::Cn {
            let (s, t) = rng.pick(CN_COMPANIES);
            let (l, _) = rng.pick(CN_LEGAL);
            (s.to_owned(), t.to_owned(), l)
        } else {
            let name = format!("{} {}", rng.pick(ORG_FIRST), rng.pick(ORG_SECOND));
            (name.clone(), name, rng.pick(country.legal_forms()))
        }
    }

    fn fresh_name(&mut self, p: &mut Entity) {
        let rng = &mut self.rng;
        if p.cjk {
            let (f, ft) = rng.pick(CN_FAMILY);
            let n = if rng.chance(0.3) { 1 } else { 2 };
            let (mut g, mut gt) = (String::new(), String::new());
            for _ in 0..n {
                let (c, ct) = rng.pick(CN_GIVEN);
                g.push_str(c);
                gt.push_str(ct);
            }
            (p.family, p.family_t, p.given, p.given_t) = (f.into(), ft.into(), g, gt);
            p.middle = None;
        } else {
            p.given = rng.pick(GIVEN).to_owned();
            p.given_t = p.given.clone();
            p.family = rng.pick(FAMILY).to_owned();
            p.family_t = p.family.clone();
            p.middle = if rng.chance(0.25) {
                Some(rng.pick(GIVEN).to_owned())
            } else {
                None
            };
        }
    }

    fn entity(&mut self) -> Entity {
        let mut p = Entity::default();
        let roll = self.rng.below(100);
        p.org = roll >= 92;
        p.cjk = (80..92).contains(&roll);
        p.country = if p.cjk {
            Country::Cn
        } else {
            self.rng.pick(&Country::latin())
        };
        if p.org {
            let c = self.company(p.country);
            p.company = Some(c);
        } else {
            self.fresh_name(&mut p);
            if self.rng.chance(0.4) {
                p.company = Some(self.company(p.country));
            }
            if self.rng.chance(0.6) {
                p.birth = random_date(&mut self.rng, 1945, 60);
            }
        }
        if self.rng.chance(0.85) || p.org {
            self.address(&mut p);
        }
        if self.rng.chance(0.8) {
            p.phone = Some(Phone::random(p.country, &mut self.rng));
        }
        if self.rng.chance(0.8) {
            p.email = Some(if p.org {
                let core = p
                    .company
                    .as_ref()
                    .map(|c| ascii_fold(&c.0))
                    .unwrap_or_default();
                let core = if core.is_empty() {
                    format!("org{}", self.rng.digits(5))
                } else {
                    core
                };
                self.unique_email("info", &format!("{core}.com"))
            } else {
                self.person_email(&p)
            });
        }
        p
    }

    /// A random style with `changes` perturbations.
    fn variant_style(&mut self, p: &Entity, changes: usize) -> Style {
        let rng = &mut self.rng;
        let mut st = Style {
            phone_fmt: rng.below(5),
            postcode_fmt: rng.below(2),
            ..Style::default()
        };
        for _ in 0..changes {
            match rng.below(if p.org { 8 } else { 16 }) {
                0 => st.typo += 1,
                1 => st.transpose += 1,
                2 => st.upper = true,
                3 => st.fullwidth = true,
                4 => st.email_upper = true,
                5 => st.street_abbrev = true,
                6 => st.legal_variant = 1 + rng.below(3),
                7 => {
                    let i = rng.below(5);
                    if let Some(d) = st.drop.get_mut(i) {
                        *d = true;
                    }
                }
                8 => st.layout = 1 + rng.below(3),
                9 => st.nickname = true,
                10 => st.drop_middle = true,
                11 => st.initial = true,
                12 => st.translit = 1 + rng.below(2),
                13 => st.traditional = true,
                14 => st.layout = 3,
                _ => st.traditional = p.cjk,
            }
        }
        if p.cjk && rng.chance(0.5) {
            st.traditional = true;
        }
        st
    }

    fn render(&mut self, p: &Entity, st: &Style) -> MatchRecord {
        let rng = &mut self.rng;
        let trad = st.traditional && p.cjk;
        let mut r = MatchRecord {
            country: p.country.code().to_owned(),
            ..MatchRecord::default()
        };
        if !p.org {
            let mut given = if trad {
                p.given_t.clone()
            } else {
                p.given.clone()
            };
            let family = if trad {
                p.family_t.clone()
            } else {
                p.family.clone()
            };
            if st.nickname && !p.cjk {
                let folded = crate::normalize::fold(&given);
                let group = crate::normalize::nicknames::GROUPS
                    .iter()
                    .find(|g| g.first() == Some(&folded.as_str()));
                if let Some(g) = group
                    && g.len() > 1
                {
                    let nick = g
                        .get(1 + rng.below(g.len() - 1))
                        .copied()
                        .unwrap_or(folded.as_str());
                    let mut cs = nick.chars();
                    given = cs
                        .next()
                        .map(|c| c.to_uppercase().chain(cs).collect())
                        .unwrap_or_default();
                }
            }
            if st.initial && !p.cjk {
                given = format!("{}.", given.chars().next().unwrap_or('X'));
            }
            let mut given_full = given.clone();
            if let Some(m) = &p.middle
                && !st.drop_middle
            {
                given_full = format!("{given} {m}");
            }
            let (mut g, mut f) = (given_full, family);
            for _ in 0..st.typo {
                if rng.chance(0.5) {
                    g = typo(&g, rng)
                } else {
                    f = typo(&f, rng)
                }
            }
            for _ in 0..st.transpose {
                if rng.chance(0.5) {
                    g = transpose(&g, rng)
                } else {
                    f = transpose(&f, rng)
                }
            }
            if st.translit > 0 {
                g = transliterate(&g, st.translit == 1);
                f = transliterate(&f, st.translit == 1);
            }
            if st.upper {
                f = f.to_uppercase();
            }
            match (st.layout, p.cjk) {
                (0, _) => (r.given_name, r.family_name) = (g, f),
                (1, true) => r.full_name = format!("{f}{g}"),
                (1, false) => r.full_name = format!("{g} {f}"),
                (2, true) => r.full_name = format!("{g} {f}"),
                (2, false) => r.full_name = format!("{f}, {g}"),
                (_, true) => r.full_name = format!("{g}{f}"),
                (_, false) => (r.given_name, r.family_name) = (f, g),
            }
        }
        if let Some((s, t, legal)) = &p.company
            && (!st.drop[4] || p.org)
        {
            let core = if trad { t } else { s };
            let legal = if p.country == Country::Cn {
                (*legal).to_owned()
            } else {
                match st.legal_variant {
                    0 => (*legal).to_owned(),
                    1 => String::new(),
                    2 => legal.to_uppercase().replace('.', ""),
                    _ => rng.pick(p.country.legal_forms()).to_owned(),
                }
            };
            let mut name = format!("{core} {legal}").trim().to_owned();
            if p.cjk || p.country == Country::Cn {
                name = name.replace(' ', "");
            }
            if p.org {
                for _ in 0..st.typo {
                    name = typo(&name, rng);
                }
                for _ in 0..st.transpose {
                    name = transpose(&name, rng);
                }
                if st.upper {
                    name = name.to_uppercase();
                }
            }
            r.company = name;
        }
        if let Some(e) = &p.email
            && !st.drop[0]
        {
            r.emails.push(if st.email_upper {
                e.to_uppercase()
            } else {
                e.clone()
            });
        }
        if let Some(ph) = &p.phone
            && !st.drop[1]
        {
            r.phones.push(ph.render(st.phone_fmt));
        }
        if !st.drop[2] {
            r.birth_date = p.birth;
        }
        if !p.street.is_empty() && !st.drop[3] {
            let street = if trad { &p.street_t } else { &p.street };
            r.street = match p.country {
                Country::Cn => format!("{street}{}{}", p.number, if trad { "號" } else { "号" }),
                Country::De => {
                    let s = if st.street_abbrev {
                        street.replace("straße", "str.")
                    } else {
                        street.clone()
                    };
                    format!("{s} {}", p.number)
                }
                Country::Fr => format!("{}, {street}", p.number),
                _ => {
                    let s = if st.street_abbrev {
                        street
                            .replace("Street", "St.")
                            .replace("Avenue", "Ave")
                            .replace("Road", "Rd")
                    } else {
                        street.clone()
                    };
                    format!("{} {s}", p.number)
                }
            };
            r.postcode = if st.postcode_fmt == 1 && p.country == Country::Gb {
                p.postcode.replace(' ', "")
            } else if st.postcode_fmt == 1 {
                format!(" {} ", p.postcode)
            } else {
                p.postcode.clone()
            };
            r.city = if trad {
                p.city_t.clone()
            } else {
                p.city.clone()
            };
            if st.upper {
                r.city = r.city.to_uppercase();
            }
        }
        if st.fullwidth {
            r.given_name = fullwidth(&r.given_name);
            r.family_name = fullwidth(&r.family_name);
            r.full_name = fullwidth(&r.full_name);
            r.phones = r.phones.iter().map(|p| fullwidth(p)).collect();
            r.postcode = fullwidth(&r.postcode);
        }
        r
    }

    /// A different entity resembling `p`; true when its birth date must be kept.
    fn hard_negative(&mut self, p: &Entity) -> (Entity, bool) {
        let mut q = self.entity();
        q.org = p.org;
        q.cjk = p.cjk;
        q.country = p.country;
        // Country-dependent parts follow the new country.
        if !q.street.is_empty() || q.org {
            self.address(&mut q);
        }
        if q.phone.is_some() {
            q.phone = Some(Phone::random(q.country, &mut self.rng));
        }
        if q.company.is_some() {
            q.company = Some(self.company(q.country));
        }
        if p.org {
            // A company sharing the first word of the name (or another Chinese one).
            if let Some((s, _, l)) = &p.company {
                let name = if p.country == Country::Cn {
                    let mut c = self.rng.pick(CN_COMPANIES);
                    for _ in 0..20 {
                        if c.0 != s.as_str() {
                            break;
                        }
                        c = self.rng.pick(CN_COMPANIES);
                    }
                    (c.0.to_owned(), c.1.to_owned(), *l)
                } else {
                    let first = s.split(' ').next().unwrap_or(s).to_owned();
                    let mut second = self.rng.pick(ORG_SECOND);
                    for _ in 0..20 {
                        if !s.ends_with(second) {
                            break;
                        }
                        second = self.rng.pick(ORG_SECOND);
                    }
                    let n = format!("{first} {second}");
                    (n.clone(), n, *l)
                };
                q.company = Some(name);
            }
            q.given.clear();
            q.family.clear();
            q.middle = None;
            q.birth = None;
            if self.rng.chance(0.5) {
                q.city = p.city.clone();
                q.city_t = p.city_t.clone();
            }
            return (q, false);
        }
        self.fresh_name(&mut q);
        let mut keep_birth = false;
        let same_name = |q: &mut Entity| {
            (q.given, q.given_t, q.family, q.family_t) = (
                p.given.clone(),
                p.given_t.clone(),
                p.family.clone(),
                p.family_t.clone(),
            );
        };
        match self.rng.below(7) {
            0 => same_name(&mut q),
            1 => {
                same_name(&mut q);
                q.city = p.city.clone();
                q.city_t = p.city_t.clone();
            }
            2 | 3 => {
                // Household member: same family name and address, another given name.
                for _ in 0..20 {
                    if !crate::normalize::nicknames::related(
                        &crate::normalize::fold(&q.given),
                        &crate::normalize::fold(&p.given),
                    ) {
                        break;
                    }
                    self.fresh_name(&mut q);
                }
                (q.family, q.family_t) = (p.family.clone(), p.family_t.clone());
                copy_address(p, &mut q);
                if self.rng.chance(0.7) {
                    q.phone = p.phone.clone();
                }
            }
            4 if p.birth.is_some() => {
                // Father or son of the same name, same address and phone.
                same_name(&mut q);
                q.middle = p.middle.clone();
                copy_address(p, &mut q);
                q.phone = p.phone.clone();
                let years = 22 + i32::try_from(self.rng.below(15)).unwrap_or(0);
                let sign = if self.rng.chance(0.5) { 1 } else { -1 };
                let month = 1 + u32::try_from(self.rng.below(12)).unwrap_or(0);
                let day = 1 + u32::try_from(self.rng.below(28)).unwrap_or(0);
                q.birth = p.birth.and_then(|b| {
                    NaiveDate::from_ymd_opt(chrono::Datelike::year(&b) + sign * years, month, day)
                });
                keep_birth = true;
            }
            5 if p.company.is_some() => {
                // Colleague: same company, office and switchboard.
                q.company = p.company.clone();
                copy_address(p, &mut q);
                if self.rng.chance(0.5) {
                    q.phone = p.phone.clone();
                }
            }
            _ => {
                // The same given name, a family name one letter away, elsewhere.
                (q.given, q.given_t) = (p.given.clone(), p.given_t.clone());
                if p.cjk {
                    let mut c = self.rng.pick(CN_FAMILY);
                    for _ in 0..20 {
                        if c.0 != p.family.as_str() {
                            break;
                        }
                        c = self.rng.pick(CN_FAMILY);
                    }
                    (q.family, q.family_t) = (c.0.into(), c.1.into());
                } else {
                    let mut f = typo(&p.family, &mut self.rng);
                    for _ in 0..20 {
                        if crate::normalize::fold(&f) != crate::normalize::fold(&p.family) {
                            break;
                        }
                        f = typo(&p.family, &mut self.rng);
                    }
                    (q.family_t, q.family) = (f.clone(), f);
                }
            }
        }
        if q.email.is_some() {
            q.email = Some(self.person_email(&q));
        }
        (q, keep_birth)
    }
}

fn copy_address(p: &Entity, q: &mut Entity) {
    q.street = p.street.clone();
    q.street_t = p.street_t.clone();
    q.number = p.number;
    q.postcode = p.postcode.clone();
    q.city = p.city.clone();
    q.city_t = p.city_t.clone();
}

/// One typo in a name: a letter replaced, inserted or deleted, never the first.
fn typo(s: &str, rng: &mut SplitMix) -> String {
    let cs: Vec<char> = s.chars().collect();
    let letters: Vec<usize> = (1..cs.len())
        .filter(|&i| cs.get(i).is_some_and(|c| c.is_alphabetic()))
        .collect();
    if letters.is_empty() || crate::normalize::has_cjk(s) {
        return s.to_owned();
    }
    let at = rng.pick(&letters);
    let letter = char::from(b'a' + u8::try_from(rng.below(26)).unwrap_or(0));
    let mut out = cs;
    match rng.below(3) {
        0 => {
            if let Some(c) = out.get_mut(at) {
                *c = letter;
            }
        }
        1 => out.insert(at, letter),
        _ => {
            out.remove(at);
        }
    }
    out.into_iter().collect()
}

/// Two adjacent letters swapped, never the first.
fn transpose(s: &str, rng: &mut SplitMix) -> String {
    let mut cs: Vec<char> = s.chars().collect();
    let spots: Vec<usize> = (1..cs.len().saturating_sub(1))
        .filter(|&i| {
            cs.get(i).is_some_and(|c| c.is_alphabetic())
                && cs.get(i + 1).is_some_and(|c| c.is_alphabetic())
                && cs.get(i) != cs.get(i + 1)
        })
        .collect();
    if spots.is_empty() || crate::normalize::has_cjk(s) {
        return s.to_owned();
    }
    let at = rng.pick(&spots);
    cs.swap(at, at + 1);
    cs.into_iter().collect()
}

/// Umlauts and accents written out the German way (`ü` → `ue`) or dropped (`é` → `e`).
fn transliterate(s: &str, german: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let rep: Option<&str> = match c {
            'ä' if german => Some("ae"),
            'ö' if german => Some("oe"),
            'ü' if german => Some("ue"),
            'Ä' if german => Some("Ae"),
            'Ö' if german => Some("Oe"),
            'Ü' if german => Some("Ue"),
            'ä' | 'á' | 'à' | 'â' | 'å' => Some("a"),
            'ö' | 'ó' | 'ò' | 'ô' | 'ø' => Some("o"),
            'ü' | 'ú' | 'ù' | 'û' => Some("u"),
            'é' | 'è' | 'ê' | 'ë' => Some("e"),
            'í' | 'ì' | 'î' | 'ï' | 'ı' => Some("i"),
            'ñ' => Some("n"),
            'ç' => Some("c"),
            'ś' | 'ş' => Some("s"),
            'ł' => Some("l"),
            'ß' => Some("ss"),
            _ => None,
        };
        match rep {
            Some(r) => out.push_str(r),
            None => out.push(c),
        }
    }
    out
}

/// ASCII letters, digits and punctuation in their full-width forms; space as U+3000.
fn fullwidth(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ' ' => '\u{3000}',
            '!'..='~' => char::from_u32(u32::from(c) + 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .collect()
}

/// Generates a set from `bases` base entities. The same seed gives the same set.
pub fn generate(seed: u64, bases: usize) -> LabelledSet {
    let mut g = Generator {
        rng: SplitMix::new(seed),
        emails: HashSet::new(),
    };
    let mut records = Vec::new();
    let mut next_entity: u32 = 0;
    for _ in 0..bases {
        let p = g.entity();
        let id = next_entity;
        next_entity += 1;
        let base = g.render(&p, &Style::default());
        records.push(LabelledRecord {
            entity: id,
            origin: Origin::Base,
            record: base,
        });
        let copies = if g.rng.chance(0.3) { 2 } else { 1 };
        for _ in 0..copies {
            let changes = 1 + g.rng.below(3);
            let st = g.variant_style(&p, changes);
            // Real changes: the person has a new e-mail address or phone number.
            let mut pv = p.clone();
            if pv.email.is_some() && g.rng.chance(0.06) {
                pv.email = Some(if pv.org {
                    let local = format!("sales{}", g.rng.digits(3));
                    g.unique_email(&local, "example.com")
                } else {
                    g.person_email(&p)
                });
            }
            if pv.phone.is_some() && g.rng.chance(0.06) {
                pv.phone = Some(Phone::random(pv.country, &mut g.rng));
            }
            let v = g.render(&pv, &st);
            records.push(LabelledRecord {
                entity: id,
                origin: Origin::Variant,
                record: v,
            });
        }
        let (q, keep_birth) = g.hard_negative(&p);
        let changes = g.rng.below(2);
        let mut st = g.variant_style(&q, changes);
        st.typo = 0;
        st.transpose = 0;
        if keep_birth {
            st.drop[2] = false;
        }
        let n = g.render(&q, &st);
        records.push(LabelledRecord {
            entity: next_entity,
            origin: Origin::HardNegative,
            record: n,
        });
        next_entity += 1;
    }
    LabelledSet { records }
}

/// Precision and recall of a set under thresholds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quality {
    /// Records in the set.
    pub records: usize,
    /// Pairs of records of the same entity.
    pub true_pairs: usize,
    /// Pairs sharing at least one blocking key.
    pub candidate_pairs: usize,
    /// True pairs sharing at least one blocking key.
    pub blocked_true_pairs: usize,
    /// Predicted matches of the same entity.
    pub true_positives: usize,
    /// Predicted matches of different entities.
    pub false_positives: usize,
    /// True pairs not predicted (missed by blocking or scored below the match threshold).
    pub false_negatives: usize,
    /// Pairs decided `Possible` that are true pairs.
    pub possible_true: usize,
    /// Pairs decided `Possible` that are not.
    pub possible_false: usize,
}

impl Quality {
    /// TP / (TP + FP); 1 when nothing was predicted.
    pub fn precision(&self) -> f64 {
        let p = self.true_positives + self.false_positives;
        if p == 0 {
            1.0
        } else {
            self.true_positives as f64 / p as f64
        }
    }

    /// TP / true pairs; 1 when there are none.
    pub fn recall(&self) -> f64 {
        if self.true_pairs == 0 {
            1.0
        } else {
            self.true_positives as f64 / self.true_pairs as f64
        }
    }

    /// Share of true pairs that share a blocking key.
    pub fn blocking_recall(&self) -> f64 {
        if self.true_pairs == 0 {
            1.0
        } else {
            self.blocked_true_pairs as f64 / self.true_pairs as f64
        }
    }
}

/// Blocks, scores and counts a set (see the module documentation).
pub fn evaluate(set: &LabelledSet, thresholds: &Thresholds) -> Quality {
    let prepared: Vec<PreparedRecord> = set
        .records
        .iter()
        .map(|r| PreparedRecord::new(&r.record))
        .collect();
    let mut blocks: BTreeMap<super::BlockingKey, Vec<usize>> = BTreeMap::new();
    for (i, p) in prepared.iter().enumerate() {
        for k in blocking_keys(p) {
            blocks.entry(k).or_default().push(i);
        }
    }
    let mut candidates: BTreeSet<(usize, usize)> = BTreeSet::new();
    for members in blocks.values() {
        for (x, &i) in members.iter().enumerate() {
            for &j in members.iter().skip(x + 1) {
                candidates.insert((i.min(j), i.max(j)));
            }
        }
    }
    let mut by_entity: BTreeMap<u32, usize> = BTreeMap::new();
    for r in &set.records {
        *by_entity.entry(r.entity).or_default() += 1;
    }
    let true_pairs = by_entity
        .values()
        .map(|n| n * n.saturating_sub(1) / 2)
        .sum();
    let mut q = Quality {
        records: set.records.len(),
        true_pairs,
        candidate_pairs: candidates.len(),
        ..Quality::default()
    };
    for &(i, j) in &candidates {
        let (Some(a), Some(b), Some(ra), Some(rb)) = (
            prepared.get(i),
            prepared.get(j),
            set.records.get(i),
            set.records.get(j),
        ) else {
            continue;
        };
        let same = ra.entity == rb.entity;
        if same {
            q.blocked_true_pairs += 1;
        }
        match score(a, b, thresholds).decision {
            Decision::Match if same => q.true_positives += 1,
            Decision::Match => q.false_positives += 1,
            Decision::Possible if same => q.possible_true += 1,
            Decision::Possible => q.possible_false += 1,
            Decision::NoMatch => {}
        }
    }
    q.false_negatives = q.true_pairs.saturating_sub(q.true_positives);
    q
}
