//! The gateway's own database: web accounts, sessions, API tokens, provider profiles and the
//! index of the contract's events. SQLite embedded by default (a file, no setup), MySQL or
//! MariaDB by URL; the backend is chosen at run time from the URL through sqlx's Any driver,
//! and one set of portable migrations (`migrations/`) runs on both at open.
//!
//! This module holds the SQL and plain rows only; what the rows mean (keystores, sealing,
//! validation) belongs to the web module that uses them.

mod accounts;
mod events;
mod exports;
mod idempotency;
mod readings;
mod sessions;
mod tokens;

pub use accounts::AccountRow;
pub use events::EventStore;
pub use exports::ExportRow;
pub use idempotency::{Claim, IDEMPOTENCY_TTL_SECS};
pub use readings::{IngestStats, NewReading, SealRow, Waiting};
pub use sessions::SessionRow;
pub use tokens::{TokenInsert, TokenRow};

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::{AnyPool, Row};

/// The migrations, embedded at build time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// MySQL or MariaDB.
    MySql,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "SQLite",
            Self::MySql => "MySQL/MariaDB",
        })
    }
}

/// Errors of the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported database.
    #[error(
        "database URL {0:?}: use sqlite://PATH (created when missing) or mysql://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    Url(String),
    /// The database could not be reached or opened.
    #[error("cannot open the database at {url}: {source}")]
    Connect {
        /// The URL, password removed.
        url: String,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// A MySQL/MariaDB database in another character set than utf8mb4, which this user may
    /// not change.
    #[error(
        "the database at {url} uses character set {charset} and cannot be changed ({source}): create it with CHARACTER SET utf8mb4, or grant ALTER on it"
    )]
    Charset {
        /// The URL, password removed.
        url: String,
        /// Its character set.
        charset: String,
        /// What the server said.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the database at {url}: {source}")]
    Migrate {
        /// The URL, password removed.
        url: String,
        /// What the migrator said.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A row with this key exists.
    #[error("{0} exists already")]
    Conflict(&'static str),
    /// A stored value is not what this build wrote.
    #[error("corrupt {what} in the database: {problem}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[source] sqlx::Error),
}

impl crate::kind::Classify for DbError {
    fn kind(&self) -> crate::kind::ErrorKind {
        use crate::kind::ErrorKind as K;
        match self {
            Self::Conflict(_) => K::Conflict,
            Self::Corrupt { .. } => K::Internal,
            _ => K::Unavailable,
        }
    }

    /// Database details (URLs, driver messages) stay in the log.
    fn public_message(&self) -> String {
        match self {
            Self::Conflict(_) => self.to_string(),
            _ => "the database is not available; try again shortly".to_owned(),
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        Self::Query(e)
    }
}

/// A pool of connections to the gateway's database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    url: String,
}

/// The default database: a SQLite file in `dir`.
pub fn sqlite_in(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("ehr.db").display())
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        // Unparseable (a password with an unencoded `/` or `#`, say): hide all between the
        // scheme and the last `@`, user name included.
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s + 3 => format!("{}***{}", &url[..s + 3], &url[at..]),
            _ => url.to_owned(),
        },
    }
}

