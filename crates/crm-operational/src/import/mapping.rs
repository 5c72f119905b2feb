//! Column mappings: proposed from the header and a sample of rows, validated, and applied
//! to rows to build the JSON object of a lead, contact or account.
//!
//! Field names are the resources' JSON field names: `given_name`, `company`, `phones`
//! (each cell a `{"number": ...}`), `emails` (`{"address": ...}`), `address.locality` for a
//! lead's address and `addresses.locality` for the (first) address of a contact or account,
//! and `custom.<key>` for a tenant's custom field `<key>` (stored under `custom_fields` as a
//! text value; [`typed_custom_value`] converts it once the field's type is known).
//!
//! Proposals match header names case-, space-, accent- and punctuation-insensitively
//! against English, Chinese, German, French, Spanish and Japanese synonyms ("E-Mail",
//! "邮箱", "Telefon", "Firma", "名", "姓"...); a column whose header says nothing is sniffed
//! from its sample values (e-mail addresses, phone numbers, dates).

use super::{ImportError, RawRow};
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// What the rows are imported as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetKind {
    /// Leads (`crm_operational::lead::Lead`).
    Lead,
    /// Contacts (`crm_core::model::contact::Contact`).
    Contact,
    /// Accounts (`crm_core::model::account::Account`).
    Account,
}

/// How a target field takes its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// One text value.
    Text,
    /// A list: several columns may map to it, and a cell may hold several values.
    List,
    /// A whole number (`employee_count`).
    Integer,
    /// A date, written `YYYY-MM-DD` (`birth_date`).
    Date,
    /// A tenant custom field (`custom.<key>`).
    Custom,
}

impl TargetKind {
    /// The collection the records go to (`leads`, `contacts`, `accounts`).
    pub fn collection(self) -> &'static str {
        match self {
            Self::Lead => "leads",
            Self::Contact => "contacts",
            Self::Account => "accounts",
        }
    }

    /// The fields a column may map to (custom fields aside).
    pub fn fields(self) -> &'static [(&'static str, FieldKind)] {
        use FieldKind::{Date, Integer, List, Text};
        match self {
            Self::Lead => &[
                ("given_name", Text),
                ("family_name", Text),
                ("display_name", Text),
                ("company", Text),
                ("title", Text),
                ("phones", List),
                ("emails", List),
                ("address.lines", List),
                ("address.locality", Text),
                ("address.postal_code", Text),
                ("address.region_code", Text),
                ("address.administrative_area", Text),
                ("industry", Text),
                ("region", Text),
                ("source", Text),
                ("campaign", Text),
                ("notes", Text),
                ("employee_count", Integer),
                ("tags", List),
            ],
            Self::Contact => &[
                ("given_name", Text),
                ("family_name", Text),
                ("display_name", Text),
                ("phones", List),
                ("emails", List),
                ("addresses.lines", List),
                ("addresses.locality", Text),
                ("addresses.postal_code", Text),
                ("addresses.region_code", Text),
                ("addresses.administrative_area", Text),
                ("birth_date", Date),
                ("region", Text),
                ("tags", List),
            ],
            Self::Account => &[
                ("display_name", Text),
                ("industry", Text),
                ("region", Text),
                ("employee_count", Integer),
                ("website", Text),
                ("addresses.lines", List),
                ("addresses.locality", Text),
                ("addresses.postal_code", Text),
                ("addresses.region_code", Text),
                ("addresses.administrative_area", Text),
                ("tags", List),
            ],
        }
    }

    /// How `field` takes its cells, `None` when the target has no such field.
    pub fn field_kind(self, field: &str) -> Option<FieldKind> {
        if let Some(key) = field.strip_prefix("custom.") {
            return is_custom_key(key).then_some(FieldKind::Custom);
        }
        self.fields()
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, kind)| *kind)
    }

    /// The target field of a concept, if the target has it.
    fn field_of(self, concept: Concept) -> Option<&'static str> {
        use Concept as C;
        let addr = |lead: &'static str, other: &'static str| {
            Some(if self == Self::Lead { lead } else { other })
        };
        match (concept, self) {
            (C::GivenName, Self::Lead | Self::Contact) => Some("given_name"),
            (C::FamilyName, Self::Lead | Self::Contact) => Some("family_name"),
            (C::FullName, _) => Some("display_name"),
            (C::Company, Self::Lead) => Some("company"),
            (C::Company, Self::Account) => Some("display_name"),
            (C::Title, Self::Lead) => Some("title"),
            (C::Phone, Self::Lead | Self::Contact) => Some("phones"),
            (C::Email, Self::Lead | Self::Contact) => Some("emails"),
            (C::Street, _) => addr("address.lines", "addresses.lines"),
            (C::City, _) => addr("address.locality", "addresses.locality"),
            (C::PostalCode, _) => addr("address.postal_code", "addresses.postal_code"),
            (C::Country, _) => addr("address.region_code", "addresses.region_code"),
            (C::State, _) => addr(
                "address.administrative_area",
                "addresses.administrative_area",
            ),
            (C::Industry, Self::Lead | Self::Account) => Some("industry"),
            (C::Region, _) => Some("region"),
            (C::Source, Self::Lead) => Some("source"),
            (C::Campaign, Self::Lead) => Some("campaign"),
            (C::Notes, Self::Lead) => Some("notes"),
            (C::BirthDate, Self::Contact) => Some("birth_date"),
            (C::Employees, Self::Lead | Self::Account) => Some("employee_count"),
            (C::Website, Self::Account) => Some("website"),
            (C::Tags, _) => Some("tags"),
            _ => None,
        }
    }
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.collection())
    }
}

/// What a header can mean, whatever the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Concept {
    GivenName,
    FamilyName,
    FullName,
    Company,
    Title,
    Phone,
    Email,
    Street,
    City,
    PostalCode,
    Country,
    State,
    Industry,
    Region,
    Source,
    Campaign,
    Notes,
    BirthDate,
    Employees,
    Website,
    Tags,
}

