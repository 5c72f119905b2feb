use super::contact::{PostalAddress, validate_addresses};
use super::custom_field::CustomValues;
use crate::error::Result;
use crate::resource::{FieldSpec, Kind, Resource};
use crate::validate::{self, MAX_SHORT_CHARS, Violations};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An organisation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Account {
    pub display_name: String,
    pub industry: String,
    pub region: String,
    pub employee_count: i64,
    pub parent: Option<Uuid>,
    pub owner: Option<Uuid>,
    pub territory: Option<Uuid>,
    pub website: String,
    pub addresses: Vec<PostalAddress>,
    pub tags: Vec<String>,
    pub custom_fields: CustomValues,
}

impl Resource for Account {
    const COLLECTION: &'static str = "accounts";
    const TABLE: &'static str = "accounts";
    const OWNED: bool = true;
    const TREE_PARENT: Option<&'static str> = Some("parent");
    const CUSTOM_FIELDS: bool = true;
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("industry", "industry", Kind::Text).sort(),
        FieldSpec::new("region", "region", Kind::Text).sort(),
        FieldSpec::new("employee_count", "employee_count", Kind::Int).sort(),
        FieldSpec::new("parent", "parent_id", Kind::Ref("accounts")).filter(),
        FieldSpec::new("owner", "owner_id", Kind::Ref("users")).filter(),
        FieldSpec::new("territory", "territory_id", Kind::Ref("territories")).filter(),
        FieldSpec::new("website", "website", Kind::Text).filter(),
        FieldSpec::new("addresses", "addresses", Kind::Json),
        FieldSpec::new("tags", "tags", Kind::Tags).filter(),
        FieldSpec::new("custom_fields", "custom_fields", Kind::Json),
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
        if let Some(s) = v.check(validate::text("industry", &self.industry, 100, false)) {
            self.industry = s;
        }
        if let Some(s) = v.check(validate::text("region", &self.region, 100, false)) {
            self.region = s;
        }
        if let Some(s) = v.check(validate::text("website", &self.website, 2048, false)) {
            self.website = s;
        }
        if self.employee_count < 0 {
            v.add("employee_count", "must not be negative");
        }
        if let Some(t) = v.check(validate::tags("tags", &self.tags)) {
            self.tags = t;
        }
        validate_addresses(&mut v, &mut self.addresses);
        v.into_result()
    }
}
