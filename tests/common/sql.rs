//! Looking inside a test registry's metadata from outside it, whichever store it uses:
//! PostgreSQL, or the embedded SQLite file. Queries are written once, with `$1`-style
//! placeholders, and select text (`CAST(x AS TEXT)`), which both databases accept.

use super::TestRegistry;

pub enum Sql {
    Postgres(tokio_postgres::Client),
    Sqlite(std::sync::Mutex<rusqlite::Connection>),
}

/// A connection to the registry's metadata.
pub async fn metadata(registry: &TestRegistry) -> Sql {
    match &registry.config.database.url {
        Some(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect to the registry's database");
            tokio::spawn(connection);
            Sql::Postgres(client)
        }
        None => {
            let file = registry.config.data_dir.join("metadata.sqlite");
            let connection = rusqlite::Connection::open(&file).expect("open metadata.sqlite");
            connection
                .busy_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            Sql::Sqlite(std::sync::Mutex::new(connection))
        }
    }
}

/// `$N` placeholders as SQLite numbers them by position (`?N`).
fn sqlite_placeholders(sql: &str) -> String {
    sql.replace('$', "?")
}

impl Sql {
    /// The rows, each column as text (NULL as `None`).
    pub async fn rows(&self, sql: &str, params: &[&str]) -> Vec<Vec<Option<String>>> {
        match self {
            Sql::Postgres(client) => {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                client
                    .query(sql, &params)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                    .iter()
                    .map(|row| (0..row.len()).map(|i| row.get(i)).collect())
                    .collect()
            }
            Sql::Sqlite(connection) => {
                let connection = connection.lock().unwrap();
                let mut statement = connection
                    .prepare(&sqlite_placeholders(sql))
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                let columns = statement.column_count();
                statement
                    .query_map(rusqlite::params_from_iter(params.iter()), |row| {
                        (0..columns).map(|i| row.get(i)).collect()
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
        }
    }

    /// One text value (the first column of the first row).
    pub async fn value(&self, sql: &str, params: &[&str]) -> String {
        self.rows(sql, params).await[0][0]
            .clone()
            .unwrap_or_default()
    }

    /// Rows changed.
    pub async fn execute(&self, sql: &str, params: &[&str]) -> u64 {
        match self {
            Sql::Postgres(client) => {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                client
                    .execute(sql, &params)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Sql::Sqlite(connection) => connection
                .lock()
                .unwrap()
                .execute(
                    &sqlite_placeholders(sql),
                    rusqlite::params_from_iter(params.iter()),
                )
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                as u64,
        }
    }
}
