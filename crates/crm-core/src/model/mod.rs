//! The shared customer model (K1-K4, K7 consent): plain data, field tables and validation.

pub mod account;
pub mod consent;
pub mod contact;
pub mod custom_field;
pub mod directory;
pub mod order;
pub mod product;
pub mod role;

pub use account::Account;
pub use consent::{Consent, ConsentChannel, ConsentStatus};
pub use contact::{Contact, Email, Phone, Position, PostalAddress};
pub use custom_field::{CustomFieldDefinition, CustomValue};
pub use directory::{Team, Territory, User};
pub use order::{Order, OrderLine, OrderStatus, SalesChannel};
pub use product::{Product, ProductGroup};
pub use role::Role;

use crate::registry::RegistryBuilder;

/// Registers the shared model's collections.
pub fn register(r: &mut RegistryBuilder) {
    r.resource::<Account>()
        .resource::<Contact>()
        .resource::<Position>()
        .resource::<Product>()
        .resource::<ProductGroup>()
        .resource::<Order>()
        .resource::<User>()
        .resource::<Team>()
        .resource::<Territory>()
        .resource::<Role>()
        .resource::<CustomFieldDefinition>()
        .resource::<Consent>();
    r.schema(consent::SCHEMA);
}
