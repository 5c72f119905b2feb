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

use crate::resource::{Collection, FieldSpec};

/// Every collection of the shared model.
pub static COLLECTIONS: &[Collection] = &[
    Collection::of::<Account>(),
    Collection::of::<Contact>(),
    Collection::of::<Position>(),
    Collection::of::<Product>(),
    Collection::of::<ProductGroup>(),
    Collection::of::<Order>(),
    Collection::of::<User>(),
    Collection::of::<Team>(),
    Collection::of::<Territory>(),
    Collection::of::<Role>(),
    Collection::of::<CustomFieldDefinition>(),
];

/// A collection by name.
pub fn collection(name: &str) -> Option<&'static Collection> {
    COLLECTIONS.iter().find(|c| c.name == name)
}

/// The fields of a collection (for validating field rules).
pub fn fields_of(collection: &str) -> Option<&'static [FieldSpec]> {
    self::collection(collection).map(|c| c.fields)
}

/// Collections grants may name (besides `*`): those governed by their own grants (a
/// contact's positions follow the contact's).
pub fn grantable() -> impl Iterator<Item = &'static str> {
    COLLECTIONS
        .iter()
        .filter(|c| c.permission == c.name)
        .map(|c| c.name)
}
