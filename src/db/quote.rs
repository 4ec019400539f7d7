//! Quoting of identifiers and literals that come from configuration. Every identifier that
//! reaches SQL text goes through `ident`; values go through bound parameters where PostgreSQL
//! allows them, and through `literal` only in DDL, where it does not.

/// Quotes an identifier the way PostgreSQL's `quote_ident` does, always adding quotes.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.name`, both quoted.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// Quotes a string literal for DDL (standard_conforming_strings is on since PostgreSQL 9.1;
/// the E'' form keeps backslashes safe whatever the setting).
pub fn literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_double_embedded_quotes() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(qualified("my schema", "t"), "\"my schema\".\"t\"");
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b'"), "E'a\\\\b'''");
    }
}