/// Header synonyms by concept (normalised when compared).
#[rustfmt::skip]
const SYNONYMS: &[(Concept, &[&str])] = &[
    (Concept::GivenName, &[
        "first name", "given name", "forename", "firstname", "first", "vorname", "prénom",
        "nombre", "nome", "名", "名字", "下の名前", "ファーストネーム", "名（カナ）",
    ]),
    (Concept::FamilyName, &[
        "last name", "family name", "surname", "lastname", "last", "nachname", "familienname",
        "nom de famille", "nom", "apellido", "apellidos", "cognome", "姓", "姓氏", "苗字", "ラストネーム",
        "姓（カナ）",
    ]),
    (Concept::FullName, &[
        "name", "full name", "contact name", "contact", "display name", "person", "lead name",
        "vollständiger name", "ansprechpartner", "nom complet", "nombre completo", "姓名", "联系人",
        "联系人姓名", "客户姓名", "名称", "氏名", "名前", "担当者", "担当者名",
    ]),
    (Concept::Company, &[
        "company", "company name", "organization", "organisation", "organization name",
        "account", "account name", "employer", "business", "firma", "firmenname", "unternehmen",
        "entreprise", "société", "empresa", "compañía", "azienda", "公司", "公司名称", "公司名", "企业",
        "企业名称", "单位", "单位名称", "客户名称", "機構", "會社", "会社", "会社名", "企業名", "所属", "勤務先",
    ]),
    (Concept::Title, &[
        "title", "job title", "position", "role", "job role", "designation", "job", "titel",
        "berufsbezeichnung", "funktion", "poste", "fonction", "titre", "cargo", "puesto", "职位",
        "职务", "头衔", "職位", "職稱", "役職", "肩書", "肩書き",
    ]),
    (Concept::Phone, &[
        "phone", "phone number", "telephone", "tel", "mobile", "mobile phone", "mobile number",
        "cell", "cell phone", "work phone", "business phone", "home phone", "telefon",
        "telefonnummer", "handy", "mobil", "mobilnummer", "téléphone", "portable", "teléfono",
        "móvil", "celular", "telefono", "电话", "手机", "手机号", "手机号码", "电话号码", "联系电话", "联系方式", "座机",
        "電話", "手機", "電話番号", "携帯", "携帯電話", "携帯番号",
    ]),
    (Concept::Email, &[
        "email", "e-mail", "email address", "e-mail address", "mail", "emailadresse",
        "e-mail-adresse", "courriel", "adresse e-mail", "adresse mail", "correo",
        "correo electrónico", "邮箱", "电子邮件", "电子邮箱", "邮件", "邮箱地址", "电邮", "電子郵件", "メール",
        "メールアドレス", "電子メール", "eメール",
    ]),
    (Concept::Street, &[
        "street", "street address", "address", "address line 1", "address line 2", "address 1",
        "address 2", "addr", "straße", "strasse", "adresse", "anschrift", "rue", "dirección",
        "calle", "地址", "街道", "详细地址", "通讯地址", "地址1", "住所", "番地", "町名番地",
    ]),
    (Concept::City, &[
        "city", "town", "locality", "stadt", "ort", "ville", "ciudad", "localidad", "città",
        "城市", "市", "所在城市", "城市名", "市区町村", "市区郡",
    ]),
    (Concept::PostalCode, &[
        "postcode", "postal code", "post code", "zip", "zip code", "zipcode", "plz",
        "postleitzahl", "code postal", "cp", "código postal", "cap", "邮编", "邮政编码", "郵遞區號",
        "郵便番号", "〒",
    ]),
    (Concept::Country, &[
        "country", "country code", "country/region", "nation", "land", "pays", "país", "paese",
        "国家", "国家/地区", "国家地区", "國家", "国", "国名",
    ]),
    (Concept::State, &[
        "state", "province", "state/province", "county", "prefecture", "bundesland", "kanton",
        "département", "departement", "provincia", "estado", "省", "省份", "州", "省/州", "都道府県",
    ]),
    (Concept::Industry, &[
        "industry", "sector", "vertical", "branche", "industrie", "secteur",
        "secteur d'activité", "industria", "sector industrial", "行业", "所属行业", "行業", "業種", "業界",
    ]),
    (Concept::Region, &[
        "region", "sales region", "area", "territory", "région", "región", "regione", "gebiet",
        "区域", "地区", "大区", "销售区域", "地域", "エリア",
    ]),
    (Concept::Source, &[
        "source", "lead source", "origin", "channel", "quelle", "herkunft", "origine",
        "provenance", "fuente", "origen", "来源", "线索来源", "渠道", "客户来源", "來源", "ソース", "流入元",
        "リードソース",
    ]),
    (Concept::Campaign, &[
        "campaign", "campaign name", "kampagne", "campagne", "campaña", "活动", "营销活动", "市场活动",
        "活動", "キャンペーン",
    ]),
    (Concept::Notes, &[
        "notes", "note", "comment", "comments", "remarks", "remark", "description", "notizen",
        "notiz", "bemerkung", "bemerkungen", "kommentar", "remarques", "commentaire",
        "commentaires", "notas", "comentarios", "observaciones", "备注", "说明", "描述", "附注", "備註",
        "備考", "メモ", "コメント",
    ]),
    (Concept::BirthDate, &[
        "birth date", "birthdate", "date of birth", "birthday", "dob", "geburtsdatum",
        "geburtstag", "date de naissance", "fecha de nacimiento", "cumpleaños", "生日", "出生日期",
        "出生年月日", "生年月日", "誕生日",
    ]),
    (Concept::Employees, &[
        "employees", "employee count", "number of employees", "no of employees", "headcount",
        "company size", "staff", "mitarbeiter", "mitarbeiterzahl", "anzahl mitarbeiter",
        "effectif", "effectifs", "empleados", "员工数", "员工人数", "人数", "公司规模", "规模", "員工數", "従業員数",
        "社員数",
    ]),
    (Concept::Website, &[
        "website", "web site", "web", "url", "homepage", "home page", "site", "site web",
        "sitio web", "webseite", "internetseite", "网站", "网址", "官网", "公司网站", "網站", "ウェブサイト",
        "ホームページ",
    ]),
    (Concept::Tags, &[
        "tags", "tag", "labels", "label", "keywords", "schlagworte", "étiquettes", "etiquetas",
        "标签", "標籤", "タグ",
    ]),
];

/// Words that qualify a header without changing what it is ("Work Email", "客户电话").
#[rustfmt::skip]
const QUALIFIERS: &[&str] = &[
    "primary", "main", "work", "business", "office", "home", "private", "personal", "other",
    "contact", "customer", "client", "lead", "company", "kunden", "privat", "geschäftlich",
    "客户", "联系人", "联系", "公司", "个人", "主要", "会社",
];