impl Database {
    /// Opens (a SQLite file is created, mode 0600, when missing) and migrates the database at
    /// `url`.
    ///
    /// # Errors
    /// [`DbError::Url`] for an unsupported URL, [`DbError::Connect`] when it cannot be
    /// reached, [`DbError::Migrate`] when the schema cannot be brought up to date.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let shown = redact(url);
        let connect = |source| DbError::Connect {
            url: shown.clone(),
            source,
        };
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() {
                return Err(DbError::Url(shown));
            }
            let path = Path::new(path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.exists()
            {
                crate::fsutil::private_dir(dir).map_err(|e| connect(sqlx::Error::Io(e)))?;
            }
            // Created here rather than by the driver, so that it is private from the start.
            crate::fsutil::touch_private(path).map_err(|e| connect(sqlx::Error::Io(e)))?;
            (Backend::Sqlite, format!("sqlite://{}", path.display()))
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            (Backend::MySql, url.replacen("mariadb://", "mysql://", 1))
        } else {
            return Err(DbError::Url(shown));
        };
        if backend == Backend::MySql {
            utf8mb4(&url, &shown).await?;
        }
        // SQLite takes one writer at a time: a small pool, each connection waiting for the
        // lock rather than failing.
        let max = if backend == Backend::Sqlite { 4 } else { 16 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(connect)?;
        // The write-ahead log lets readers go on while one request writes; it is a property of
        // the file, set once.
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(connect)?;
        }
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| DbError::Migrate {
                url: shown.clone(),
                source,
            })?;
        Ok(Self {
            pool,
            backend,
            url: shown,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL, password removed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One round trip, for health checks.
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn ping(&self) -> Result<(), DbError> {
        let one: i64 = sqlx::query("SELECT 1")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        debug_assert_eq!(one, 1);
        Ok(())
    }

    /// Closes the pool (waits for connections in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Names, organisations and token names may be any Unicode: a MySQL/MariaDB database must
/// hold 4-byte UTF-8 (MariaDB's default is latin1). Checked, and changed if need be, on a
/// connection of its own before the pool opens: a connection caches its database's character
/// set when it selects it, and would create the tables in the old one.
async fn utf8mb4(url: &str, shown: &str) -> Result<(), DbError> {
    use sqlx::Connection;
    let connect = |source| DbError::Connect {
        url: shown.to_owned(),
        source,
    };
    let mut conn = sqlx::AnyConnection::connect(url).await.map_err(connect)?;
    let charset: String = sqlx::query(
        "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA \
         WHERE SCHEMA_NAME = DATABASE()",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(connect)?
    .try_get(0)
    .map_err(connect)?;
    if charset != "utf8mb4" {
        sqlx::query("ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            .execute(&mut conn)
            .await
            .map_err(|source| DbError::Charset {
                url: shown.to_owned(),
                charset,
                source,
            })?;
    }
    let _ = conn.close().await;
    Ok(())
}

/// A write that must have touched one row (or report `what` exists already).
fn inserted(r: Result<AnyQueryResult, sqlx::Error>, what: &'static str) -> Result<(), DbError> {
    match r {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(DbError::Conflict(what)),
        Err(e) => Err(DbError::Query(e)),
    }
}

/// Unix seconds stored as BIGINT.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A full-range u64 (a patient's `aid`/`pid`, any uint64 on chain) in a signed BIGINT, bit
/// for bit; [`bits_u64`] undoes it.
fn u64_bits(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn bits_u64(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

fn to_u64(v: i64, what: &'static str) -> Result<u64, DbError> {
    u64::try_from(v).map_err(|_| DbError::Corrupt {
        what,
        problem: format!("negative value {v}"),
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! A throw-away database for unit tests (SQLite in a temporary folder).

    pub(crate) async fn sqlite() -> (tempfile::TempDir, super::Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = super::Database::open(&super::sqlite_in(dir.path()))
            .await
            .unwrap();
        (dir, db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sqlite_file_is_created_private_and_migrated_once() {
        let (dir, db) = testing::sqlite().await;
        db.ping().await.unwrap();
        assert_eq!(db.backend(), Backend::Sqlite);
        db.close().await;
        // Opening again finds the schema in place.
        let again = Database::open(&sqlite_in(dir.path())).await.unwrap();
        again.ping().await.unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ehr.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn bad_urls_say_what_to_write_and_hide_passwords() {
        let e = Database::open("postgres://u:secret@h/db")
            .await
            .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("sqlite://PATH") && !m.contains("secret"), "{m}");
        assert_eq!(
            redact("mysql://ehr:pw@db:3306/ehr"),
            "mysql://ehr:***@db:3306/ehr"
        );
        assert_eq!(
            redact("mysql://ehr:p/w#x@db:3306/ehr"),
            "mysql://***@db:3306/ehr"
        );
    }
}
