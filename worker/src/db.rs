//! Connecting the `ledgerflow` process to PostgreSQL, and saying why it
//! could not: the server's address and the cause in words an operator can
//! act on ("is PostgreSQL running at ...?", "create it with createdb ..."),
//! never sqlx's raw text (which carries the server's source line, "at line
//! 948") nor the password in the URL.
//!
//! A pool alone answers a dead server only after its acquire timeout (10 s)
//! with "pool timed out"; so every pool here is preceded by one direct
//! connection attempt, bounded by [`CONNECT_TIMEOUT`], whose error is
//! explained.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

/// `DATABASE_URL` when it is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The database every PostgreSQL server has, where scratch databases are
/// created and dropped from.
pub const MAINTENANCE_DATABASE: &str = "postgres";

/// How long one connection attempt may take before the server counts as
/// not answering.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection to PostgreSQL failed, with the server's address.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "DATABASE_URL is not a PostgreSQL URL ({0}); expected postgres://USER@HOST:PORT/DATABASE"
    )]
    BadUrl(String),
    #[error("cannot connect to PostgreSQL at {addr}: {cause}; is PostgreSQL running at {addr}?")]
    Unreachable { addr: String, cause: String },
    #[error(
        "database \"{database}\" does not exist on the PostgreSQL server at {addr}; create it with `createdb {createdb_args}{database}`"
    )]
    NoDatabase {
        addr: String,
        database: String,
        createdb_args: String,
    },
    #[error("PostgreSQL at {addr} refused user \"{user}\": {message}")]
    Refused {
        addr: String,
        user: String,
        message: String,
    },
    #[error("PostgreSQL at {addr}: {message}")]
    Server { addr: String, message: String },
}

impl DbError {
    /// True when nothing answered at the address (refused, unreachable, timed out).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DbError::Unreachable { .. })
    }
}

/// The connect options of `url`.
pub fn options(url: &str) -> Result<PgConnectOptions, DbError> {
    url.parse::<PgConnectOptions>()
        .map_err(|e| DbError::BadUrl(server_message(&e)))
}

/// Where `opts` points, as an operator would write it: `host:port`, or the
/// socket path.
pub fn address(opts: &PgConnectOptions) -> String {
    match opts.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", opts.get_host(), opts.get_port()),
    }
}

/// The text of a sqlx error without what an operator cannot use: a
/// database error's message alone (not "error returned from database:",
/// nor the server's source file and line).
pub fn server_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Io(io) => io_cause(io),
        sqlx::Error::Configuration(c) => c.to_string(),
        other => other.to_string(),
    }
}

fn io_cause(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::TimedOut => "timed out".into(),
        ErrorKind::NotFound => "no such socket".into(),
        _ => e.to_string(),
    }
}

/// `e`, from connecting with `opts`, in an operator's words.
pub fn explain(opts: &PgConnectOptions, e: &sqlx::Error) -> DbError {
    let addr = address(opts);
    match e {
        sqlx::Error::Io(io) => DbError::Unreachable {
            addr,
            cause: io_cause(io),
        },
        sqlx::Error::PoolTimedOut => DbError::Unreachable {
            addr,
            cause: "no connection within the pool's timeout".into(),
        },
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // invalid_catalog_name
            Some("3D000") => DbError::NoDatabase {
                database: opts.get_database().unwrap_or("postgres").to_string(),
                createdb_args: match opts.get_socket() {
                    Some(_) => String::new(),
                    None => format!("-h {} -p {} ", opts.get_host(), opts.get_port()),
                },
                addr,
            },
            // invalid_authorization_specification, invalid_password
            Some("28000") | Some("28P01") => DbError::Refused {
                addr,
                user: opts.get_username().to_string(),
                message: db.message().to_string(),
            },
            _ => DbError::Server {
                addr,
                message: db.message().to_string(),
            },
        },
        other => DbError::Server {
            addr,
            message: server_message(other),
        },
    }
}

/// One connection, failing within [`CONNECT_TIMEOUT`] with the reason.
pub async fn connect_one(opts: &PgConnectOptions) -> Result<PgConnection, DbError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(explain(opts, &e)),
        Err(_) => Err(DbError::Unreachable {
            addr: address(opts),
            cause: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        }),
    }
}

/// A pool of up to `max` connections to `url`; a server that is down, a
/// missing database or a refused user fail at once, explained.
pub async fn connect(url: &str, max: u32) -> Result<PgPool, DbError> {
    connect_with(options(url)?, max).await
}

/// [`connect`] with parsed options.
pub async fn connect_with(opts: PgConnectOptions, max: u32) -> Result<PgPool, DbError> {
    let probe = connect_one(&opts).await?;
    // The probe answered; the pool opens its own connections.
    let _ = probe.close().await;
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts.clone())
        .await
        .map_err(|e| explain(&opts, &e))
}

/// The options of `url` pointed at the server's maintenance database.
/// Its statements (CREATE / DROP DATABASE, which wait on checkpoints) are
/// not logged as slow: that is their nature, not a problem to report.
pub fn maintenance(opts: &PgConnectOptions) -> PgConnectOptions {
    opts.clone()
        .database(MAINTENANCE_DATABASE)
        .disable_statement_logging()
}

/// `opts` as a URL (the password, if any, kept: the URL is handed to code
/// of this process, never printed).
pub fn url_of(opts: &PgConnectOptions) -> String {
    opts.to_url_lossy().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_address_fails_fast_and_names_the_address() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let url = format!("postgres://postgres@127.0.0.1:{port}/test");
        let started = std::time::Instant::now();
        let err = connect(&url, 2).await.expect_err("nothing listens there");
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
        assert!(err.is_unreachable(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("is PostgreSQL running at 127.0.0.1:{port}?")),
            "{text}"
        );
        assert!(text.contains("connection refused"), "{text}");
    }

    #[test]
    fn a_bad_url_says_what_is_expected() {
        let err = options("postgres://u@h:notaport/db").expect_err("a port is a number");
        assert!(err.to_string().contains("postgres://"), "{err}");
    }
}
