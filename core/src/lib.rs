//! dialpool: a database dialer, connection pool and query-deadline engine
//! for PostgreSQL and MySQL/MariaDB.
//!
//! Each layer — the dial, the login, the wait for a pooled connection, the
//! query — has its own limit, and every failure is an [`Error`] naming the
//! layer, the limit that fired and the time spent.

pub mod client;
pub mod config;
pub mod deadline;
pub mod dial;
pub mod error;
pub mod mysql;
pub mod pg;
pub mod pool;
pub mod rows;
pub mod runtime;
pub mod stmt_cache;
pub mod stream;

pub use client::{metrics_text, Connection, Ctx, Pool, Session};
pub use config::Config;
pub use deadline::Deadline;
pub use dial::{Connected, Dialer, PhaseTimings};
pub use error::{Code, Error, Layer, Limit, Result};
pub use rows::{Column, QueryResult};

/// The library's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
