//! Access control: Docker registry token authentication (`/token` issues JWTs the `/v2`
//! guard verifies), users and per-repository permissions. Pure logic lives in the small
//! modules; `service` ties them to the user store. No HTTP types here.

pub mod admin;
mod cache;
pub mod keys;
pub mod password;
pub mod permission;
pub mod robot;
pub mod scope;
mod service;
pub mod throttle;
pub mod token;

use std::time::Duration;

pub use service::{Auth, Login, TokenGrant};

use crate::meta::MetaError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password, expired or unknown robot token.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many failed logins for this user or from this client.
    #[error("too many failed login attempts; retry in {}s", .0.as_secs().max(1))]
    Throttled(Duration),
    /// Too many logins waiting for a password check at once.
    #[error("too many logins at once; retry in a moment")]
    Busy,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A malformed token request or administrative input.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// The signing key could not be loaded or generated.
    #[error("signing key: {0}")]
    Key(String),
}

impl From<MetaError> for AuthError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::Unavailable(m) => AuthError::Unavailable(m),
            other => AuthError::Internal(other.to_string()),
        }
    }
}
