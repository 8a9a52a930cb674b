//! The PostgreSQL [`StateStore`]: one row per entity in `actormesh_entity_state`, every claim
//! and save one `INSERT … ON CONFLICT DO UPDATE … WHERE token <= new token` statement.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls, Statement};

use super::{stale, StateStore, StoreFuture};
use crate::error::Error;

/// The default bound on connecting and on each statement.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS actormesh_entity_state (\
     kind TEXT NOT NULL, \
     key BYTEA NOT NULL, \
     token BIGINT NOT NULL, \
     state BYTEA, \
     PRIMARY KEY (kind, key))";

/// Claims the state: inserts the token (no state yet) or raises the stored one, unless a larger
/// token holds it. No row back: a larger token holds it. The row back carries the state kept.
const LOAD: &str = "INSERT INTO actormesh_entity_state AS s (kind, key, token, state) \
     VALUES ($1, $2, $3, NULL) \
     ON CONFLICT (kind, key) DO UPDATE SET token = EXCLUDED.token \
     WHERE s.token <= EXCLUDED.token \
     RETURNING s.state";

/// Saves the state unless a larger token holds it (then no row is affected).
const SAVE: &str = "INSERT INTO actormesh_entity_state AS s (kind, key, token, state) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (kind, key) DO UPDATE SET token = EXCLUDED.token, state = EXCLUDED.state \
     WHERE s.token <= EXCLUDED.token";

