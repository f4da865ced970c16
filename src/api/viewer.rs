//! Who is looking at the web UI or the IPFS gateway. Browsers carry no registry tokens, so
//! these pages take the session cookie of a login through the UI's form, or HTTP Basic
//! credentials (for scripts), and otherwise treat the caller as anonymous: with access
//! control on, a person sees exactly the repositories — and fetches by CID exactly the
//! blobs of repositories — they may pull.

use actix_web::HttpRequest;

use super::access::client_ip;
use super::error::ApiError;
use super::AppState;
use crate::auth::permission::Rights;
use crate::auth::scope;
use crate::registry::{Page, RepoFilter, RepositorySummary};

/// What the caller may see.
pub enum Viewer {
    /// Access control is off.
    Everyone,
    /// The caller's rights (a robot token's login is limited to its scopes too).
    Restricted {
        rights: Rights,
        limit: Option<Rights>,
        /// Who logged in; `None` for an anonymous caller.
        user: Option<String>,
        /// Logged in through a session (which the UI can end), not Basic credentials.
        session: bool,
    },
}

/// The cookie a UI login sets.
pub const SESSION_COOKIE: &str = "ipfs_registry_session";

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

impl Viewer {
    pub async fn of(state: &AppState, req: &HttpRequest) -> Result<Viewer, ApiError> {
        let Some(auth) = &state.auth else {
            return Ok(Viewer::Everyone);
        };
        // Credentials that do not parse are no login: the page asks for one.
        let credentials = super::token::basic_credentials(req).ok().flatten();
        let Some((user, password)) = credentials else {
            // A session that ended (expired, the password changed) leaves its cookie
            // behind: the caller is anonymous again, and the page offers a login.
            let session = match cookie(req, SESSION_COOKIE) {
                Some(token) => match auth.session(token).await {
                    Ok(login) => Some(login),
                    Err(crate::auth::AuthError::InvalidToken(_)) => None,
                    Err(e) => return Err(e.into()),
                },
                None => None,
            };
            return Ok(Viewer::Restricted {
                rights: auth.rights(session.as_ref().map(|l| &l.user)).await?,
                limit: None,
                session: session.is_some(),
                user: session.map(|l| l.user.name),
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
            user: Some(login.user.name),
            session: false,
        })
    }

    pub fn may_pull(&self, repo: &str) -> bool {
        self.may(repo, scope::PULL)
    }

    /// Whether the caller may delete manifests and tags of `repo`.
    pub fn may_delete(&self, repo: &str) -> bool {
        self.may(repo, scope::DELETE)
    }

    fn may(&self, repo: &str, action: &str) -> bool {
        match self {
            Viewer::Everyone => true,
            Viewer::Restricted { rights, limit, .. } => {
                rights.allows(repo, action) && limit.as_ref().is_none_or(|l| l.allows(repo, action))
            }
        }
    }

    /// Whether the caller gave no credentials (with access control on).
    pub fn anonymous(&self) -> bool {
        matches!(self, Viewer::Restricted { user: None, .. })
    }

    /// Who logged in, if anyone did.
    pub fn user(&self) -> Option<&str> {
        match self {
            Viewer::Restricted { user, .. } => user.as_deref(),
            Viewer::Everyone => None,
        }
    }

    /// Whether the caller logged in through a UI session.
    pub fn in_session(&self) -> bool {
        matches!(self, Viewer::Restricted { session: true, .. })
    }

    /// Refuses a repository the caller may not pull: an anonymous caller is asked to log
    /// in, a logged-in one is denied.
    pub fn require_pull(&self, repo: &str) -> Result<(), ApiError> {
        match self {
            _ if self.may_pull(repo) => Ok(()),
            Viewer::Restricted { user: None, .. } => Err(ApiError::LoginRequired),
            _ => Err(ApiError::Denied),
        }
    }

    /// A page of the repositories the caller may pull whose names contain `search`, with
    /// their summaries. A robot token's limit is applied to what the store returns, reading
    /// on until the page is full (as for the catalog), so a page is never cut short.
    pub async fn summaries(
        &self,
        state: &AppState,
        page: &Page,
        search: &str,
    ) -> Result<Vec<RepositorySummary>, ApiError> {
        let (filter, limit) = match self {
            Viewer::Everyone => (
                RepoFilter {
                    all: true,
                    ..RepoFilter::default()
                },
                None,
            ),
            Viewer::Restricted { rights, limit, .. } => (rights.pull_filter(), limit.as_ref()),
        };
        let registry = &state.registry;
        let Some(limit) = limit else {
            return Ok(registry.repository_summaries(page, &filter, search).await?);
        };
        let wanted = page.n.map(|n| n as usize);
        let mut found = Vec::new();
        let mut read = page.clone();
        loop {
            let batch = registry
                .repository_summaries(&read, &filter, search)
                .await?;
            let exhausted = wanted.is_none_or(|n| batch.len() < n);
            read.last = batch.last().map(|s| s.name.clone());
            found.extend(
                batch
                    .into_iter()
                    .filter(|s| limit.allows(&s.name, scope::PULL)),
            );
            if exhausted || wanted.is_some_and(|n| found.len() >= n) {
                break;
            }
        }
        if let Some(n) = wanted {
            found.truncate(n);
        }
        Ok(found)
    }
}
