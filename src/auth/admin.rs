//! Administration behind the CLI (`user`, `grant`, `revoke`, `public`, `token create`):
//! validates input, hashes passwords, then writes through the user store.

use std::time::{Duration, SystemTime};

use super::permission::{parse_permissions, Grant, Pattern};
use super::scope::{self, Scope};
use super::{password, robot, AuthError};
use crate::meta::users::{RobotToken, UserStore};

fn bad(message: impl Into<String>) -> AuthError {
    AuthError::BadRequest(message.into())
}

/// User names: what Basic authentication can carry (no colon) and logs can show safely.
pub fn validate_user_name(name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid user name {name:?}: use 1-128 of A-Z a-z 0-9 . _ - @"
        )))
    }
}

fn validate_password(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < 8 {
        return Err(bad("the password must have at least 8 characters"));
    }
    Ok(())
}

pub async fn add_user(
    store: &dyn UserStore,
    name: &str,
    password: &str,
    admin: bool,
) -> Result<(), AuthError> {
    validate_user_name(name)?;
    validate_password(password)?;
    let hash = password::hash(password)?;
    if !store.create_user(name, &hash, admin).await? {
        return Err(bad(format!("user {name} already exists")));
    }
    Ok(())
}

pub async fn remove_user(store: &dyn UserStore, name: &str) -> Result<(), AuthError> {
    if !store.remove_user(name).await? {
        return Err(bad(format!("no user {name}")));
    }
    Ok(())
}

pub async fn set_password(
    store: &dyn UserStore,
    name: &str,
    password: &str,
) -> Result<(), AuthError> {
    validate_password(password)?;
    let hash = password::hash(password)?;
    if !store.set_password(name, &hash).await? {
        return Err(bad(format!("no user {name}")));
    }
    Ok(())
}

fn permissions(list: &str) -> Result<Vec<String>, AuthError> {
    let parsed = parse_permissions(list).map_err(|e| bad(e.to_string()))?;
    if parsed.is_empty() {
        return Err(bad("name at least one of pull, push, delete, admin"));
    }
    Ok(parsed.iter().map(|p| p.as_str().to_owned()).collect())
}

fn pattern(text: &str) -> Result<Pattern, AuthError> {
    text.parse()
        .map_err(|e: super::permission::InvalidPattern| bad(e.to_string()))
}

pub async fn grant(
    store: &dyn UserStore,
    user: &str,
    repositories: &str,
    actions: &str,
) -> Result<(), AuthError> {
    let pattern = pattern(repositories)?.to_string();
    if !store.grant(user, &pattern, &permissions(actions)?).await? {
        return Err(bad(format!("no user {user}")));
    }
    Ok(())
}

/// Takes `actions` (all when `None`) on `repositories` away from `user`.
pub async fn revoke(
    store: &dyn UserStore,
    user: &str,
    repositories: &str,
    actions: Option<&str>,
) -> Result<(), AuthError> {
    let pattern = pattern(repositories)?.to_string();
    let actions = actions.map(permissions).transpose()?;
    if !store.revoke(user, &pattern, actions.as_deref()).await? {
        return Err(bad(format!("{user} has no such permission on {pattern}")));
    }
    Ok(())
}

/// Marks repositories public (anyone may pull) or private again. Returns whether anything
/// changed.
pub async fn set_public(
    store: &dyn UserStore,
    repositories: &str,
    public: bool,
) -> Result<bool, AuthError> {
    let pattern = pattern(repositories)?.to_string();
    Ok(store.set_public(&pattern, public).await?)
}

/// Creates a robot token for `user` limited to `scopes`
/// (`repository:<name or pattern>:<actions>`), valid for `valid_for`. Returns the token
/// text, shown once.
pub async fn create_robot_token(
    store: &dyn UserStore,
    user: &str,
    scopes: &[String],
    valid_for: Duration,
) -> Result<String, AuthError> {
    let parsed =
        scope::parse_all(scopes.iter().map(String::as_str)).map_err(|e| bad(e.to_string()))?;
    if parsed.is_empty() {
        return Err(bad("a robot token needs at least one --scope"));
    }
    for s in &parsed {
        if !s.is_repository() {
            return Err(bad(format!("{s}: robot tokens take repository scopes")));
        }
        if Grant::of_scope(s).map_err(bad)?.permissions.is_empty() {
            return Err(bad("name at least one of pull, push, delete, admin"));
        }
    }
    let scopes = parsed
        .iter()
        .map(Scope::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let (id, text, secret_sha256) = robot::generate();
    let token = RobotToken {
        id,
        user_id: 0,
        secret_sha256,
        scopes,
        expires_at: SystemTime::now() + valid_for,
    };
    if !store.create_robot_token(user, &token).await? {
        return Err(bad(format!("no user {user}")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(validate_user_name("ci-bot@team.example").is_ok());
        for bad in ["", "a:b", "a b", "ä"] {
            assert!(validate_user_name(bad).is_err(), "{bad:?}");
        }
    }
}
