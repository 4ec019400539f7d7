//! Talking to PostgreSQL: connections (libpq-style options, TLS), identifier quoting, the
//! embedded SQL, advisory locks, and the target schema with its source table.

pub mod connect;
pub mod ddl;
pub mod locks;
pub mod quote;
pub mod source;
pub mod sqltext;
pub mod statements;
pub mod tls;
