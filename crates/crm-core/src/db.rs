//! The database handle: SQLite (embedded default) or PostgreSQL, one API.

use crate::cache::ConfigCache;
use crate::error::{Error, Result};
use crate::secrets::Sealer;
use sea_orm::{
    ConnAcquireErr, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, RuntimeErr, TransactionTrait,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// The default of [`DbOptions::statement_timeout`].
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How [`Db::connect_with`] builds its pool.
#[derive(Debug, Clone, Copy)]
pub struct DbOptions {
    /// Pool size (at least 1).
    pub max_connections: u32,
    /// The bound on waiting for the database. PostgreSQL gets it as the server-side
    /// `statement_timeout` of every connection; on every backend it bounds opening a
    /// connection and taking one from the pool, so a database that does not answer (a
    /// network partition sends no reset) fails with UNAVAILABLE in this time instead of
    /// hanging. The gateway also bounds every RPC by it (`crm_gateway::deadline`).
    pub statement_timeout: Duration,
    /// How long configuration read on hot write paths is kept in this process
    /// ([`crate::cache`]); zero keeps nothing. A write through this `Db` is seen at once;
    /// another replica's within this time.
    pub config_cache: Duration,
}

/// The default of [`DbOptions::config_cache`].
pub const DEFAULT_CONFIG_CACHE: Duration = Duration::from_secs(1);

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            config_cache: DEFAULT_CONFIG_CACHE,
        }
    }
}

/// UNAVAILABLE for a database that did not answer within `limit`.
pub fn not_answered(limit: Duration) -> Error {
    Error::unavailable(format!(
        "the database did not answer within {} ms; retry later",
        limit.as_millis()
    ))
    .with("timeout_ms", limit.as_millis().to_string())
}

/// A pooled connection to the crm database.
#[derive(Clone, Debug)]
pub struct Db {
    pub conn: DatabaseConnection,
    /// SQLite allows one writer at a time: writers queue here instead of failing with
    /// SQLITE_BUSY. Not used for PostgreSQL.
    write_lock: Option<Arc<Mutex<()>>>,
    /// [`DbOptions::statement_timeout`].
    timeout: Duration,
    /// PostgreSQL: a small pool of its own for single statements taken outside the caller's
    /// transaction while it holds a connection of the main pool ([`Db::side`]); with one
    /// pool, every transaction waiting for a second connection could hold the last ones.
    side: Option<DatabaseConnection>,
    /// The operator's key for sealed secrets ([`crate::secrets`]), when configured.
    sealer: Option<Arc<Sealer>>,
    /// Configuration kept for a moment ([`crate::cache`]).
    cache: Arc<ConfigCache>,
}

