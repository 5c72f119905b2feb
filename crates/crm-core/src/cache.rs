//! Tenant configuration kept per process for a moment: the small, rarely written records a
//! hot write path reads on every call (the active duplicate, grading and routing policies,
//! the territory and product-group trees), so a burst of creates does not read them again
//! for each record.
//!
//! **Freshness.** An entry is used for at most the [`Db`](crate::db::Db)'s cache time
//! (`DbOptions::config_cache`, 1 s by default; zero turns the cache off) and never after a
//! write to its collection committed through the same `Db`: every committed
//! [`Tx`](crate::service::Tx) that wrote a collection moves that tenant's collection to a new
//! generation, and an entry read under an older generation is not used again. A transaction
//! that wrote the collection itself reads it from the database, so it sees its own writes.
//! Another replica's write is seen within the cache time, as role edits are
//! (`auth.policy_cache_ms`).
//!
//! Nothing here is state that matters: a lost or cold cache only costs a read.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The most entries kept; the cache is emptied when it would grow beyond.
const MAX_ENTRIES: usize = 10_000;

/// Tenant, collection.
type Scope = (String, &'static str);

struct Entry {
    at: Instant,
    generation: u64,
    value: Arc<dyn Any + Send + Sync>,
}

#[derive(Default)]
struct Inner {
    generations: HashMap<Scope, u64>,
    entries: HashMap<(Scope, String), Entry>,
}

/// Cached configuration reads of one [`Db`](crate::db::Db), shared by its clones.
pub struct ConfigCache {
    ttl: Duration,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ConfigCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A read in progress: the generation it started under, to be handed back with its value.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl ConfigCache {
    /// A cache whose entries live `ttl` (zero: nothing is kept).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The value kept for `key` of the tenant's `collection`, if still fresh; otherwise the
    /// ticket to [`ConfigCache::put`] the value read now.
    pub fn get<T: Any + Send + Sync>(
        &self,
        tenant: &str,
        collection: &'static str,
        key: &str,
    ) -> Result<Arc<T>, Ticket> {
        self.get_at(tenant, collection, key, Instant::now())
    }

    fn get_at<T: Any + Send + Sync>(
        &self,
        tenant: &str,
        collection: &'static str,
        key: &str,
        now: Instant,
    ) -> Result<Arc<T>, Ticket> {
        let Ok(inner) = self.inner.lock() else {
            return Err(Ticket(u64::MAX));
        };
        let scope = (tenant.to_owned(), collection);
        let generation = inner.generations.get(&scope).copied().unwrap_or(0);
        if self.ttl.is_zero() {
            return Err(Ticket(u64::MAX));
        }
        if let Some(e) = inner.entries.get(&(scope, key.to_owned()))
            && e.generation == generation
            && now.saturating_duration_since(e.at) < self.ttl
            && let Ok(v) = e.value.clone().downcast::<T>()
        {
            return Ok(v);
        }
        Err(Ticket(generation))
    }

    /// Keeps `value`, read after `ticket` was given, unless the collection was written since.
    pub fn put<T: Any + Send + Sync>(
        &self,
        tenant: &str,
        collection: &'static str,
        key: &str,
        ticket: Ticket,
        value: Arc<T>,
    ) {
        self.put_at(tenant, collection, key, ticket, value, Instant::now());
    }

    fn put_at<T: Any + Send + Sync>(
        &self,
        tenant: &str,
        collection: &'static str,
        key: &str,
        ticket: Ticket,
        value: Arc<T>,
        at: Instant,
    ) {
        if self.ttl.is_zero() || ticket.0 == u64::MAX {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let scope = (tenant.to_owned(), collection);
        if inner.generations.get(&scope).copied().unwrap_or(0) != ticket.0 {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner.entries.insert(
            (scope, key.to_owned()),
            Entry {
                at,
                generation: ticket.0,
                value,
            },
        );
    }

    /// A committed write to the tenant's `collection`: what was kept of it is not used again.
    pub fn written(&self, tenant: &str, collection: &'static str) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let scope = (tenant.to_owned(), collection);
        let g = inner.generations.entry(scope.clone()).or_insert(0);
        *g = g.wrapping_add(1) % (u64::MAX - 1);
        inner.entries.retain(|(s, _), _| s != &scope);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn kept_until_stale_or_written() {
        let c = ConfigCache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let ticket = c.get_at::<u32>("a", "things", "k", t0).unwrap_err();
        c.put_at("a", "things", "k", ticket, Arc::new(7u32), t0);
        assert_eq!(*c.get_at::<u32>("a", "things", "k", t0).unwrap(), 7);
        // Another tenant, another key, another type: not this entry.
        assert!(c.get_at::<u32>("b", "things", "k", t0).is_err());
        assert!(c.get_at::<u32>("a", "things", "j", t0).is_err());
        assert!(c.get_at::<u64>("a", "things", "k", t0).is_err());
        // Stale after the time.
        assert!(
            c.get_at::<u32>("a", "things", "k", t0 + Duration::from_secs(1))
                .is_err()
        );
        // A write drops it, and a read begun before the write is not kept.
        let before = c.get_at::<u32>("a", "other", "k", t0).unwrap_err();
        c.put_at("a", "things", "k", ticket, Arc::new(7u32), t0);
        c.written("a", "things");
        assert!(c.get_at::<u32>("a", "things", "k", t0).is_err());
        c.put_at("a", "things", "k", ticket, Arc::new(8u32), t0);
        assert!(c.get_at::<u32>("a", "things", "k", t0).is_err());
        // Writes to one collection leave the others.
        c.put_at("a", "other", "k", before, Arc::new(1u32), t0);
        c.written("a", "things");
        assert_eq!(*c.get_at::<u32>("a", "other", "k", t0).unwrap(), 1);
    }

    #[test]
    fn zero_time_keeps_nothing() {
        let c = ConfigCache::new(Duration::ZERO);
        let t = c.get::<u32>("a", "x", "k").unwrap_err();
        c.put("a", "x", "k", t, Arc::new(1u32));
        assert!(c.get::<u32>("a", "x", "k").is_err());
    }
}
