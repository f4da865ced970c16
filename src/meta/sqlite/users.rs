//! `UserStore` on the embedded SQLite store (tables from migrations-embedded/meta/V2).

use std::collections::BTreeSet;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::error::db;
use super::sql::{from_millis, limit, names, now_millis, to_millis};
use super::SqliteStore;
use crate::meta::sql_common::corrupt;
use crate::meta::users::{RepoFilter, RobotToken, StoredGrant, User, UserStore};
use crate::meta::{MetaError, Page};

fn actions_json(actions: &BTreeSet<String>) -> String {
    serde_json::to_string(actions).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_actions(text: &str) -> Result<BTreeSet<String>, MetaError> {
    serde_json::from_str(text).map_err(|e| corrupt(format_args!("permission actions: {e}")))
}

fn user_id(c: &Connection, name: &str) -> Result<Option<i64>, MetaError> {
    c.query_row("SELECT id FROM users WHERE name = ?1", [name], |row| {
        row.get(0)
    })
    .optional()
    .map_err(db)
}

/// The actions granted to `user` on `pattern`, if any row exists.
fn granted(
    c: &Connection,
    user: i64,
    pattern: &str,
) -> Result<Option<BTreeSet<String>>, MetaError> {
    let text: Option<String> = c
        .query_row(
            "SELECT actions FROM permissions WHERE user_id = ?1 AND pattern = ?2",
            params![user, pattern],
            |row| row.get(0),
        )
        .optional()
        .map_err(db)?;
    text.as_deref().map(parse_actions).transpose()
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        admin: bool,
    ) -> Result<bool, MetaError> {
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        self.write(move |tx| {
            let now = now_millis();
            let inserted = tx
                .execute(
                    "INSERT INTO users (name, password_hash, admin, password_changed_at, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (name) DO NOTHING",
                    params![name, hash, admin, now],
                )
                .map_err(db)?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn remove_user(&self, name: &str) -> Result<bool, MetaError> {
        let name = name.to_owned();
        self.write(move |tx| {
            let deleted = tx
                .execute("DELETE FROM users WHERE name = ?1", [name])
                .map_err(db)?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, MetaError> {
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        self.write(move |tx| {
            let updated = tx
                .execute(
                    "UPDATE users SET password_hash = ?2, password_changed_at = ?3 WHERE name = ?1",
                    params![name, hash, now_millis()],
                )
                .map_err(db)?;
            Ok(updated == 1)
        })
        .await
    }

    async fn user(&self, name: &str) -> Result<Option<User>, MetaError> {
        let name = name.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT id, name, password_hash, admin, password_changed_at FROM users \
                 WHERE name = ?1",
                [name],
                |row| {
                    Ok(User {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        password_hash: row.get(2)?,
                        admin: row.get(3)?,
                        password_changed_at: from_millis(row.get(4)?),
                    })
                },
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn users(&self) -> Result<Vec<(String, bool)>, MetaError> {
        self.read(|c| {
            let mut statement = c
                .prepare("SELECT name, admin FROM users ORDER BY name")
                .map_err(db)?;
            let rows = statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)
        })
        .await
    }

    async fn grants(&self, user_id: i64) -> Result<Vec<StoredGrant>, MetaError> {
        self.read(move |c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT pattern, actions FROM permissions WHERE user_id = ?1 ORDER BY pattern",
                )
                .map_err(db)?;
            let rows = statement
                .query_map([user_id], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(db)?;
            rows.map(|row| {
                let (pattern, actions) = row.map_err(db)?;
                Ok(StoredGrant {
                    pattern,
                    permissions: parse_actions(&actions)?.into_iter().collect(),
                })
            })
            .collect()
        })
        .await
    }

    async fn grant(
        &self,
        user: &str,
        pattern: &str,
        permissions: &[String],
    ) -> Result<bool, MetaError> {
        let (user, pattern) = (user.to_owned(), pattern.to_owned());
        let permissions = permissions.to_vec();
        self.write(move |tx| {
            let Some(id) = user_id(tx, &user)? else {
                return Ok(false);
            };
            let mut actions = granted(tx, id, &pattern)?.unwrap_or_default();
            actions.extend(permissions);
            tx.execute(
                "INSERT INTO permissions (user_id, pattern, actions) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (user_id, pattern) DO UPDATE SET actions = excluded.actions",
                params![id, pattern, actions_json(&actions)],
            )
            .map_err(db)?;
            Ok(true)
        })
        .await
    }

    async fn revoke(
        &self,
        user: &str,
        pattern: &str,
        permissions: Option<&[String]>,
    ) -> Result<bool, MetaError> {
        let (user, pattern) = (user.to_owned(), pattern.to_owned());
        let permissions = permissions.map(<[String]>::to_vec);
        self.write(move |tx| {
            let Some(id) = user_id(tx, &user)? else {
                return Ok(false);
            };
            let Some(mut actions) = granted(tx, id, &pattern)? else {
                return Ok(false);
            };
            let before = actions.len();
            match &permissions {
                None => actions.clear(),
                Some(removed) => actions.retain(|a| !removed.contains(a)),
            }
            if actions.len() == before {
                return Ok(false);
            }
            if actions.is_empty() {
                tx.execute(
                    "DELETE FROM permissions WHERE user_id = ?1 AND pattern = ?2",
                    params![id, pattern],
                )
            } else {
                tx.execute(
                    "UPDATE permissions SET actions = ?3 WHERE user_id = ?1 AND pattern = ?2",
                    params![id, pattern, actions_json(&actions)],
                )
            }
            .map_err(db)?;
            Ok(true)
        })
        .await
    }

    async fn public_patterns(&self) -> Result<Vec<String>, MetaError> {
        self.read(|c| {
            names(
                c,
                "SELECT pattern FROM public_repositories ORDER BY pattern",
                &[],
            )
        })
        .await
    }

    async fn set_public(&self, pattern: &str, public: bool) -> Result<bool, MetaError> {
        let pattern = pattern.to_owned();
        self.write(move |tx| {
            let changed = if public {
                tx.execute(
                    "INSERT INTO public_repositories (pattern, created_at) VALUES (?1, ?2) \
                     ON CONFLICT DO NOTHING",
                    params![pattern, now_millis()],
                )
            } else {
                tx.execute(
                    "DELETE FROM public_repositories WHERE pattern = ?1",
                    [pattern],
                )
            }
            .map_err(db)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn create_robot_token(&self, user: &str, token: &RobotToken) -> Result<bool, MetaError> {
        let user = user.to_owned();
        let token = token.clone();
        self.write(move |tx| {
            let expires = to_millis(token.expires_at);
            let inserted = tx
                .execute(
                    "INSERT INTO robot_tokens (id, user_id, secret_sha256, scopes, expires_at, created_at) \
                     SELECT ?2, id, ?3, ?4, ?5, ?6 FROM users WHERE name = ?1",
                    params![
                        user,
                        token.id.to_string(),
                        token.secret_sha256,
                        token.scopes,
                        expires,
                        now_millis()
                    ],
                )
                .map_err(db)?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn robot_token(&self, id: Uuid) -> Result<Option<RobotToken>, MetaError> {
        self.read(move |c| {
            c.query_row(
                "SELECT user_id, secret_sha256, scopes, expires_at FROM robot_tokens WHERE id = ?1",
                [id.to_string()],
                |row| {
                    Ok(RobotToken {
                        id,
                        user_id: row.get(0)?,
                        secret_sha256: row.get(1)?,
                        scopes: row.get(2)?,
                        expires_at: from_millis(row.get(3)?),
                    })
                },
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn catalog_filtered(
        &self,
        page: &Page,
        filter: &RepoFilter,
    ) -> Result<Vec<String>, MetaError> {
        let (page, filter) = (page.clone(), filter.clone());
        self.read(move |c| {
            let after = page.last.clone().unwrap_or_default();
            let allowed = serde_json::to_string(&filter.names).unwrap_or_else(|_| "[]".into());
            let prefixes = serde_json::to_string(&filter.prefixes).unwrap_or_else(|_| "[]".into());
            // Same keyset scan as the plain catalog, with the filter as a predicate on it.
            names(
                c,
                "SELECT name FROM repositories \
                 WHERE name > ?1 \
                   AND (?3 OR name IN (SELECT value FROM json_each(?4)) \
                        OR EXISTS (SELECT 1 FROM json_each(?5) p \
                                   WHERE substr(name, 1, length(p.value)) = p.value)) \
                 ORDER BY name LIMIT ?2",
                &[&after, &limit(&page), &filter.all, &allowed, &prefixes],
            )
        })
        .await
    }
}