/// Connections of [`Db::side`].
const SIDE_CONNECTIONS: u32 = 4;

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
    /// Connects to `url` (`sqlite://crm.db?mode=rwc` or `postgres://...`) with the default
    /// [`DbOptions::statement_timeout`].
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db> {
        let options = DbOptions {
            max_connections,
            ..DbOptions::default()
        };
        Self::connect_with(url, options).await
    }

    /// Connects to `url` with `options`.
    pub async fn connect_with(url: &str, options: DbOptions) -> Result<Db> {
        let timeout = options.statement_timeout.max(Duration::from_millis(1));
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.max_connections(options.max_connections.max(1))
            .min_connections(1)
            // Opening a connection and waiting for a free one are bounded (sqlx's acquire
            // timeout covers the TCP connect, TLS and the startup exchange).
            .connect_timeout(timeout)
            .acquire_timeout(timeout)
            // No ping before every query: a broken connection fails its query (answered
            // UNAVAILABLE) and is dropped from the pool; pinging would double the round trips.
            // Only a connection idle for a while (it may have died in a partition or been
            // closed by the server's keepalive) is pinged first, and replaced if it fails.
            .test_before_acquire_if_idle_for(IDLE_PING_AFTER)
            .sqlx_logging(false);
        postgres_guards(&mut opts, timeout);
        // SQLite: register REGEXP (backed by the regex crate) on every pooled connection;
        // `:` on text fields compiles to it (see query::filter).
        opts.map_sqlx_sqlite_opts(|o| o.with_regexp());
        let side_opts = {
            let mut o = opts.clone();
            o.max_connections(SIDE_CONNECTIONS).min_connections(0);
            o
        };
        let conn = match Database::connect(opts).await {
            Ok(conn) => conn,
            Err(e) => return Err(connect_error(url, e, timeout).await),
        };
        let write_lock = if conn.get_database_backend() == DbBackend::Sqlite {
            conn.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")
                .await?;
            Some(Arc::new(Mutex::new(())))
        } else {
            None
        };
        let side = if conn.get_database_backend() == DbBackend::Postgres {
            match Database::connect(side_opts).await {
                Ok(c) => Some(c),
                Err(e) => return Err(connect_error(url, e, timeout).await),
            }
        } else {
            None
        };
        Ok(Db {
            conn,
            write_lock,
            timeout,
            side,
            sealer: None,
            cache: Arc::new(ConfigCache::new(options.config_cache)),
        })
    }

    /// The configuration cache of this handle and its clones ([`crate::cache`]).
    pub fn config_cache(&self) -> &ConfigCache {
        &self.cache
    }

    /// This handle with `sealer` for sealed secrets ([`crate::secrets`]).
    pub fn with_sealer(mut self, sealer: Arc<Sealer>) -> Db {
        self.sealer = Some(sealer);
        self
    }

    /// The sealer of secrets: FAILED_PRECONDITION `SECRETS_NOT_CONFIGURED` when the
    /// operator configured none (`secrets.key`).
    pub fn sealer(&self) -> Result<&Sealer> {
        self.sealer.as_deref().ok_or_else(|| {
            Error::failed_precondition(
                "SECRETS_NOT_CONFIGURED",
                "storing a secret needs a key: set secrets.key in the gateway's configuration",
            )
        })
    }

    /// [`DbOptions::statement_timeout`] of this pool.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `work` (database calls), answering UNAVAILABLE if it has not finished within
    /// `limit`; the work is dropped (cancelled) then.
    pub async fn within<T>(
        &self,
        limit: Duration,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(not_answered(limit)))
    }

    /// The connection pool for a single statement run outside a transaction the caller
    /// holds (a ticket, see `Tx::take_ticket`): on PostgreSQL a small pool of its own, so it
    /// never waits for a connection held by a transaction that waits for it; `None` on
    /// SQLite (one writer: such statements run in the caller's transaction).
    pub fn side(&self) -> Option<&DatabaseConnection> {
        self.side.as_ref()
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
        let txn = match self.backend() {
            // BEGIN IMMEDIATE: the write lock is taken at once (waiting for another
            // process's writer as the busy timeout allows), never on the first write after
            // reads, when a write committed meanwhile by another connection (a job's
            // progress, the test's own pool) would fail it with SQLITE_BUSY at once.
            DbBackend::Sqlite => {
                self.conn
                    .begin_with_options(sea_orm::TransactionOptions {
                        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                        ..Default::default()
                    })
                    .await?
            }
            _ => self.conn.begin().await?,
        };
        Ok(WriteTxn { txn, _turn: turn })
    }

    /// Begins a read-only transaction for a job's long read, such as an aggregation over all
    /// of a tenant's orders: on PostgreSQL one consistent snapshot (REPEATABLE READ) whose
    /// statements may each run for up to `limit` instead of the pool's statement timeout;
    /// on SQLite a plain transaction (a reader, which never blocks the writer). Stream its
    /// rows ([`sea_orm::StreamTrait`]) rather than collecting them, and drop it when done.
    pub async fn begin_long_read(&self, limit: Duration) -> Result<DatabaseTransaction> {
        match self.backend() {
            DbBackend::Postgres => {
                let txn = self
                    .conn
                    .begin_with_config(
                        Some(sea_orm::IsolationLevel::RepeatableRead),
                        Some(sea_orm::AccessMode::ReadOnly),
                    )
                    .await?;
                txn.execute_unprepared(&format!(
                    "SET LOCAL statement_timeout = {}",
                    limit.as_millis().max(1)
                ))
                .await?;
                Ok(txn)
            }
            _ => Ok(self.conn.begin().await?),
        }
    }

    /// Checks the database answers within the statement timeout.
    pub async fn ping(&self) -> Result<()> {
        self.ping_within(self.timeout).await
    }

    /// Checks the database answers within `limit`.
    pub async fn ping_within(&self, limit: Duration) -> Result<()> {
        self.within(limit, async { self.conn.ping().await.map_err(Error::from) })
            .await
    }

    /// Refreshes the planner statistics of `tables` (`ANALYZE`), for the end of a bulk load:
    /// until autovacuum gets to them, tables that just grew by many rows are planned with
    /// statistics of their former size, and the first queries after the load may take a bad
    /// plan. PostgreSQL samples each table (bounded by [`ANALYZE_TIMEOUT`] in all, not by the
    /// pool's statement timeout); SQLite reads each table's indexes, as a writer.
    /// `analyze_all` does every table of the database (the shared model's and every domain
    /// crate's, with their derived keys); [`Db::analyze`] the tables named.
    pub async fn analyze_all(&self) -> Result<()> {
        match self.backend() {
            DbBackend::Postgres => {
                let txn = self.conn.begin().await?;
                txn.execute_unprepared(&format!(
                    "SET LOCAL statement_timeout = {}",
                    ANALYZE_TIMEOUT.as_millis()
                ))
                .await?;
                txn.execute_unprepared("ANALYZE").await?;
                txn.commit().await?;
            }
            _ => {
                let txn = self.begin_write().await?;
                txn.txn.execute_unprepared("ANALYZE").await?;
                txn.commit().await?;
            }
        }
        Ok(())
    }

    /// Refreshes the planner statistics of `tables` (see [`Db::analyze_all`]).
    pub async fn analyze(&self, tables: &[&str]) -> Result<()> {
        if tables.is_empty() {
            return Ok(());
        }
        let quoted: Vec<String> = tables
            .iter()
            .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
            .collect();
        match self.backend() {
            DbBackend::Postgres => {
                let txn = self.conn.begin().await?;
                txn.execute_unprepared(&format!(
                    "SET LOCAL statement_timeout = {}",
                    ANALYZE_TIMEOUT.as_millis()
                ))
                .await?;
                txn.execute_unprepared(&format!("ANALYZE {}", quoted.join(", ")))
                    .await?;
                txn.commit().await?;
            }
            _ => {
                let txn = self.begin_write().await?;
                for t in &quoted {
                    txn.txn.execute_unprepared(&format!("ANALYZE {t}")).await?;
                }
                txn.commit().await?;
            }
        }
        Ok(())
    }
}

