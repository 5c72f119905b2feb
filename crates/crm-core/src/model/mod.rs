//! The shared customer model (K1-K4): plain data, field tables and validation.

pub mod account;
pub mod contact;
pub mod custom_field;
pub mod directory;
pub mod order;
pub mod product;
pub mod role;

pub use account::Account;
pub use contact::{Contact, Email, Phone, Position, PostalAddress};
pub use custom_field::{CustomFieldDefinition, CustomValue};
pub use directory::{Team, Territory, User};
pub use order::{Order, OrderLine};
pub use product::{Product, ProductGroup};
pub use role::Role;

use crate::resource::{FieldSpec, Resource};

/// The fields of a collection (for validating field rules).
pub fn fields_of(collection: &str) -> Option<&'static [FieldSpec]> {
    Some(match collection {
        "accounts" => Account::FIELDS,
        "contacts" => Contact::FIELDS,
        "positions" => Position::FIELDS,
        "products" => Product::FIELDS,
        "productGroups" => ProductGroup::FIELDS,
        "orders" => Order::FIELDS,
        "users" => User::FIELDS,
        "teams" => Team::FIELDS,
        "territories" => Territory::FIELDS,
        "roles" => Role::FIELDS,
        "customFieldDefinitions" => CustomFieldDefinition::FIELDS,
        _ => return None,
    })
}

/// Collections grants may name (besides `*`).
pub const GRANTABLE: &[&str] = &[
    "accounts",
    "contacts",
    "products",
    "productGroups",
    "orders",
    "users",
    "teams",
    "territories",
    "roles",
    "customFieldDefinitions",
];