/// One column of a mapping: which field its cells go to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnMapping {
    /// The column, 0-based.
    pub column: usize,
    /// The column's header name.
    pub header: String,
    /// The target field, `None` when the column is not imported.
    pub field: Option<String>,
    /// How sure the proposal is, 0 to 1 (1 for a header naming the field exactly).
    pub confidence: f32,
    /// Why it was proposed (or left out).
    pub reason: String,
}

/// A tenant custom field the proposal may map columns to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomFieldHint {
    /// The custom field's key.
    pub key: String,
    /// Its display name.
    pub display_name: String,
}

/// Normalised form of a header or synonym: compatibility-decomposed, accents dropped,
/// lower-case, letters and digits only.
pub fn normalize_header(s: &str) -> String {
    s.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric() || *c == '〒')
        .collect()
}

fn is_cjk_text(s: &str) -> bool {
    s.chars().any(crm_core::model::contact::is_cjk)
}

struct Synonyms {
    entries: Vec<(String, Concept, &'static str)>,
    qualifiers: Vec<String>,
}

impl Synonyms {
    fn new() -> Self {
        let entries = SYNONYMS
            .iter()
            .flat_map(|(c, words)| words.iter().map(move |w| (normalize_header(w), *c, *w)))
            .filter(|(n, _, _)| !n.is_empty())
            .collect();
        let mut qualifiers: Vec<String> = QUALIFIERS.iter().map(|q| normalize_header(q)).collect();
        qualifiers.sort_by_key(|q| std::cmp::Reverse(q.chars().count()));
        Self {
            entries,
            qualifiers,
        }
    }

    fn exact(&self, norm: &str) -> Option<(Concept, &'static str)> {
        self.entries
            .iter()
            .find(|(n, _, _)| n == norm)
            .map(|(_, c, w)| (*c, *w))
    }

    /// The header without qualifiers and trailing digits ("workemail2" -> "email").
    fn stripped(&self, norm: &str) -> String {
        let mut s = norm
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_owned();
        loop {
            let before = s.len();
            for q in &self.qualifiers {
                if s.len() > q.len() {
                    if let Some(rest) = s.strip_prefix(q.as_str()) {
                        s = rest.to_owned();
                    } else if let Some(rest) = s.strip_suffix(q.as_str()) {
                        s = rest.to_owned();
                    }
                }
            }
            if s.len() == before {
                return s;
            }
        }
    }

    /// The longest synonym the header contains (4+ letters, or 2+ CJK characters).
    fn contained(&self, norm: &str) -> Option<(Concept, &'static str)> {
        self.entries
            .iter()
            .filter(|(n, _, _)| {
                let len = n.chars().count();
                (if is_cjk_text(n) { len >= 2 } else { len >= 4 }) && norm.contains(n.as_str())
            })
            .max_by_key(|(n, _, _)| n.chars().count())
            .map(|(_, c, w)| (*c, *w))
    }
}

/// Proposes a mapping of each header column to a field of `target`; see [`propose_mapping_with_custom`].
pub fn propose_mapping(
    target: TargetKind,
    header: &[String],
    sample: &[RawRow],
) -> Vec<ColumnMapping> {
    propose_mapping_with_custom(target, header, sample, &[])
}

/// What the sample values of a column look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    Email,
    Phone,
    Date,
}

/// What the sample values of a column look like: `None` when it has no values,
/// `Some(None)` when they look like nothing in particular.
fn sniff_column(column: usize, sample: &[RawRow]) -> Option<Option<Sniffed>> {
    let values: Vec<&str> = sample
        .iter()
        .map(|r| r.cell(column).trim())
        .filter(|v| !v.is_empty())
        .take(50)
        .collect();
    if values.is_empty() {
        return None;
    }
    let share =
        |f: fn(&str) -> bool| values.iter().filter(|v| f(v)).count() * 5 >= values.len() * 4;
    Some(if share(looks_email) {
        Some(Sniffed::Email)
    } else if share(|v| parse_date(v).is_ok()) {
        Some(Sniffed::Date)
    } else if share(looks_phone) {
        Some(Sniffed::Phone)
    } else {
        None
    })
}

/// Whether a value looks like an e-mail address (one `@`, a dot in the domain, no space).
pub fn looks_email(v: &str) -> bool {
    let mut parts = v.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !v.chars().any(char::is_whitespace)
}

/// Whether a value looks like a phone number: digits, `+`, spaces and `-()./` only, with 7
/// to 15 digits, and not a date.
pub fn looks_phone(v: &str) -> bool {
    let digits = v.chars().filter(char::is_ascii_digit).count();
    (7..=15).contains(&digits)
        && v.chars()
            .all(|c| c.is_ascii_digit() || " +-()./".contains(c))
        && parse_date(v).is_err()
}

/// [`propose_mapping`] that also maps columns named like one of the tenant's custom fields
/// (by key or display name) to `custom.<key>`.
pub fn propose_mapping_with_custom(
    target: TargetKind,
    header: &[String],
    sample: &[RawRow],
    custom: &[CustomFieldHint],
) -> Vec<ColumnMapping> {
    let syn = Synonyms::new();
    let mut proposals: Vec<ColumnMapping> = header
        .iter()
        .enumerate()
        .map(|(column, name)| propose_column(target, &syn, column, name, sample, custom))
        .collect();
    // A single-valued field goes to its most confident column; ties to the first.
    for i in 0..proposals.len() {
        let Some(field) = proposals[i].field.clone() else {
            continue;
        };
        if target.field_kind(&field) == Some(FieldKind::List) {
            continue;
        }
        let best = proposals
            .iter()
            .enumerate()
            .filter(|(_, p)| p.field.as_deref() == Some(field.as_str()))
            .max_by(|(ia, a), (ib, b)| {
                a.confidence
                    .total_cmp(&b.confidence)
                    .then_with(|| ib.cmp(ia))
            })
            .map(|(k, _)| k);
        if let Some(best) = best
            && best != i
        {
            let winner = &proposals[best];
            let reason = format!(
                "would be {field}, but column {} ({:?}) matches it better",
                winner.column, winner.header
            );
            let p = &mut proposals[i];
            p.field = None;
            p.confidence = 0.0;
            p.reason = reason;
        }
    }
    proposals
}

