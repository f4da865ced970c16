//! The effective configuration as TOML with secrets hidden, for `ipfs-registry config`:
//! what an operator may paste into a ticket or a log.
//!
//! Redaction works on the serialized tree rather than on the struct, so settings that other
//! modules add later are covered by the same rules without touching this file.

use std::sync::LazyLock;

use regex::Regex;
use toml::{Table, Value};

use super::Config;

/// URL-safe, so a redacted URL still parses and reads the same.
pub const REDACTED: &str = "REDACTED";

/// Keys whose whole value is a secret (PEM keys, passwords, shared secrets).
fn is_secret_key(key: &str) -> bool {
    key == "signing_key" || key.ends_with("password") || key.ends_with("secret")
}

/// `password=...` (or `sslpassword=...`) inside a libpq key/value connection string,
/// quoted or not.
static KV_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(\w*password)\s*=\s*(?:'(?:[^'\\]|\\.)*'|\S+)").expect("static regex")
});

/// A URL's `user:password@` and any `...password=` query parameter. Done on the text
/// rather than through a URL parser, because libpq's multi-host URLs
/// (`postgres://u:pw@h1:5432,h2:5432/db`) are no URLs to one and would be left whole.
static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^([a-z][a-z0-9+.-]*://[^/?#@:]*:)[^/?#]*@").expect("static regex")
});
static QUERY_PASSWORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)([?&][^=&#]*password=)[^&#]*").expect("static regex"));

/// Hides the passwords of a URL (`postgres://user:pw@host/db`, `?password=pw`) or of a
/// libpq key/value connection string; other text is returned unchanged.
fn redact_credentials(text: &str) -> String {
    if URL_SCHEME.is_match(text) {
        let text = URL_PASSWORD.replace(text, format!("${{1}}{REDACTED}@"));
        return QUERY_PASSWORD
            .replace_all(&text, format!("${{1}}{REDACTED}"))
            .into_owned();
    }
    KV_PASSWORD
        .replace_all(text, format!("${{1}}={REDACTED}"))
        .into_owned()
}

static URL_SCHEME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^[a-z][a-z0-9+.-]*://").expect("static regex"));

fn redact_table(table: &mut Table) {
    for (key, value) in table.iter_mut() {
        match value {
            Value::String(text) if is_secret_key(key) => *text = REDACTED.to_owned(),
            // Header values carry credentials (`Authorization`) under any name.
            Value::Table(headers) if key == "headers" => {
                for (_, value) in headers.iter_mut() {
                    *value = Value::String(REDACTED.to_owned());
                }
            }
            Value::String(text) => *text = redact_credentials(text),
            Value::Table(inner) => redact_table(inner),
            Value::Array(items) => {
                for item in items.iter_mut() {
                    match item {
                        Value::Table(inner) => redact_table(inner),
                        Value::String(text) => *text = redact_credentials(text),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

impl Config {
    /// The configuration as TOML (loadable again with `--config`, secrets aside), with
    /// `auth.signing_key`, passwords and URL credentials replaced by `REDACTED`.
    pub fn to_redacted_toml(&self) -> Result<String, toml::ser::Error> {
        let mut table = Table::try_from(self)?;
        redact_table(&mut table);
        toml::to_string_pretty(&table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_key_value_passwords_are_hidden() {
        assert_eq!(
            redact_credentials("postgres://registry:s3cret@db:5432/registry"),
            format!("postgres://registry:{REDACTED}@db:5432/registry")
        );
        assert_eq!(
            redact_credentials("host=db user=registry password='s3 cret' dbname=registry"),
            format!("host=db user=registry password={REDACTED} dbname=registry")
        );
        assert_eq!(
            redact_credentials("host=db password=s3cret"),
            format!("host=db password={REDACTED}")
        );
        assert_eq!(
            redact_credentials("postgresql://registry:s3cret@db1:5432,db2:5432/registry"),
            format!("postgresql://registry:{REDACTED}@db1:5432,db2:5432/registry")
        );
        assert_eq!(
            redact_credentials(
                "postgres://db/registry?user=registry&password=s3cret&sslpassword=k3y&sslmode=require"
            ),
            format!(
                "postgres://db/registry?user=registry&password={REDACTED}&sslpassword={REDACTED}&sslmode=require"
            )
        );
        assert_eq!(
            redact_credentials("postgres://reg:p@ss@db/registry"),
            format!("postgres://reg:{REDACTED}@db/registry")
        );
        assert_eq!(
            redact_credentials("host=db sslpassword=k3y"),
            format!("host=db sslpassword={REDACTED}")
        );
        // Nothing to hide: unchanged.
        for plain in [
            "http://kubo:5001/",
            "postgres://registry@db/registry",
            "0.0.0.0:5000",
        ] {
            assert_eq!(redact_credentials(plain), plain);
        }
    }

    #[test]
    fn secret_keys_are_hidden_wherever_they_sit() {
        let mut table: Table = toml::from_str(
            r#"
            listen = "0.0.0.0:5000"
            [auth]
            signing_key = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n"
            signing_key_file = "/run/secrets/key.pem"
            token_ttl = "5m"
            [[upstreams]]
            password = "hunter2"
            "#,
        )
        .unwrap();
        redact_table(&mut table);
        let out = toml::to_string(&table).unwrap();
        assert!(!out.contains("abc") && !out.contains("hunter2"), "{out}");
        assert!(out.contains("/run/secrets/key.pem"), "{out}");
        assert!(out.contains("5m"), "{out}");
    }

    #[test]
    fn the_effective_configuration_round_trips_without_the_password() {
        let mut config = Config::default();
        config.database.url = Some("postgres://registry:s3cret@db/registry".into());
        let text = config.to_redacted_toml().unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.listen, config.listen);
        assert_eq!(back.database.pool_size, config.database.pool_size);
        assert_eq!(back.database.timeout, config.database.timeout);
    }
}
