//! List machinery shared by every service: AIP-160 filters, order_by, page tokens.

pub mod filter;
pub mod page;