/// Entity state in a PostgreSQL table, `actormesh_entity_state`:
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS actormesh_entity_state (
///     kind TEXT NOT NULL, key BYTEA NOT NULL, token BIGINT NOT NULL, state BYTEA,
///     PRIMARY KEY (kind, key))
/// ```
///
/// A row's `token` is the largest fencing token that has claimed the state, its `state` the
/// last state saved (`NULL`: claimed but never saved). Each [`load`](StateStore::load) and
/// [`save`](StateStore::save) is a single `INSERT … ON CONFLICT (kind, key) DO UPDATE … WHERE
/// token <= the new token` statement, so the check and the write are one atomic step on the
/// row, also between nodes. Saves are durable when PostgreSQL acknowledges the commit (with its
/// default `synchronous_commit`). Tokens are stored as `BIGINT`: a token above `i64::MAX` is
/// refused with [`Error::Store`].
///
/// The store keeps one connection (statements from concurrent activations are pipelined on
/// it), driven by a task spawned with `tokio::spawn` on the runtime that connected (an actix
/// system's runtime works). When the connection is lost (the server restarted, or a statement
/// did not answer in time), the next call connects again with the same connection string,
/// and a statement that failed because the connection was lost is retried once on the new
/// connection: a claim or a save with the same token and state is idempotent, so the retry
/// cannot undo a newer activation's claim.
///
/// The connection is plaintext (`NoTls`): reach PostgreSQL over loopback, a Unix socket or a
/// private network.
pub struct PostgresStateStore {
    config: Config,
    /// Where the store connects, for messages (never the password).
    address: String,
    timeout: Duration,
    /// The open connection; `None` after it was found broken, until the next call reconnects.
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
}

/// A connection and the statements prepared on it.
struct Conn {
    client: Client,
    /// The claim and the save, prepared on first use (the table may not exist before).
    statements: tokio::sync::OnceCell<Statements>,
}

struct Statements {
    load: Statement,
    save: Statement,
}

impl Conn {
    async fn statements(&self) -> Result<&Statements, tokio_postgres::Error> {
        self.statements
            .get_or_try_init(|| async {
                Ok(Statements {
                    load: self.client.prepare(LOAD).await?,
                    save: self.client.prepare(SAVE).await?,
                })
            })
            .await
    }
}

impl fmt::Debug for PostgresStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStateStore")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresStateStore {
    /// Connects to PostgreSQL with a libpq-style connection string (`host=127.0.0.1 port=5432
    /// user=actormesh dbname=actormesh password=…`, or a `postgresql://` URL) and creates the
    /// table if it does not exist ([`ensure_schema`](Self::ensure_schema)).
    ///
    /// Connecting is bounded by the string's `connect_timeout`, else 5 s; each statement by the
    /// [`request_timeout`](Self::request_timeout), 5 s unless changed.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] naming the address (host, port, user, database; never the password)
    /// if the string is malformed, the server cannot be reached or refuses the login, or the
    /// table cannot be created.
    pub async fn connect(conninfo: &str) -> Result<Self, Error> {
        let mut config: Config = conninfo.parse().map_err(|e| {
            Error::Store(format!(
                "invalid PostgreSQL connection string: {}",
                describe(&e)
            ))
        })?;
        let connect_timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_TIMEOUT);
        config.connect_timeout(connect_timeout);
        let store = PostgresStateStore {
            address: address(&config),
            config,
            timeout: DEFAULT_TIMEOUT,
            conn: tokio::sync::Mutex::new(None),
        };
        store.ensure_schema().await?;
        Ok(store)
    }

    /// Bounds each statement (a claim, a save, the schema's creation) to `timeout` instead of
    /// 5 s. A statement that does not answer in time fails with [`Error::Store`], and the next
    /// call connects again.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where this store connects: `host:port` (several, comma-separated, if the connection
    /// string lists several), user and database.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Creates the store's table if it does not exist (done by [`connect`](Self::connect)).
    /// Safe to run from several nodes at once.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if PostgreSQL cannot be reached or refuses (e.g. the user may not
    /// create tables: then create the table once with the statement in the
    /// [type's docs](PostgresStateStore) as a user who may, and grant this one `SELECT`,
    /// `INSERT` and `UPDATE` on it).
    pub async fn ensure_schema(&self) -> Result<(), Error> {
        let create =
            || self.with_conn(|conn| async move { conn.client.batch_execute(CREATE_TABLE).await });
        match create().await {
            // Two `CREATE TABLE IF NOT EXISTS` at once can both decide to create the table;
            // the loser fails on the catalog's unique index. Once more finds the table there.
            Err(Failure::Db(e)) if is_creation_race(&e) => create().await,
            result => result,
        }
        .map_err(|failure| self.error("table creation", failure))
    }

    /// The open connection, or a new one if there is none or it has closed.
    async fn conn(&self) -> Result<Arc<Conn>, Failure> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|conn| !conn.client.is_closed()) {
            return Ok(Arc::clone(conn));
        }
        *slot = None;
        let conn = Arc::new(self.open().await?);
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Connects and spawns the connection's task.
    async fn open(&self) -> Result<Conn, Failure> {
        let bound = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_TIMEOUT)
            // Name resolution and the login come on top of the TCP connect's own bound.
            .saturating_mul(2);
        let (client, connection) = tokio::time::timeout(bound, self.config.connect(NoTls))
            .await
            .map_err(|_| Failure::Connect(format!("no answer within {bound:?}")))?
            .map_err(|e| Failure::Connect(describe(&e)))?;
        let address = self.address.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(%address, error = %describe(&e), "PostgreSQL state store connection ended");
            }
        });
        Ok(Conn {
            client,
            statements: tokio::sync::OnceCell::new(),
        })
    }

    /// Runs `op` on the connection, bounded by the request timeout; if the connection turns
    /// out to be lost, connects again and runs it once more.
    async fn with_conn<T, F, Fut>(&self, op: F) -> Result<T, Failure>
    where
        F: Fn(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let mut retried = false;
        loop {
            let conn = self.conn().await?;
            match tokio::time::timeout(self.timeout, op(Arc::clone(&conn))).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if !retried && connection_lost(&e, &conn.client) => {
                    self.forget(&conn).await;
                    retried = true;
                }
                Ok(Err(e)) => {
                    if connection_lost(&e, &conn.client) {
                        self.forget(&conn).await;
                    }
                    return Err(Failure::Db(e));
                }
                Err(_) => {
                    // The connection may hang (server frozen, network cut): the next call
                    // starts on a fresh one.
                    self.forget(&conn).await;
                    return Err(Failure::Timeout);
                }
            }
        }
    }

    /// Drops `conn` from the slot (if it is still the current one).
    async fn forget(&self, conn: &Arc<Conn>) {
        let mut slot = self.conn.lock().await;
        if slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, conn))
        {
            *slot = None;
        }
    }

    fn error(&self, what: &str, failure: Failure) -> Error {
        let address = &self.address;
        Error::Store(match failure {
            Failure::Connect(reason) => {
                format!("cannot connect to PostgreSQL at {address}: {reason}")
            }
            Failure::Db(e) => format!("PostgreSQL {what} at {address} failed: {}", describe(&e)),
            Failure::Timeout => format!(
                "PostgreSQL {what} at {address} did not answer within {:?}",
                self.timeout
            ),
        })
    }
}

/// Why a call failed, before it becomes an [`Error::Store`].
enum Failure {
    Connect(String),
    Db(tokio_postgres::Error),
    Timeout,
}

