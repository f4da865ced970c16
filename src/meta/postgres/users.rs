//! `UserStore` on PostgreSQL (tables from migrations/V3__auth.sql).

use std::time::SystemTime;

use async_trait::async_trait;
use uuid::Uuid;

use super::sql::{self, get};
use super::PostgresStore;
use crate::meta::users::{RepoFilter, RobotToken, StoredGrant, User, UserStore};
use crate::meta::{MetaError, Page};

#[async_trait]
impl UserStore for PostgresStore {
    async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        admin: bool,
    ) -> Result<bool, MetaError> {
        let inserted = sql::execute(
            &self.client().await?,
            "INSERT INTO users (name, password_hash, admin) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
            &[&name, &password_hash, &admin],
        )
        .await?;
        Ok(inserted == 1)
    }

    async fn remove_user(&self, name: &str) -> Result<bool, MetaError> {
        let deleted = sql::execute(
            &self.client().await?,
            "DELETE FROM users WHERE name = $1",
            &[&name],
        )
        .await?;
        Ok(deleted == 1)
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, MetaError> {
        let updated = sql::execute(
            &self.client().await?,
            "UPDATE users SET password_hash = $2, password_changed_at = now() WHERE name = $1",
            &[&name, &password_hash],
        )
        .await?;
        Ok(updated == 1)
    }

    async fn user(&self, name: &str) -> Result<Option<User>, MetaError> {
        let row = sql::query_opt(
            &self.client().await?,
            "SELECT id, name, password_hash, admin, password_changed_at FROM users WHERE name = $1",
            &[&name],
        )
        .await?;
        row.map(|r| {
            Ok(User {
                id: get(&r, 0)?,
                name: get(&r, 1)?,
                password_hash: get(&r, 2)?,
                admin: get(&r, 3)?,
                password_changed_at: get(&r, 4)?,
            })
        })
        .transpose()
    }

    async fn users(&self) -> Result<Vec<(String, bool)>, MetaError> {
        let rows = sql::query(
            &self.client().await?,
            "SELECT name, admin FROM users ORDER BY name",
            &[],
        )
        .await?;
        rows.iter().map(|r| Ok((get(r, 0)?, get(r, 1)?))).collect()
    }

    async fn grants(&self, user_id: i64) -> Result<Vec<StoredGrant>, MetaError> {
        let rows = sql::query(
            &self.client().await?,
            "SELECT pattern, actions FROM permissions WHERE user_id = $1 ORDER BY pattern",
            &[&user_id],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredGrant {
                    pattern: get(r, 0)?,
                    permissions: get(r, 1)?,
                })
            })
            .collect()
    }

    async fn grant(
        &self,
        user: &str,
        pattern: &str,
        permissions: &[String],
    ) -> Result<bool, MetaError> {
        // The union keeps the array sorted and free of duplicates.
        let changed = sql::execute(
            &self.client().await?,
            "INSERT INTO permissions (user_id, pattern, actions)
             SELECT id, $2, ARRAY(SELECT DISTINCT unnest($3::text[]) ORDER BY 1)
             FROM users WHERE name = $1
             ON CONFLICT (user_id, pattern) DO UPDATE SET actions = ARRAY(
                 SELECT DISTINCT unnest(permissions.actions || EXCLUDED.actions) ORDER BY 1)",
            &[&user, &pattern, &permissions],
        )
        .await?;
        Ok(changed == 1)
    }

    async fn revoke(
        &self,
        user: &str,
        pattern: &str,
        permissions: Option<&[String]>,
    ) -> Result<bool, MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(super::error::db)?;
        let changed = match permissions {
            None => {
                sql::execute(
                    &tx,
                    "DELETE FROM permissions p USING users u
                     WHERE p.user_id = u.id AND u.name = $1 AND p.pattern = $2",
                    &[&user, &pattern],
                )
                .await?
            }
            Some(permissions) => {
                let changed = sql::execute(
                    &tx,
                    "UPDATE permissions p SET actions = ARRAY(
                         SELECT a FROM unnest(p.actions) a WHERE a <> ALL($3::text[]) ORDER BY 1)
                     FROM users u
                     WHERE p.user_id = u.id AND u.name = $1 AND p.pattern = $2
                       AND p.actions && $3::text[]",
                    &[&user, &pattern, &permissions],
                )
                .await?;
                // Only the row just changed can have been emptied.
                sql::execute(
                    &tx,
                    "DELETE FROM permissions p USING users u
                     WHERE p.user_id = u.id AND u.name = $1 AND p.pattern = $2
                       AND p.actions = '{}'",
                    &[&user, &pattern],
                )
                .await?;
                changed
            }
        };
        tx.commit().await.map_err(super::error::db)?;
        Ok(changed > 0)
    }

    async fn public_patterns(&self) -> Result<Vec<String>, MetaError> {
        let rows = sql::query(
            &self.client().await?,
            "SELECT pattern FROM public_repositories ORDER BY pattern",
            &[],
        )
        .await?;
        rows.iter().map(|r| get(r, 0)).collect()
    }

    async fn set_public(&self, pattern: &str, public: bool) -> Result<bool, MetaError> {
        let statement = if public {
            "INSERT INTO public_repositories (pattern) VALUES ($1) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM public_repositories WHERE pattern = $1"
        };
        let changed = sql::execute(&self.client().await?, statement, &[&pattern]).await?;
        Ok(changed == 1)
    }

    async fn create_robot_token(&self, user: &str, token: &RobotToken) -> Result<bool, MetaError> {
        let inserted = sql::execute(
            &self.client().await?,
            "INSERT INTO robot_tokens (id, user_id, secret_sha256, scopes, expires_at)
             SELECT $2, id, $3, $4, $5 FROM users WHERE name = $1",
            &[
                &user,
                &token.id,
                &token.secret_sha256,
                &token.scopes,
                &token.expires_at,
            ],
        )
        .await?;
        Ok(inserted == 1)
    }

    async fn robot_token(&self, id: Uuid) -> Result<Option<RobotToken>, MetaError> {
        let row = sql::query_opt(
            &self.client().await?,
            "SELECT id, user_id, secret_sha256, scopes, expires_at FROM robot_tokens
             WHERE id = $1",
            &[&id],
        )
        .await?;
        row.map(|r| {
            Ok(RobotToken {
                id: get(&r, 0)?,
                user_id: get(&r, 1)?,
                secret_sha256: get(&r, 2)?,
                scopes: get(&r, 3)?,
                expires_at: get::<SystemTime>(&r, 4)?,
            })
        })
        .transpose()
    }

    async fn catalog_filtered(
        &self,
        page: &Page,
        filter: &RepoFilter,
    ) -> Result<Vec<String>, MetaError> {
        let after = page.last.as_deref().unwrap_or("");
        let limit = page.n.map(i64::from);
        // Same keyset scan as the plain catalog, with the filter as a predicate on it.
        let rows = sql::query(
            &self.client().await?,
            "SELECT name FROM repositories
             WHERE name > $1
               AND ($3 OR name = ANY($4::text[])
                    OR EXISTS (SELECT 1 FROM unnest($5::text[]) p WHERE starts_with(name, p)))
             ORDER BY name LIMIT $2",
            &[&after, &limit, &filter.all, &filter.names, &filter.prefixes],
        )
        .await?;
        rows.iter().map(|r| get(r, 0)).collect()
    }
}
