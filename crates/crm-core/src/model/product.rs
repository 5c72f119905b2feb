use crate::error::Result;
use crate::resource::{FieldSpec, Kind, Resource};
use crate::validate::{self, MAX_SHORT_CHARS, Violations};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Something a tenant sells.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Product {
    pub sku: String,
    pub display_name: String,
    pub product_group: Option<Uuid>,
    pub currency_code: String,
    /// List price in minor units of `currency_code`.
    pub list_price: i64,
    pub active: bool,
}

impl Resource for Product {
    const COLLECTION: &'static str = "products";
    const TABLE: &'static str = "products";
    const DEFAULT_ORDER: &'static str = "sku";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("sku", "sku", Kind::Text).sort(),
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new(
            "product_group",
            "product_group_id",
            Kind::Ref("productGroups"),
        )
        .filter(),
        FieldSpec::new("currency_code", "currency_code", Kind::Text).filter(),
        FieldSpec::new("list_price", "list_price", Kind::Int).sort(),
        FieldSpec::new("active", "active", Kind::Bool).filter(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text("sku", &self.sku, 100, true)) {
            self.sku = s;
        }
        if let Some(s) = v.check(validate::text(
            "display_name",
            &self.display_name,
            MAX_SHORT_CHARS,
            false,
        )) {
            self.display_name = s;
        }
        if !self.currency_code.is_empty() {
            v.check(validate::currency(
                "list_price.currency_code",
                &self.currency_code,
            ));
        }
        if self.list_price < 0 {
            v.add("list_price", "must not be negative");
        }
        v.into_result()
    }
}

/// A node of the product-group tree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProductGroup {
    pub display_name: String,
    pub parent: Option<Uuid>,
}

impl Resource for ProductGroup {
    const COLLECTION: &'static str = "productGroups";
    const TABLE: &'static str = "product_groups";
    const TREE_PARENT: Option<&'static str> = Some("parent");
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("parent", "parent_id", Kind::Ref("productGroups")).filter(),
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
