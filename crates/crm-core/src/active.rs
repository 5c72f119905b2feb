//! Tenant configurations of which at most one is active (a resource with a boolean `active`
//! field): finding the active one, and switching the others off when one is activated, in the
//! same transaction (from the resource's `before_write` hook).

use crate::error::Result;
use crate::resource::{Record, Resource};
use crate::service::Tx;
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use uuid::Uuid;

/// The tenant's active record of `R`, read as the system inside the transaction, kept
/// per process for a moment ([`Tx::find_cached`]: a change through this replica is seen at
/// once, through another within the configured cache time).
pub async fn active<R: Resource>(tx: &Tx<'_>) -> Result<Option<Record<R>>> {
    Ok(tx
        .find_cached::<R>(
            "active",
            Condition::all().add(Expr::col("active").eq(true)),
            1,
        )
        .await?
        .first()
        .cloned())
}

/// Switches off every active record of `R` but `id`, by writing `off` (a record whose
/// `active` is false) with the mask `active`; each change is checked, audited and evented.
pub async fn deactivate_others<R: Resource>(tx: &Tx<'_>, id: Uuid, off: R) -> Result<()> {
    let others = tx
        .find::<R>(
            Condition::all()
                .add(Expr::col("active").eq(true))
                .add(Expr::col("id").ne(id)),
            100,
        )
        .await?;
    for o in others {
        tx.update(
            o.meta.id,
            off.clone(),
            &["active".to_owned()],
            &o.meta.etag(),
        )
        .await?;
    }
    Ok(())
}