fn propose_column(
    target: TargetKind,
    syn: &Synonyms,
    column: usize,
    name: &str,
    sample: &[RawRow],
    custom: &[CustomFieldHint],
) -> ColumnMapping {
    let norm = normalize_header(name);
    let mapping = |field: Option<String>, confidence: f32, reason: String| ColumnMapping {
        column,
        header: name.to_owned(),
        field,
        confidence,
        reason,
    };
    let sniffed = sniff_column(column, sample);
    // Without sample values there is nothing to contradict.
    let agrees = |concept: Concept| match concept {
        Concept::Email => sniffed.is_none_or(|s| s == Some(Sniffed::Email)),
        Concept::Phone => sniffed.is_none_or(|s| s == Some(Sniffed::Phone)),
        Concept::BirthDate => sniffed.is_none_or(|s| s == Some(Sniffed::Date)),
        _ => true,
    };
    if !norm.is_empty() {
        if let Some(hint) = custom
            .iter()
            .find(|h| normalize_header(&h.key) == norm || normalize_header(&h.display_name) == norm)
        {
            return mapping(
                Some(format!("custom.{}", hint.key)),
                0.95,
                format!("header names the custom field {:?}", hint.key),
            );
        }
        let stripped = syn.stripped(&norm);
        let candidates = [
            (syn.exact(&norm), 1.0, "header matches"),
            (
                (!stripped.is_empty())
                    .then(|| syn.exact(&stripped))
                    .flatten(),
                0.9,
                "header, qualifiers aside, matches",
            ),
            (syn.contained(&norm), 0.7, "header contains"),
        ];
        for (found, confidence, how) in candidates {
            let Some((concept, word)) = found else {
                continue;
            };
            let Some(field) = target.field_of(concept) else {
                return mapping(
                    None,
                    0.0,
                    format!("header matches {word:?}, which {target} have no field for"),
                );
            };
            // A loose match must not contradict the values ("Email opt-out": yes/no).
            if confidence < 1.0 && !agrees(concept) {
                continue;
            }
            return mapping(
                Some(field.to_owned()),
                confidence,
                format!("{how} {word:?}"),
            );
        }
    }
    let by_values = match sniffed.flatten() {
        Some(Sniffed::Email) => target
            .field_of(Concept::Email)
            .map(|f| (f, 0.6, "sample values are e-mail addresses")),
        Some(Sniffed::Phone) => target
            .field_of(Concept::Phone)
            .map(|f| (f, 0.5, "sample values are phone numbers")),
        Some(Sniffed::Date) => target
            .field_of(Concept::BirthDate)
            .map(|f| (f, 0.4, "sample values are dates")),
        None => None,
    };
    match by_values {
        Some((field, confidence, reason)) => {
            mapping(Some(field.to_owned()), confidence, reason.to_owned())
        }
        None => mapping(
            None,
            0.0,
            "no field matches the header or the values; map it to a field or a custom field (custom.<key>), or leave it out".to_owned(),
        ),
    }
}

/// Whether a custom field key is well-formed: 1-63 of `a-z`, `0-9`, `_`, starting with a
/// letter (as crm-core requires of custom field definitions).
pub fn is_custom_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 63
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && key.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
}

