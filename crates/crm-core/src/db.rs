//! The database handle: SQLite (embedded default) or PostgreSQL, one API.

use crate::error::{Error, Result};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    TransactionTrait,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// A pooled connection to the crm database.
#[derive(Clone, Debug)]
pub struct Db {
    pub conn: DatabaseConnection,
    /// SQLite allows one writer at a time: writers queue here instead of failing with
    /// SQLITE_BUSY. Not used for PostgreSQL.
    write_lock: Option<Arc<Mutex<()>>>,
}

/// A write transaction (and, on SQLite, the writer's turn).
pub struct WriteTxn {
    pub txn: DatabaseTransaction,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTxn {
    pub async fn commit(self) -> Result<()> {
        self.txn.commit().await.map_err(Error::from)
    }
}

impl Db {
    /// Connects to `url` (`sqlite://crm.db?mode=rwc` or `postgres://...`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.max_connections(max_connections.max(1))
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            // No ping before every query: a broken connection fails its query (answered
            // UNAVAILABLE) and is dropped from the pool; pinging would double the round trips.
            .test_before_acquire(false)
            .sqlx_logging(false);
        let conn = Database::connect(opts).await?;
        let write_lock = if conn.get_database_backend() == DbBackend::Sqlite {
            conn.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")
                .await?;
            Some(Arc::new(Mutex::new(())))
        } else {
            None
        };
        Ok(Db { conn, write_lock })
    }

    pub fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    /// Begins a write transaction.
    pub async fn begin_write(&self) -> Result<WriteTxn> {
        let turn = match &self.write_lock {
            Some(l) => Some(l.clone().lock_owned().await),
            None => None,
        };
        let txn = self.conn.begin().await?;
        Ok(WriteTxn { txn, _turn: turn })
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.conn.ping().await.map_err(Error::from)
    }
}
