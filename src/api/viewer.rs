//! Who is looking at the web UI or the IPFS gateway. Browsers carry no registry tokens, so
//! these pages take HTTP Basic credentials (the browser asks for them after a 401) and
//! otherwise treat the caller as anonymous: with access control on, a person sees exactly
//! the repositories — and fetches by CID exactly the blobs of repositories — they may pull.

use actix_web::HttpRequest;

use super::access::client_ip;
use super::error::ApiError;
use super::AppState;
use crate::auth::permission::Rights;
use crate::auth::scope;
use crate::registry::Page;

/// What the caller may see.
pub enum Viewer {
    /// Access control is off.
    Everyone,
    /// The caller's rights (a robot token's login is limited to its scopes too).
    Restricted {
        rights: Rights,
        limit: Option<Rights>,
        anonymous: bool,
    },
}

impl Viewer {
    pub async fn of(state: &AppState, req: &HttpRequest) -> Result<Viewer, ApiError> {
        let Some(auth) = &state.auth else {
            return Ok(Viewer::Everyone);
        };
        // Credentials that do not parse are no login: the page asks for one.
        let credentials = super::token::basic_credentials(req).ok().flatten();
        let Some((user, password)) = credentials else {
            return Ok(Viewer::Restricted {
                rights: auth.rights(None).await?,
                limit: None,
                anonymous: true,
            });
        };
        let outcome = auth.login(&user, &password, client_ip(auth, req)).await;
        let login = match super::token::counted(state, outcome) {
            Ok(login) => login,
            Err(crate::auth::AuthError::InvalidCredentials) => return Err(ApiError::LoginRequired),
            Err(e) => return Err(e.into()),
        };
        Ok(Viewer::Restricted {
            rights: auth.rights(Some(&login.user)).await?,
            limit: login.robot.map(|r| r.rights),
            anonymous: false,
        })
    }

    pub fn may_pull(&self, repo: &str) -> bool {
        match self {
            Viewer::Everyone => true,
            Viewer::Restricted { rights, limit, .. } => {
                rights.allows(repo, scope::PULL)
                    && limit.as_ref().is_none_or(|l| l.allows(repo, scope::PULL))
            }
        }
    }

    /// Whether the caller gave no credentials (with access control on).
    pub fn anonymous(&self) -> bool {
        matches!(
            self,
            Viewer::Restricted {
                anonymous: true,
                ..
            }
        )
    }

    /// Refuses a repository the caller may not pull: an anonymous caller is asked to log
    /// in, a logged-in one is denied.
    pub fn require_pull(&self, repo: &str) -> Result<(), ApiError> {
        match self {
            _ if self.may_pull(repo) => Ok(()),
            Viewer::Restricted {
                anonymous: true, ..
            } => Err(ApiError::LoginRequired),
            _ => Err(ApiError::Denied),
        }
    }

    /// A catalog page of what the caller may pull.
    pub async fn catalog(&self, state: &AppState, page: &Page) -> Result<Vec<String>, ApiError> {
        match (self, &state.auth) {
            (Viewer::Restricted { rights, limit, .. }, Some(auth)) => {
                Ok(auth.catalog_for(rights, limit.as_ref(), page).await?)
            }
            _ => Ok(state.registry.catalog(page).await?),
        }
    }
}
