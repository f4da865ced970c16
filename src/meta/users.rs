//! Users, permissions, public repositories and robot tokens: the access-control part of
//! the metadata, behind its own trait so every metadata store can implement it separately.

use std::time::SystemTime;

use async_trait::async_trait;
use uuid::Uuid;

use super::{MetaError, Page};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
    pub admin: bool,
    /// Refresh tokens issued before this are refused.
    pub password_changed_at: SystemTime,
}

/// A stored grant: a repository pattern (see `auth::permission::Pattern`) and the
/// permissions on it (`pull`, `push`, `delete`, `admin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGrant {
    pub pattern: String,
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobotToken {
    pub id: Uuid,
    pub user_id: i64,
    /// sha256 of the token's secret part.
    pub secret_sha256: Vec<u8>,
    /// Space-separated scopes limiting what the token may be exchanged for.
    pub scopes: String,
    pub expires_at: SystemTime,
}

/// Which repository names a listing may show: all, or those equal to one of `names` or
/// starting with one of `prefixes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoFilter {
    pub all: bool,
    pub names: Vec<String>,
    pub prefixes: Vec<String>,
}

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Creates a user. False when the name is taken.
    async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        admin: bool,
    ) -> Result<bool, MetaError>;

    /// Removes the user with their grants and robot tokens. False when unknown.
    async fn remove_user(&self, name: &str) -> Result<bool, MetaError>;

    /// False when the user is unknown.
    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, MetaError>;

    async fn user(&self, name: &str) -> Result<Option<User>, MetaError>;

    /// Names of all users, with their admin flag, in name order.
    async fn users(&self) -> Result<Vec<(String, bool)>, MetaError>;

    async fn grants(&self, user_id: i64) -> Result<Vec<StoredGrant>, MetaError>;

    /// Adds permissions on a pattern to what the user already has there. False when the
    /// user is unknown.
    async fn grant(
        &self,
        user: &str,
        pattern: &str,
        permissions: &[String],
    ) -> Result<bool, MetaError>;

    /// Takes permissions on a pattern away (all of them when `permissions` is `None`).
    /// False when the user had none there.
    async fn revoke(
        &self,
        user: &str,
        pattern: &str,
        permissions: Option<&[String]>,
    ) -> Result<bool, MetaError>;

    async fn public_patterns(&self) -> Result<Vec<String>, MetaError>;

    /// Marks a pattern public (or no longer). False when nothing changed.
    async fn set_public(&self, pattern: &str, public: bool) -> Result<bool, MetaError>;

    /// False when the user is unknown.
    async fn create_robot_token(&self, user: &str, token: &RobotToken) -> Result<bool, MetaError>;

    async fn robot_token(&self, id: Uuid) -> Result<Option<RobotToken>, MetaError>;

    /// Repository names the filter admits, in lexical order: the filter is applied in the
    /// query, so a page of `n` holds `n` visible names when that many exist.
    async fn catalog_filtered(
        &self,
        page: &Page,
        filter: &RepoFilter,
    ) -> Result<Vec<String>, MetaError>;
}
