//! Running SQL text that holds several statements one statement at a time.
//!
//! The simple protocol accepts several statements in one message, but Citus refuses several
//! utility statements in one string ("cannot execute multiple utility events"). The texts here
//! are this crate's own (`sql/`, rendered with quoted names): `statements` splits them at
//! semicolons outside quotes, dollar quotes and comments, and `run` sends each on its own.

use crate::error::{DbContext, Result};
use tokio_postgres::GenericClient;

/// The statements of `sql`, without empty ones (comments alone count as empty).
pub fn statements(sql: &str) -> Vec<String> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut meaningful = false;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
                continue;
            }
            b'\'' | b'"' => {
                meaningful = true;
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == c {
                        if bytes.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'$' => {
                meaningful = true;
                // A dollar quote: $tag$ ... $tag$ (tag: letters, digits, underscores).
                let tag_end = bytes[i + 1..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map(|p| i + 1 + p);
                if let Some(end) = tag_end.filter(|e| bytes.get(*e) == Some(&b'$')) {
                    let tag = &sql[i..=end];
                    if let Some(close) = sql[end + 1..].find(tag) {
                        i = end + 1 + close + tag.len();
                        continue;
                    }
                }
            }
            b';' => {
                if meaningful {
                    out.push(sql[start..i].trim().to_string());
                }
                start = i + 1;
                meaningful = false;
            }
            c if !c.is_ascii_whitespace() => meaningful = true,
            _ => {}
        }
        i += 1;
    }
    if meaningful && start < sql.len() {
        let rest = sql[start..].trim();
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    out
}

/// Runs each statement of `sql` on its own, in order; `what` names the work for errors.
pub async fn run<C: GenericClient>(client: &C, sql: &str, what: &str) -> Result<()> {
    for statement in statements(sql) {
        client.batch_execute(&statement).await.ctx(what)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let sql = "create table a (x text default 'a;b'); -- a comment; with a semicolon
            /* block; comment */ create function f() returns int language sql as $fn$ select 1; $fn$;
            comment on table a is 'it''s; fine';
            select \"odd;name\" from a;
            -- only a comment at the end;
            ";
        let s = statements(sql);
        assert_eq!(s.len(), 4, "{s:#?}");
        assert!(s[0].starts_with("create table a") && s[0].ends_with("'a;b')"));
        assert!(s[1].contains("$fn$ select 1; $fn$"), "{}", s[1]);
        assert!(s[2].ends_with("'it''s; fine'"));
        assert!(s[3].contains("\"odd;name\""));
        assert!(statements("  -- nothing\n ; ;").is_empty());
        assert_eq!(statements("select $1, 2"), vec!["select $1, 2"]);
    }
}