/// The bound on [`Db::analyze`] on PostgreSQL.
pub const ANALYZE_TIMEOUT: Duration = Duration::from_secs(600);

/// A pooled connection idle for this long is pinged before it is handed out.
const IDLE_PING_AFTER: Duration = Duration::from_secs(30);

/// PostgreSQL only: the server-side statement timeout and TCP keepalive of every connection,
/// and a bound on cleaning up a connection whose query was cancelled.
fn postgres_guards(opts: &mut ConnectOptions, timeout: Duration) {
    let statement_timeout_ms = timeout.as_millis().to_string();
    // Startup options (`-c name=value`), no extra round trip. The server aborts a statement
    // running longer than the timeout (SQLSTATE 57014, answered UNAVAILABLE), and its TCP
    // keepalive finds a gateway that vanished in a partition (so its backend, and any locks
    // held, go away after about a minute instead of the OS default of two hours).
    //
    // sqlx 0.9 opens the client socket with a plain `TcpStream::connect` and has no option
    // for SO_KEEPALIVE or TCP_USER_TIMEOUT on it, so the gateway does not rely on TCP to
    // notice a partition: every wait on the database is bounded in time instead (the acquire
    // timeout above, `Db::within`, the release check below and the gateway's RPC deadline).
    opts.map_sqlx_postgres_opts(move |o| {
        o.options([
            ("statement_timeout", statement_timeout_ms.as_str()),
            ("tcp_keepalives_idle", "30"),
            ("tcp_keepalives_interval", "10"),
            ("tcp_keepalives_count", "3"),
        ])
    });
    // A connection goes back to the pool when its user is done, also when the user was
    // cancelled mid-query (an RPC deadline): sqlx then waits for the server's answer to the
    // abandoned query before reusing the connection, and in a partition that answer never
    // comes, so the connection (and its pool slot) would hang until the OS gives up on the
    // socket, many minutes after the partition healed. Wait for it at most a little longer
    // than the server's own statement timeout, then close the connection hard: its slot is
    // freed and the pool opens a fresh connection. (`flush` only waits for answers still
    // owed; a connection released cleanly costs nothing here.)
    let release_bound = timeout + Duration::from_secs(1);
    opts.map_sqlx_postgres_pool_opts(move |pool| {
        pool.after_release(move |conn, _meta| {
            Box::pin(async move {
                use sea_orm::sqlx::Connection;
                match tokio::time::timeout(release_bound, conn.flush()).await {
                    Ok(done) => done.map(|()| true),
                    Err(_) => Err(sea_orm::sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "the database did not answer within {} ms; closing the connection",
                            release_bound.as_millis()
                        ),
                    ))),
                }
            })
        })
    });
}

/// The error of a failed connect, with its cause. sqlx retries a refused connection until
/// the acquire timeout and then reports only "pool timed out"; one direct attempt recovers
/// the cause (refused, TLS, authentication, ...) so the operator sees it.
async fn connect_error(url: &str, e: DbErr, timeout: Duration) -> Error {
    let pool_timed_out = match &e {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => true,
        DbErr::Conn(RuntimeErr::SqlxError(s)) => {
            matches!(**s, sea_orm::sqlx::Error::PoolTimedOut)
        }
        _ => false,
    };
    if pool_timed_out && url.starts_with("postgres") {
        use sea_orm::sqlx::ConnectOptions as _;
        if let Ok(probe) = url.parse::<sea_orm::sqlx::postgres::PgConnectOptions>() {
            match tokio::time::timeout(timeout, probe.connect()).await {
                Ok(Err(cause)) => {
                    return Error::from(DbErr::Conn(RuntimeErr::SqlxError(Arc::new(cause))));
                }
                Ok(Ok(conn)) => {
                    use sea_orm::sqlx::Connection as _;
                    let _ = conn.close().await;
                }
                Err(_) => {
                    return not_answered(timeout).with(
                        "detail",
                        "no answer to the connection attempt (a network partition or a \
                         firewall dropping packets?)",
                    );
                }
            }
        }
    }
    Error::from(e)
}
