use crate::error::Result;
use crate::resource::{FieldSpec, Kind, Resource};
use crate::validate::{self, MAX_LIST_LEN, MAX_SHORT_CHARS, Violations};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Someone who works in the CRM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    pub display_name: String,
    pub email: String,
    pub manager: Option<Uuid>,
    pub teams: Vec<Uuid>,
    pub territories: Vec<Uuid>,
    pub skills: Vec<String>,
    pub capacity: i64,
    pub active: bool,
}

impl Resource for User {
    const COLLECTION: &'static str = "users";
    const TABLE: &'static str = "users";
    const TREE_PARENT: Option<&'static str> = Some("manager");
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("email", "email", Kind::Text).sort(),
        FieldSpec::new("manager", "manager_id", Kind::Ref("users")).filter(),
        FieldSpec::new("teams", "team_ids", Kind::RefList("teams")).filter(),
        FieldSpec::new("territories", "territory_ids", Kind::RefList("territories")).filter(),
        FieldSpec::new("skills", "skills", Kind::Tags).filter(),
        FieldSpec::new("capacity", "capacity", Kind::Int).sort(),
        FieldSpec::new("active", "active", Kind::Bool).filter(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text(
            "display_name",
            &self.display_name,
            MAX_SHORT_CHARS,
            false,
        )) {
            self.display_name = s;
        }
        if let Some(e) = v.check(validate::email("email", &self.email)) {
            self.email = e;
        }
        if let Some(s) = v.check(validate::tags("skills", &self.skills)) {
            self.skills = s;
        }
        if self.capacity < 0 {
            v.add("capacity", "must not be negative");
        }
        for (name, list) in [
            ("teams", &mut self.teams),
            ("territories", &mut self.territories),
        ] {
            if list.len() > MAX_LIST_LEN {
                v.add(name, format!("at most {MAX_LIST_LEN} entries"));
            }
            let mut seen = Vec::with_capacity(list.len());
            list.retain(|x| {
                let fresh = !seen.contains(x);
                seen.push(*x);
                fresh
            });
        }
        v.into_result()
    }
}

/// A team (or department: teams nest).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Team {
    pub display_name: String,
    pub parent: Option<Uuid>,
    pub lead: Option<Uuid>,
}

impl Resource for Team {
    const COLLECTION: &'static str = "teams";
    const TABLE: &'static str = "teams";
    const TREE_PARENT: Option<&'static str> = Some("parent");
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("parent", "parent_id", Kind::Ref("teams")).filter(),
        FieldSpec::new("lead", "lead_id", Kind::Ref("users")).filter(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text(
            "display_name",
            &self.display_name,
            MAX_SHORT_CHARS,
            true,
        )) {
            self.display_name = s;
        }
        v.into_result()
    }
}

/// A sales or service territory; territories form a tree and may overlap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Territory {
    pub display_name: String,
    pub parent: Option<Uuid>,
    pub regions: Vec<String>,
}

impl Resource for Territory {
    const COLLECTION: &'static str = "territories";
    const TABLE: &'static str = "territories";
    const TREE_PARENT: Option<&'static str> = Some("parent");
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("parent", "parent_id", Kind::Ref("territories")).filter(),
        FieldSpec::new("regions", "regions", Kind::Tags).filter(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text(
            "display_name",
            &self.display_name,
            MAX_SHORT_CHARS,
            true,
        )) {
            self.display_name = s;
        }
        if let Some(r) = v.check(validate::tags("regions", &self.regions)) {
            self.regions = r;
        }
        v.into_result()
    }
}