/// Checks a mapping against the header: every column exists and is mapped once, every
/// field is one of the target's (or a well-formed `custom.<key>`), and single-valued fields
/// take one column (lists such as `phones` and `emails` may take several). Entries without
/// a field are ignored but their column must exist. Returns every error, each naming its
/// entry (`mapping[3].column`).
pub fn validate_mapping(
    target: TargetKind,
    header: &[String],
    mappings: &[ColumnMapping],
) -> Result<(), Vec<ImportError>> {
    let mut errors = Vec::new();
    let mut columns: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut fields: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (index, m) in mappings.iter().enumerate() {
        if m.column >= header.len() {
            errors.push(ImportError::MappingColumnOutOfRange {
                index,
                column: m.column,
                columns: header.len(),
            });
        } else if let Some(first) = columns.insert(m.column, index) {
            errors.push(ImportError::MappingDuplicateColumn {
                index,
                column: m.column,
                first,
            });
            columns.insert(m.column, first);
        }
        let Some(field) = m.field.as_deref() else {
            continue;
        };
        match target.field_kind(field) {
            None => errors.push(ImportError::MappingUnknownField {
                index,
                field: field.to_owned(),
                target: target.collection().to_owned(),
            }),
            Some(FieldKind::List) => {}
            Some(_) => {
                if let Some(&first) = fields.get(field) {
                    errors.push(ImportError::MappingDuplicateField {
                        index,
                        field: field.to_owned(),
                        first,
                    });
                } else {
                    fields.insert(field, index);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// What is wrong with a cell when a row is mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", tag = "kind")]
pub enum FieldProblemKind {
    /// Nothing mapped has a value.
    #[error("empty row: no mapped column has a value")]
    EmptyRow,
    /// The field is not one of the target's.
    #[error("unknown field")]
    UnknownField,
    /// Not a whole number.
    #[error("{value:?} is not a whole number")]
    NotAnInteger {
        /// The cell.
        value: String,
    },
    /// Not a number.
    #[error("{value:?} is not a number")]
    NotANumber {
        /// The cell.
        value: String,
    },
    /// Not a date.
    #[error("{value:?} is not a date (use YYYY-MM-DD)")]
    NotADate {
        /// The cell.
        value: String,
    },
    /// A date that reads both day-first and month-first.
    #[error("{value:?} is ambiguous: day/month or month/day? (use YYYY-MM-DD)")]
    AmbiguousDate {
        /// The cell.
        value: String,
    },
}

/// A problem of one cell (or of the whole row) when a row is mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}{}{kind}", column.map(|c| format!("column {c} ")).unwrap_or_default(), field.as_ref().map(|f| format!("({f}): ")).unwrap_or_default())]
pub struct FieldProblem {
    /// The column, 0-based (`None` for the whole row).
    pub column: Option<usize>,
    /// The target field.
    pub field: Option<String>,
    /// What is wrong.
    pub kind: FieldProblemKind,
}

/// Builds the JSON object of a record from a row: cells trimmed, empty ones skipped; lead
/// addresses under `address`, contact and account addresses as one entry of `addresses`;
/// phones as `[{"number": ...}]` and e-mails as `[{"address": ...}]` (a cell may hold several,
/// separated by `;`, and e-mails also by `,` or spaces); tags split on `,` `;` `|`;
/// `employee_count` as a number, `birth_date` as `YYYY-MM-DD`; `custom.<key>` under
/// `custom_fields` as `{"text": ...}`. The row's own problems ([`RawRow::problems`]) are the
/// caller's to check. A row with nothing mapped is a problem ("empty row").
pub fn map_row(
    target: TargetKind,
    mapping: &[ColumnMapping],
    row: &RawRow,
) -> Result<Map<String, Value>, Vec<FieldProblem>> {
    let mut obj = Map::new();
    let mut address = Map::new();
    let mut problems = Vec::new();
    let mut any = false;
    for m in mapping {
        let Some(field) = m.field.as_deref() else {
            continue;
        };
        let cell = row.cell(m.column).trim();
        if cell.is_empty() {
            continue;
        }
        let problem = |kind| FieldProblem {
            column: Some(m.column),
            field: Some(field.to_owned()),
            kind,
        };
        let Some(kind) = target.field_kind(field) else {
            problems.push(problem(FieldProblemKind::UnknownField));
            continue;
        };
        let value = match kind {
            FieldKind::Text => Value::String(cell.to_owned()),
            FieldKind::Integer => match parse_integer(cell) {
                Some(n) => Value::from(n),
                None => {
                    problems.push(problem(FieldProblemKind::NotAnInteger {
                        value: cell.to_owned(),
                    }));
                    continue;
                }
            },
            FieldKind::Date => match parse_date(cell) {
                Ok(d) => Value::String(d.format("%Y-%m-%d").to_string()),
                Err(kind) => {
                    problems.push(problem(kind));
                    continue;
                }
            },
            FieldKind::List | FieldKind::Custom => Value::Null,
        };
        any = true;
        let address_part = field
            .strip_prefix("address.")
            .or_else(|| field.strip_prefix("addresses."));
        match (kind, field, address_part) {
            (FieldKind::Custom, _, _) => {
                let key = field.trim_start_matches("custom.");
                let custom = obj
                    .entry("custom_fields")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(c) = custom {
                    c.insert(key.to_owned(), json!({ "text": cell }));
                }
            }
            (FieldKind::List, "phones", _) => {
                for p in split(cell, &[';', '\n', '|']) {
                    push(&mut obj, "phones", json!({ "number": p }));
                }
            }
            (FieldKind::List, "emails", _) => {
                for e in split(cell, &[';', ',', '\n', ' ', '|']) {
                    push(&mut obj, "emails", json!({ "address": e }));
                }
            }
            (FieldKind::List, "tags", _) => {
                for t in split(cell, &[',', ';', '|', '\n']) {
                    push(&mut obj, "tags", Value::String(t.to_owned()));
                }
            }
            (FieldKind::List, _, Some(part)) => {
                // address.lines / addresses.lines: one line per line of the cell.
                for l in split(cell, &['\n']) {
                    push(&mut address, part, Value::String(l.to_owned()));
                }
            }
            (_, _, Some(part)) => set_text(&mut address, part, value),
            (_, f, None) => set_text(&mut obj, f, value),
        }
    }
    if !address.is_empty() {
        if target == TargetKind::Lead {
            obj.insert("address".to_owned(), Value::Object(address));
        } else {
            obj.insert(
                "addresses".to_owned(),
                Value::Array(vec![Value::Object(address)]),
            );
        }
    }
    if !any && problems.is_empty() {
        problems.push(FieldProblem {
            column: None,
            field: None,
            kind: FieldProblemKind::EmptyRow,
        });
    }
    if problems.is_empty() {
        Ok(obj)
    } else {
        Err(problems)
    }
}

/// Sets a field; a second text for the same field (unvalidated mappings) is appended.
fn set_text(obj: &mut Map<String, Value>, key: &str, value: Value) {
    match (obj.get_mut(key), value) {
        (Some(Value::String(old)), Value::String(new)) => {
            old.push(' ');
            old.push_str(&new);
        }
        (_, value) => {
            obj.insert(key.to_owned(), value);
        }
    }
}

fn push(obj: &mut Map<String, Value>, key: &str, value: Value) {
    let list = obj.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(items) = list {
        items.push(value);
    }
}

fn split<'c>(cell: &'c str, separators: &[char]) -> impl Iterator<Item = &'c str> {
    cell.split(|c| separators.contains(&c))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A number as people write it: `1200`, `1,200`, `1 200`, `1.200.000`, `1,5`, `1.5`,
/// `1.200,50`. A single comma followed by three digits is a thousands separator, else a
/// decimal comma; a single dot is a decimal point.
pub fn parse_number(s: &str) -> Option<f64> {
    let cleaned: String = s
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '_' | '\''))
        .collect();
    let groups_of_three = |sep: char| cleaned.split(sep).skip(1).all(|g| g.len() == 3);
    let normal = match (cleaned.rfind(','), cleaned.rfind('.')) {
        (Some(c), Some(d)) if c > d => cleaned.replace('.', "").replace(',', "."),
        (Some(_), Some(_)) => cleaned.replace(',', ""),
        (Some(_), None) if groups_of_three(',') => cleaned.replace(',', ""),
        (Some(_), None) if cleaned.matches(',').count() == 1 => cleaned.replace(',', "."),
        (None, Some(_)) if cleaned.matches('.').count() > 1 && groups_of_three('.') => {
            cleaned.replace('.', "")
        }
        _ => cleaned,
    };
    normal.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A whole number as people write it ([`parse_number`] without a fraction): `1200`,
/// `1,200`, `1 200`, `1.200.000`, `1200.0`.
pub fn parse_integer(s: &str) -> Option<i64> {
    if let Ok(n) = s.trim().parse::<i64>() {
        return Some(n);
    }
    let n = parse_number(s)?;
    (n.fract() == 0.0 && n.abs() < 9.0e15).then_some(n as i64)
}

/// A date as people write it: `2024-03-01`, `2024/3/1`, `1.3.2024` (day first), `3/15/2024`
/// and `15/3/2024` when one part exceeds 12, `2024年3月1日`, `20240301`, `1 March 2024`,
/// `March 1, 2024`, or an ISO date-time (its date). `3/4/2024` is ambiguous.
pub fn parse_date(s: &str) -> Result<NaiveDate, FieldProblemKind> {
    let value = s.trim();
    let not_a_date = || FieldProblemKind::NotADate {
        value: value.to_owned(),
    };
    let mut t: String = value
        .replace(['年', '月'], "-")
        .replace('日', "")
        .trim()
        .to_owned();
    // A time after the date is dropped.
    if let Some(i) = t.find(['T', ' '])
        && t[..i].chars().filter(|c| !c.is_ascii_digit()).count() == 2
    {
        t.truncate(i);
    }
    for fmt in [
        "%d %B %Y",
        "%d %b %Y",
        "%B %d, %Y",
        "%b %d, %Y",
        "%B %d %Y",
        "%b %d %Y",
    ] {
        if let Ok(d) = NaiveDate::parse_from_str(&t, fmt) {
            return Ok(d);
        }
    }
    if t.len() == 8 && t.bytes().all(|b| b.is_ascii_digit()) {
        let n = |r: std::ops::Range<usize>| t[r].parse::<u32>().ok();
        return match (n(0..4), n(4..6), n(6..8)) {
            (Some(y), Some(m), Some(d)) => ymd(y, m, d).ok_or_else(not_a_date),
            _ => Err(not_a_date()),
        };
    }
    let sep = ['-', '/', '.']
        .into_iter()
        .find(|c| t.contains(*c))
        .ok_or_else(not_a_date)?;
    let parts: Vec<&str> = t.split(sep).map(str::trim).collect();
    let [a, b, c] = parts[..] else {
        return Err(not_a_date());
    };
    let all_digits =
        |p: &str| !p.is_empty() && p.len() <= 4 && p.bytes().all(|x| x.is_ascii_digit());
    if ![a, b, c].iter().all(|p| all_digits(p)) {
        return Err(not_a_date());
    }
    let num = |p: &str| p.parse::<u32>().unwrap_or(0);
    let (a_n, b_n, c_n) = (num(a), num(b), num(c));
    let date = if a.len() == 4 {
        ymd(a_n, b_n, c_n)
    } else if c.len() == 4 {
        if sep == '.' || a_n > 12 {
            ymd(c_n, b_n, a_n)
        } else if b_n > 12 || a_n == b_n {
            ymd(c_n, a_n, b_n)
        } else {
            return Err(FieldProblemKind::AmbiguousDate {
                value: value.to_owned(),
            });
        }
    } else {
        None
    };
    date.ok_or_else(not_a_date)
}

fn ymd(y: u32, m: u32, d: u32) -> Option<NaiveDate> {
    let date = NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)?;
    (1800..=2200).contains(&date.year()).then_some(date)
}

/// A custom field value of the definition's type (`TEXT`, `NUMBER`, `DATE`, `ENUM`), as
/// crm-core stores it (`{"number": 3.5}`), from the text of a cell.
pub fn typed_custom_value(value_type: &str, text: &str) -> Result<Value, FieldProblemKind> {
    let text = text.trim();
    match value_type {
        "NUMBER" => match parse_number(text) {
            Some(n) => Ok(json!({ "number": n })),
            None => Err(FieldProblemKind::NotANumber {
                value: text.to_owned(),
            }),
        },
        "DATE" => parse_date(text).map(|d| json!({ "date": d.format("%Y-%m-%d").to_string() })),
        "ENUM" => Ok(json!({ "enum": text })),
        _ => Ok(json!({ "text": text })),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::import::sheet::{XlsxSheet, tests::leads_xlsx};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn row(number: u64, cells: &[&str]) -> RawRow {
        RawRow {
            number,
            byte_offset: 0,
            fields: strings(cells),
            problems: Vec::new(),
        }
    }

    fn fields_of(m: &[ColumnMapping]) -> Vec<Option<&str>> {
        m.iter().map(|c| c.field.as_deref()).collect()
    }

    #[test]
    fn english_headers() {
        let header = strings(&[
            "First Name",
            "Last Name",
            "E-Mail",
            "Primary Phone",
            "Company",
            "Job Title",
            "Street",
            "City",
            "ZIP",
            "Country",
            "State",
            "Industry",
            "Lead Source",
            "Notes",
            "Email 2",
            "Favourite colour",
        ]);
        let m = propose_mapping(TargetKind::Lead, &header, &[]);
        assert_eq!(
            fields_of(&m),
            [
                Some("given_name"),
                Some("family_name"),
                Some("emails"),
                Some("phones"),
                Some("company"),
                Some("title"),
                Some("address.lines"),
                Some("address.locality"),
                Some("address.postal_code"),
                Some("address.region_code"),
                Some("address.administrative_area"),
                Some("industry"),
                Some("source"),
                Some("notes"),
                Some("emails"),
                None,
            ]
        );
        assert_eq!(m[0].confidence, 1.0);
        assert!(
            m[3].confidence < 1.0 && m[3].confidence >= 0.9,
            "{:?}",
            m[3]
        );
        assert!(m[15].reason.contains("custom"));
        assert!(validate_mapping(TargetKind::Lead, &header, &m).is_ok());
    }

    #[test]
    fn chinese_japanese_german_headers() {
        let header = strings(&[
            "姓", "名", "邮箱", "手机", "公司", "职位", "城市", "邮编", "行业", "备注", "区域",
        ]);
        let m = propose_mapping(TargetKind::Lead, &header, &[]);
        assert_eq!(
            fields_of(&m),
            [
                Some("family_name"),
                Some("given_name"),
                Some("emails"),
                Some("phones"),
                Some("company"),
                Some("title"),
                Some("address.locality"),
                Some("address.postal_code"),
                Some("industry"),
                Some("notes"),
                Some("region"),
            ]
        );
        let header = strings(&["氏名", "会社名", "電話番号", "メールアドレス", "電子郵件"]);
        let m = propose_mapping(TargetKind::Lead, &header, &[]);
        assert_eq!(
            fields_of(&m),
            [
                Some("display_name"),
                Some("company"),
                Some("phones"),
                Some("emails"),
                Some("emails")
            ]
        );
        let header = strings(&[
            "Vorname",
            "Nachname",
            "Firma",
            "Telefon",
            "PLZ",
            "Straße",
            "Prénom",
            "Teléfono",
        ]);
        let m = propose_mapping(TargetKind::Lead, &header, &[]);
        assert_eq!(
            fields_of(&m),
            [
                Some("given_name"),
                Some("family_name"),
                Some("company"),
                Some("phones"),
                Some("address.postal_code"),
                Some("address.lines"),
                None,
                Some("phones"),
            ]
        );
        // The second given name column loses to the first.
        assert!(m[6].reason.contains("column 0"), "{:?}", m[6]);
    }

    #[test]
    fn targets_differ() {
        let header = strings(&[
            "公司",
            "Company Name",
            "Website",
            "Employees",
            "Birth Date",
            "City",
        ]);
        let account = propose_mapping(TargetKind::Account, &header, &[]);
        assert_eq!(
            fields_of(&account),
            [
                Some("display_name"),
                None,
                Some("website"),
                Some("employee_count"),
                None,
                Some("addresses.locality"),
            ]
        );
        let contact = propose_mapping(TargetKind::Contact, &header, &[]);
        assert_eq!(
            fields_of(&contact),
            [
                None,
                None,
                None,
                None,
                Some("birth_date"),
                Some("addresses.locality")
            ]
        );
        assert!(contact[0].reason.contains("contacts have no field"));
    }

    #[test]
    fn values_are_sniffed_when_the_header_says_nothing() {
        let header = strings(&["A", "B", "C", "D", "Email opt-out"]);
        let sample = vec![
            row(
                1,
                &[
                    "anna@example.com",
                    "+49 30 1234567",
                    "1990-03-05",
                    "x",
                    "no",
                ],
            ),
            row(
                2,
                &["bo@example.cn", "138 0000 0000", "05.04.1985", "y", "yes"],
            ),
            row(3, &["", "(030) 123-4567", "", "z", ""]),
        ];
        let m = propose_mapping(TargetKind::Contact, &header, &sample);
        assert_eq!(
            fields_of(&m),
            [
                Some("emails"),
                Some("phones"),
                Some("birth_date"),
                None,
                None
            ]
        );
        assert!(m[0].reason.contains("e-mail"));
        let lead = propose_mapping(TargetKind::Lead, &header, &sample);
        assert_eq!(lead[2].field, None);
    }

    #[test]
    fn custom_field_hints() {
        let header = strings(&["Lead Score", "Name"]);
        let m = propose_mapping_with_custom(
            TargetKind::Lead,
            &header,
            &[],
            &[CustomFieldHint {
                key: "lead_score".into(),
                display_name: "Lead score".into(),
            }],
        );
        assert_eq!(
            fields_of(&m),
            [Some("custom.lead_score"), Some("display_name")]
        );
    }

    #[test]
    fn validation_names_the_entry() {
        let header = strings(&["a", "b", "c"]);
        let m = |column, field: &str| ColumnMapping {
            column,
            header: String::new(),
            field: Some(field.to_owned()),
            confidence: 1.0,
            reason: String::new(),
        };
        let errors = validate_mapping(
            TargetKind::Lead,
            &header,
            &[
                m(0, "company"),
                m(1, "phones"),
                m(2, "phones"),
                m(3, "title"),
                m(1, "notes"),
                m(0, "nonsense"),
                m(2, "company"),
                m(2, "custom.Bad Key"),
                m(2, "custom.tier"),
            ],
        )
        .unwrap_err();
        let paths: Vec<String> = errors.iter().map(ImportError::field_path).collect();
        assert_eq!(
            paths,
            [
                "mapping[3].column",
                "mapping[4].column",
                "mapping[5].column",
                "mapping[5].field",
                "mapping[6].column",
                "mapping[6].field",
                "mapping[7].column",
                "mapping[7].field",
                "mapping[8].column",
            ]
        );
        assert!(errors[3].to_string().contains("nonsense"));
        assert!(errors[5].to_string().contains("mapping[0]"));
        let ok = validate_mapping(TargetKind::Contact, &header, &[m(0, "birth_date")]);
        assert!(ok.is_ok());
        let err = validate_mapping(TargetKind::Contact, &header, &[m(0, "company")]).unwrap_err();
        assert!(err[0].to_string().contains("contacts"));
    }

    fn mapping_for(target: TargetKind, header: &[&str]) -> Vec<ColumnMapping> {
        propose_mapping(target, &strings(header), &[])
    }

    #[test]
    fn map_row_builds_a_lead() {
        let header = [
            "First Name",
            "Last Name",
            "Email",
            "Phone",
            "Company",
            "Street",
            "City",
            "Zip",
            "Country",
            "Employees",
            "Tags",
            "Tier",
            "Notes",
        ];
        let mut mapping = mapping_for(TargetKind::Lead, &header);
        mapping[11].field = Some("custom.tier".into());
        let r = row(
            1,
            &[
                " Anna ",
                "Schmidt",
                "anna@example.com; a.s@example.de",
                "+49 30 1234567",
                "=ACME GmbH",
                "Hauptstr. 1\nHinterhaus",
                "Berlin",
                "10115",
                "DE",
                "1,200",
                "vip, fair",
                "gold",
                "",
            ],
        );
        let obj = map_row(TargetKind::Lead, &mapping, &r).unwrap();
        assert_eq!(
            Value::Object(obj),
            json!({
                "given_name": "Anna",
                "family_name": "Schmidt",
                "emails": [{"address": "anna@example.com"}, {"address": "a.s@example.de"}],
                "phones": [{"number": "+49 30 1234567"}],
                "company": "=ACME GmbH",
                "address": {
                    "lines": ["Hauptstr. 1", "Hinterhaus"],
                    "locality": "Berlin",
                    "postal_code": "10115",
                    "region_code": "DE"
                },
                "employee_count": 1200,
                "tags": ["vip", "fair"],
                "custom_fields": {"tier": {"text": "gold"}}
            })
        );
        // The object deserialises into the resource.
        let mut obj = map_row(TargetKind::Lead, &mapping, &r).unwrap();
        obj.remove("employee_count");
        let lead: crate::lead::Lead = serde_json::from_value(Value::Object(obj)).unwrap();
        assert_eq!(lead.address.locality, "Berlin");
        assert_eq!(lead.emails.len(), 2);
    }

    #[test]
    fn map_row_builds_a_contact_and_an_account() {
        let mapping = mapping_for(
            TargetKind::Contact,
            &["姓", "名", "手机", "邮箱", "城市", "生日", "国家"],
        );
        let r = row(
            1,
            &[
                "张",
                "伟",
                "13800000000",
                "zw@example.cn",
                "北京",
                "1990年3月5日",
                "CN",
            ],
        );
        let obj = map_row(TargetKind::Contact, &mapping, &r).unwrap();
        let contact: crm_core::model::contact::Contact =
            serde_json::from_value(Value::Object(obj.clone())).unwrap();
        assert_eq!(contact.family_name, "张");
        assert_eq!(contact.birth_date, NaiveDate::from_ymd_opt(1990, 3, 5));
        assert_eq!(contact.addresses[0].locality, "北京");
        assert_eq!(contact.addresses[0].region_code, "CN");
        assert_eq!(contact.phones[0].number, "13800000000");

        let mapping = mapping_for(
            TargetKind::Account,
            &[
                "Company",
                "Industry",
                "Website",
                "Employees",
                "City",
                "Street",
            ],
        );
        let r = row(
            2,
            &[
                "ACME",
                "Manufacturing",
                "acme.example",
                "250",
                "Lyon",
                "1 rue X",
            ],
        );
        let obj = map_row(TargetKind::Account, &mapping, &r).unwrap();
        let account: crm_core::model::account::Account =
            serde_json::from_value(Value::Object(obj)).unwrap();
        assert_eq!(account.display_name, "ACME");
        assert_eq!(account.employee_count, 250);
        assert_eq!(account.addresses[0].locality, "Lyon");
        assert_eq!(account.addresses[0].lines, ["1 rue X"]);
    }

    #[test]
    fn map_row_problems() {
        let mapping = mapping_for(TargetKind::Contact, &["Name", "Birthday", "Email"]);
        let empty = map_row(TargetKind::Contact, &mapping, &row(7, &["  ", "", ""])).unwrap_err();
        assert_eq!(empty[0].kind, FieldProblemKind::EmptyRow);
        assert!(empty[0].to_string().contains("empty row"));
        // A short row is empty in its missing cells.
        assert!(map_row(TargetKind::Contact, &mapping, &row(8, &[])).is_err());
        let bad = map_row(
            TargetKind::Contact,
            &mapping,
            &row(9, &["Ann", "3/4/2020", ""]),
        )
        .unwrap_err();
        assert_eq!(
            bad,
            [FieldProblem {
                column: Some(1),
                field: Some("birth_date".into()),
                kind: FieldProblemKind::AmbiguousDate {
                    value: "3/4/2020".into()
                }
            }]
        );
        assert!(bad[0].to_string().starts_with("column 1 (birth_date): "));
        let mapping = mapping_for(TargetKind::Account, &["Name", "Employees"]);
        let bad = map_row(TargetKind::Account, &mapping, &row(1, &["X", "lots"])).unwrap_err();
        assert!(matches!(bad[0].kind, FieldProblemKind::NotAnInteger { .. }));
    }

    #[test]
    fn xlsx_rows_map_to_leads() {
        let bytes = leads_xlsx();
        let mut sheet = XlsxSheet::open(&bytes, None).unwrap();
        let mut rows = sheet.rows().unwrap();
        let header = rows.header().to_vec();
        let rows: Vec<RawRow> = rows.by_ref().collect::<Result<_, _>>().unwrap();
        let mapping = propose_mapping(TargetKind::Lead, &header, &rows);
        assert_eq!(
            fields_of(&mapping)[..3],
            [Some("display_name"), Some("company"), Some("phones")]
        );
        let obj = map_row(TargetKind::Lead, &mapping, &rows[0]).unwrap();
        assert_eq!(obj["phones"], json!([{"number": "13800000000"}]));
        assert_eq!(obj["display_name"], "张伟");
    }

    #[test]
    fn dates_and_numbers() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        for (s, want) in [
            ("2024-03-01", d(2024, 3, 1)),
            ("2024/3/1", d(2024, 3, 1)),
            ("1.3.2024", d(2024, 3, 1)),
            ("15/03/2024", d(2024, 3, 15)),
            ("03/15/2024", d(2024, 3, 15)),
            ("2024年3月1日", d(2024, 3, 1)),
            ("20240301", d(2024, 3, 1)),
            ("1 March 2024", d(2024, 3, 1)),
            ("March 1, 2024", d(2024, 3, 1)),
            ("2024-03-01T10:00:00Z", d(2024, 3, 1)),
            ("2024-03-01 10:00", d(2024, 3, 1)),
        ] {
            assert_eq!(parse_date(s), Ok(want), "{s}");
        }
        for s in [
            "13800000000",
            "2024-02-30",
            "hello",
            "1/2",
            "+49 30 1234567",
        ] {
            assert!(parse_date(s).is_err(), "{s}");
        }
        assert!(looks_phone("+49 30 1234567") && !looks_phone("2024-03-01"));
        assert!(looks_email("a@b.cn") && !looks_email("a@b") && !looks_email("a b@c.de"));
        for (s, n) in [
            ("1200", 1200),
            ("1,200", 1200),
            ("1 200", 1200),
            ("1.200.000", 1_200_000),
            ("12.0", 12),
        ] {
            assert_eq!(parse_integer(s), Some(n), "{s}");
        }
        assert_eq!(parse_integer("1.5"), None);
        assert_eq!(
            typed_custom_value("NUMBER", "1,5"),
            Ok(json!({"number": 1.5}))
        );
        assert_eq!(parse_number("1.200,50"), Some(1200.5));
        assert_eq!(parse_number("1,200.5"), Some(1200.5));
        assert_eq!(
            typed_custom_value("DATE", "2024-03-01"),
            Ok(json!({"date": "2024-03-01"}))
        );
        assert_eq!(
            typed_custom_value("ENUM", " gold "),
            Ok(json!({"enum": "gold"}))
        );
        assert!(typed_custom_value("NUMBER", "x").is_err());
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize_header(" E-Mail Address "), "emailaddress");
        assert_eq!(normalize_header("Prénom"), "prenom");
        assert_eq!(normalize_header("ＥＭＡＩＬ"), "email");
        assert_eq!(normalize_header("邮 箱："), "邮箱");
    }
}
