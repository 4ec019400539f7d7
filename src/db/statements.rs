//! Prepared statements, cached per connection: a step sends about twenty statements, the same
//! texts every time; preparing each once per session saves its parse, analysis and a round trip
//! at every step, and lets PostgreSQL keep a generic plan. That is most of what an idle or lightly
//! loaded worker costs the server.
//!
//! `Db` wraps any client (a connection or a transaction on it) together with the connection's
//! cache and offers the usual calls. A text whose result type changed under it (PostgreSQL says
//! "cached plan must not change result type") is prepared again once.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, GenericClient, Row, Statement};

/// Statements texts kept at most; beyond, the cache starts over (texts that embed a partition's
/// oid are one per partition).
const CAPACITY: usize = 512;

/// The prepared statements of one connection.
pub struct Statements {
    map: Mutex<Option<HashMap<String, Statement>>>,
    enabled: bool,
}

/// No cache: every statement is prepared for its one use (commands that run once).
static ONCE: Statements = Statements {
    map: Mutex::new(None),
    enabled: false,
};

impl Default for Statements {
    fn default() -> Self {
        Statements::new()
    }
}

impl Statements {
    pub fn new() -> Statements {
        Statements {
            map: Mutex::new(None),
            enabled: true,
        }
    }

    async fn get<C: GenericClient>(&self, client: &C, sql: &str) -> Result<Statement, Error> {
        if !self.enabled {
            return client.prepare(sql).await;
        }
        if let Some(s) = self
            .map
            .lock()
            .expect("statement cache")
            .as_ref()
            .and_then(|m| m.get(sql))
        {
            return Ok(s.clone());
        }
        let s = client.prepare(sql).await?;
        let mut guard = self.map.lock().expect("statement cache");
        let map = guard.get_or_insert_with(HashMap::new);
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn forget(&self, sql: &str) {
        if let Some(m) = self.map.lock().expect("statement cache").as_mut() {
            m.remove(sql);
        }
    }
}

/// A client with its connection's statement cache.
pub struct Db<'a, C> {
    client: &'a C,
    statements: &'a Statements,
}

impl<'a, C> Clone for Db<'a, C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<'a, C> Copy for Db<'a, C> {}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

fn result_type_changed(e: &Error) -> bool {
    e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED)
}

impl<'a, C: GenericClient + Sync> Db<'a, C> {
    pub fn new(client: &'a C, statements: &'a Statements) -> Self {
        Db { client, statements }
    }

    /// Without a cache (a command that runs its statements once).
    pub fn once(client: &'a C) -> Self {
        Db {
            client,
            statements: &ONCE,
        }
    }

    /// The client itself (for calls that take one).
    pub fn client(&self) -> &'a C {
        self.client
    }

    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        let s = self.statements.get(self.client, sql).await?;
        match self.client.query(&s, params).await {
            Err(e) if result_type_changed(&e) => {
                self.statements.forget(sql);
                let s = self.statements.get(self.client, sql).await?;
                self.client.query(&s, params).await
            }
            other => other,
        }
    }

    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        let s = self.statements.get(self.client, sql).await?;
        match self.client.query_one(&s, params).await {
            Err(e) if result_type_changed(&e) => {
                self.statements.forget(sql);
                let s = self.statements.get(self.client, sql).await?;
                self.client.query_one(&s, params).await
            }
            other => other,
        }
    }

    pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        let s = self.statements.get(self.client, sql).await?;
        match self.client.query_opt(&s, params).await {
            Err(e) if result_type_changed(&e) => {
                self.statements.forget(sql);
                let s = self.statements.get(self.client, sql).await?;
                self.client.query_opt(&s, params).await
            }
            other => other,
        }
    }

    pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        let s = self.statements.get(self.client, sql).await?;
        match self.client.execute(&s, params).await {
            Err(e) if result_type_changed(&e) => {
                self.statements.forget(sql);
                let s = self.statements.get(self.client, sql).await?;
                self.client.execute(&s, params).await
            }
            other => other,
        }
    }

    /// Statements without parameters, as one simple-protocol message (not cached).
    pub async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.client.batch_execute(sql).await
    }
}