impl StateStore for PostgresStateStore {
    fn load<'a>(
        &'a self,
        kind: &'a str,
        key: &'a [u8],
        token: u64,
    ) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let db_token = db_token(token)?;
            let row = self
                .with_conn(|conn| async move {
                    let load = &conn.statements().await?.load;
                    conn.client.query_opt(load, &[&kind, &key, &db_token]).await
                })
                .await
                .map_err(|failure| self.error("state claim", failure))?;
            match row {
                None => Err(stale(kind, key, token)),
                Some(row) => row.try_get::<_, Option<Vec<u8>>>(0).map_err(|e| {
                    Error::Store(format!(
                        "PostgreSQL state claim at {} returned a malformed row: {}",
                        self.address,
                        describe(&e)
                    ))
                }),
            }
        })
    }

    fn save<'a>(
        &'a self,
        kind: &'a str,
        key: &'a [u8],
        token: u64,
        state: &'a [u8],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let db_token = db_token(token)?;
            let saved = self
                .with_conn(|conn| async move {
                    let save = &conn.statements().await?.save;
                    conn.client
                        .execute(save, &[&kind, &key, &db_token, &state])
                        .await
                })
                .await
                .map_err(|failure| self.error("state save", failure))?;
            if saved == 0 {
                return Err(stale(kind, key, token));
            }
            Ok(())
        })
    }
}

/// The token as PostgreSQL's `BIGINT`.
fn db_token(token: u64) -> Result<i64, Error> {
    i64::try_from(token).map_err(|_| {
        Error::Store(format!(
            "fencing token {token} is beyond the PostgreSQL store's range (BIGINT, at most {})",
            i64::MAX
        ))
    })
}

/// Whether `e` means the connection is gone, so that a new one may succeed.
fn connection_lost(e: &tokio_postgres::Error, client: &Client) -> bool {
    if e.is_closed() || client.is_closed() {
        return true;
    }
    if e.source().is_some_and(|s| s.is::<std::io::Error>()) {
        return true;
    }
    e.code().is_some_and(|code| {
        *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || code.code().starts_with("08")
    })
}

/// Whether `e` is the lost race of two concurrent `CREATE TABLE IF NOT EXISTS`.
fn is_creation_race(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::DUPLICATE_TABLE
    })
}

/// An error with its causes: tokio-postgres's `Display` names only the kind ("db error").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `host:port[,host:port…] (user U, database D)` from the parsed connection string.
fn address(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let ports = config.get_ports();
    let hosts: Vec<String> = if config.get_hosts().is_empty() {
        config
            .get_hostaddrs()
            .iter()
            .map(ToString::to_string)
            .collect()
    } else {
        config
            .get_hosts()
            .iter()
            .map(|host| match host {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            })
            .collect()
    };
    let hosts = if hosts.is_empty() {
        vec!["localhost".to_owned()]
    } else {
        hosts
    };
    let endpoints: Vec<String> = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            // libpq: one port for all hosts, or one per host; 5432 when none.
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            if host.contains(':') && !host.starts_with('/') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        })
        .collect();
    let mut text = endpoints.join(",");
    if let Some(user) = config.get_user() {
        text.push_str(&format!(" (user {user}"));
        text.push_str(&match config.get_dbname() {
            Some(db) => format!(", database {db})"),
            None => ")".to_owned(),
        });
    } else if let Some(db) = config.get_dbname() {
        text.push_str(&format!(" (database {db})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_beyond_bigint_are_refused_clearly() {
        assert_eq!(db_token(0).unwrap(), 0);
        assert_eq!(db_token(i64::MAX as u64).unwrap(), i64::MAX);
        let err = db_token(i64::MAX as u64 + 1).unwrap_err();
        assert!(matches!(err, Error::Store(_)), "{err}");
        assert!(err.to_string().contains("9223372036854775808"), "{err}");
    }

    #[test]
    fn the_address_names_hosts_ports_user_and_database_but_no_password() {
        let config: Config = "host=127.0.0.1 port=6543 user=app dbname=states password=secret"
            .parse()
            .unwrap();
        let text = address(&config);
        assert_eq!(text, "127.0.0.1:6543 (user app, database states)");
        let config: Config = "postgresql://u:pw@db1:1,db2:2/d".parse().unwrap();
        assert_eq!(address(&config), "db1:1,db2:2 (user u, database d)");
        let config: Config = "host=::1".parse().unwrap();
        assert_eq!(address(&config), "[::1]:5432");
    }
}
