use crate::error::Result;
use crate::resource::{FieldSpec, Kind, Resource};
use crate::validate::{self, Violations};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

crate::named_enum! {
    /// How an order reached the company.
    pub enum SalesChannel {
        Unspecified = "UNSPECIFIED",
        Direct = "DIRECT",
        Online = "ONLINE",
        Retail = "RETAIL",
        Partner = "PARTNER",
        Phone = "PHONE",
    }
}

crate::named_enum! {
    /// Where an order stands.
    pub enum OrderStatus {
        Open = "OPEN",
        Fulfilled = "FULFILLED",
        Cancelled = "CANCELLED",
        Returned = "RETURNED",
    }
}

/// One line of an order; money in minor units of the order's currency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrderLine {
    pub product: Option<Uuid>,
    pub quantity: i64,
    pub unit_price: i64,
    pub discount: i64,
    /// quantity x unit_price - discount (derived).
    pub amount: i64,
}

/// A purchase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Order {
    pub account: Option<Uuid>,
    pub contact: Option<Uuid>,
    pub order_time: Option<DateTime<Utc>>,
    pub channel: SalesChannel,
    pub status: OrderStatus,
    pub currency_code: String,
    pub lines: Vec<OrderLine>,
    /// Sum of line amounts (derived).
    pub total: i64,
    pub owner: Option<Uuid>,
    pub territory: Option<Uuid>,
}

impl Resource for Order {
    const COLLECTION: &'static str = "orders";
    const TABLE: &'static str = "orders";
    const OWNED: bool = true;
    const DEFAULT_ORDER: &'static str = "order_time desc";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("account", "account_id", Kind::Ref("accounts")).filter(),
        FieldSpec::new("contact", "contact_id", Kind::Ref("contacts")).filter(),
        FieldSpec::new("order_time", "order_time", Kind::Time).sort(),
        FieldSpec::new("channel", "channel", Kind::Enum(SalesChannel::NAMES)).filter(),
        FieldSpec::new("status", "status", Kind::Enum(OrderStatus::NAMES)).filter(),
        FieldSpec::new("currency_code", "currency_code", Kind::Text)
            .filter()
            .immutable(),
        FieldSpec::new("lines", "lines", Kind::Json),
        FieldSpec::new("total", "total", Kind::Int)
            .sort()
            .immutable(),
        FieldSpec::new("owner", "owner_id", Kind::Ref("users")).filter(),
        FieldSpec::new("territory", "territory_id", Kind::Ref("territories")).filter(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if self.account.is_none() && self.contact.is_none() {
            v.add("account", "an order needs an account or a contact");
        }
        v.check(validate::currency("currency_code", &self.currency_code));
        if self.order_time.is_none() {
            v.add("order_time", "is required");
        }
        if self.lines.is_empty() {
            v.add("lines", "an order needs at least one line");
        }
        let lines = if self.lines.len() > 1000 {
            v.add("lines", "at most 1000 lines");
            &[][..]
        } else {
            &self.lines[..]
        };
        for (i, l) in lines.iter().enumerate() {
            if l.product.is_none() {
                v.add(format!("lines[{i}].product"), "is required");
            }
            if l.quantity <= 0 {
                v.add(format!("lines[{i}].quantity"), "must be positive");
            }
            if l.unit_price < 0 {
                v.add(format!("lines[{i}].unit_price"), "must not be negative");
            }
            if l.discount < 0 {
                v.add(format!("lines[{i}].discount"), "must not be negative");
            }
            match l.quantity.checked_mul(l.unit_price) {
                Some(gross) if l.discount <= gross => {}
                Some(_) => v.add(
                    format!("lines[{i}].discount"),
                    "must not exceed the line's value",
                ),
                None => v.add(
                    format!("lines[{i}].quantity"),
                    "quantity x unit_price is too large",
                ),
            }
        }
        v.into_result()?;
        self.derive_totals()
    }

    fn nested_refs(&self) -> Vec<(String, &'static str, Uuid)> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                l.product
                    .map(|p| (format!("lines[{i}].product"), "products", p))
            })
            .collect()
    }
}

impl Order {
    fn derive_totals(&mut self) -> Result<()> {
        let mut total: i64 = 0;
        for (i, l) in self.lines.iter_mut().enumerate() {
            l.amount = l
                .quantity
                .saturating_mul(l.unit_price)
                .saturating_sub(l.discount);
            total = total.checked_add(l.amount).ok_or_else(|| {
                crate::error::Error::invalid(
                    format!("lines[{i}].amount"),
                    "the order total is too large",
                )
            })?;
        }
        self.total = total;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_derived() {
        let mut o = Order {
            account: Some(Uuid::now_v7()),
            order_time: Some(Utc::now()),
            currency_code: "EUR".into(),
            lines: vec![
                OrderLine {
                    product: Some(Uuid::now_v7()),
                    quantity: 3,
                    unit_price: 1000,
                    discount: 500,
                    amount: 0,
                },
                OrderLine {
                    product: Some(Uuid::now_v7()),
                    quantity: 1,
                    unit_price: 250,
                    discount: 0,
                    amount: 0,
                },
            ],
            ..Default::default()
        };
        assert!(o.validate().is_ok());
        assert_eq!(o.total, 2750);
        assert_eq!(o.status, OrderStatus::Open);
    }

    #[test]
    fn bad_lines_are_named() {
        let mut o = Order {
            account: Some(Uuid::now_v7()),
            order_time: Some(Utc::now()),
            currency_code: "EUR".into(),
            lines: vec![OrderLine {
                product: None,
                quantity: 0,
                unit_price: i64::MAX,
                discount: 0,
                amount: 0,
            }],
            ..Default::default()
        };
        let fields: Vec<String> = o
            .validate()
            .err()
            .map(|e| e.violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        assert_eq!(fields, vec!["lines[0].product", "lines[0].quantity"]);
    }
}
