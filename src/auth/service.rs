//! The authentication service: checks credentials against the user store, works out what
//! a caller may do, and issues tokens for the intersection of that and what was asked.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;

use url::Url;

use super::cache::{CredentialsKey, LoginCache};
use super::keys::SigningKey;
use super::permission::{Grant, Pattern, Rights};
use super::scope::{self, Scope};
use super::throttle::{Key, LoginThrottle, Policy, Refusal};
use super::token::{unix, Claims, Issued, TokenIssuer};
use super::{password, robot, AuthError};
use crate::config::Config;
use crate::meta::users::{User, UserStore};
use crate::meta::Page;

/// Who logged in, and (for a robot token) the scopes the token is limited to.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: User,
    pub robot: Option<RobotLimit>,
}

/// A robot token's stored scopes, and the rights they allow.
#[derive(Debug, Clone)]
pub struct RobotLimit {
    pub scopes: String,
    pub rights: Rights,
}

/// What `/token` answers.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub access: Issued,
    pub granted: Vec<Scope>,
    pub refresh: Option<Issued>,
}

/// How long a login waits for its turn (a throttle slot, an argon2 slot) before 429.
pub const LOGIN_WAIT: Duration = Duration::from_secs(5);

/// User names are at most 128 characters (`admin::validate_user_name`).
const MAX_LOGGED_NAME: usize = 128;

pub struct Auth {
    pub issuer: TokenIssuer,
    store: Arc<dyn UserStore>,
    throttle: Arc<LoginThrottle>,
    cache: Arc<LoginCache>,
    /// One permit per password check that may run at once...
    checks: Arc<Semaphore>,
    /// ...and the argon2 working memory those checks reuse (one area per permit, made on
    /// first use).
    memory: Arc<Mutex<Vec<password::Memory>>>,
    /// How long a web UI session lasts.
    pub session_ttl: Duration,
    /// The configured token endpoint for challenges, if any.
    pub realm: Option<Url>,
    pub trusted_proxies: Vec<crate::config::IpRange>,
}

impl Auth {
    /// The service for `config`, or `None` when `auth.enabled` is false.
    pub fn from_config(
        config: &Config,
        store: Arc<dyn UserStore>,
    ) -> Result<Option<Arc<Auth>>, AuthError> {
        let auth = &config.auth;
        if !auth.enabled {
            return Ok(None);
        }
        let key = SigningKey::load(
            auth.signing_key.as_deref(),
            auth.signing_key_file.as_deref(),
            &config.data_dir,
        )?;
        let checks = auth.max_concurrent_password_checks.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        tracing::info!(event = "auth_enabled", kid = %key.kid, algorithm = ?key.algorithm);
        Ok(Some(Arc::new(Auth {
            issuer: TokenIssuer::new(
                key,
                auth.issuer.clone(),
                auth.service.clone(),
                auth.token_ttl,
            ),
            store,
            throttle: Arc::new(LoginThrottle::new(Policy::default())),
            cache: Arc::new(LoginCache::new(auth.login_cache_ttl)),
            checks: Arc::new(Semaphore::new(checks)),
            memory: Arc::new(Mutex::new(Vec::new())),
            session_ttl: auth.session_ttl,
            realm: auth.realm.clone(),
            trusted_proxies: auth.trusted_proxies.clone(),
        })))
    }

    /// Checks a user name and a password (or robot token) from `client`.
    ///
    /// A password is checked only after an attempt has been reserved with the throttle, on
    /// one of a bounded number of argon2 slots; a login that waits longer than
    /// [`LOGIN_WAIT`] for either gets 429. Robot tokens are not throttled: their secrets
    /// cannot be guessed and checking one costs a lookup and a sha256, so failed password
    /// guesses never lock out the robot tokens of a user.
    pub async fn login(
        &self,
        name: &str,
        secret: &str,
        client: IpAddr,
    ) -> Result<Login, AuthError> {
        let outcome = if robot::parse(secret).is_some() {
            self.robot_login(name, secret).await
        } else {
            self.password_login(name, secret, client).await
        };
        if let Err(AuthError::InvalidCredentials) = &outcome {
            // The name is the client's: escaped, it cannot forge log lines, and cut to the
            // longest valid name, it cannot fill the log.
            let shown: String = name.chars().take(MAX_LOGGED_NAME).collect();
            tracing::info!(event = "login_failed", user = %shown.escape_debug(), client = %client);
        }
        outcome
    }

    async fn robot_login(&self, name: &str, secret: &str) -> Result<Login, AuthError> {
        let (id, digest) = robot::parse(secret).ok_or(AuthError::InvalidCredentials)?;
        let user = self
            .store
            .user(name)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        let token = self
            .store
            .robot_token(id)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        if token.user_id != user.id
            || !robot::same_digest(&token.secret_sha256, &digest)
            || token.expires_at <= SystemTime::now()
        {
            return Err(AuthError::InvalidCredentials);
        }
        let rights = robot_limit(&token.scopes)?;
        Ok(Login {
            user,
            robot: Some(RobotLimit {
                scopes: token.scopes,
                rights,
            }),
        })
    }

    /// The user, when `key` was checked against their password as stored now.
    async fn cached(&self, name: &str, key: &CredentialsKey) -> Result<Option<Login>, AuthError> {
        if !self.cache.holds(key, Instant::now()) {
            return Ok(None);
        }
        let user = self.store.user(name).await?;
        Ok(self
            .cache
            .confirms(key, user.as_ref(), Instant::now())
            .then_some(user)
            .flatten()
            .map(|user| Login { user, robot: None }))
    }

    async fn password_login(
        &self,
        name: &str,
        secret: &str,
        client: IpAddr,
    ) -> Result<Login, AuthError> {
        let key = self.cache.key(name, secret);
        let keys = [Key::user_client(name, client), Key::Client(client)];
        let deadline = tokio::time::Instant::now() + LOGIN_WAIT;
        let attempt = loop {
            let released = self.throttle.released();
            match self.throttle.reserve(&keys, Instant::now()) {
                Ok(attempt) => break attempt,
                Err(Refusal::LockedOut(wait)) => return Err(AuthError::Throttled(wait)),
                Err(Refusal::Busy) => {}
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(AuthError::Busy);
            }
        };
        // The cache is asked only with an attempt reserved (a miss goes on to be checked
        // and counted): else a locked-out guesser could test guesses against it for free.
        if let Some(login) = self.cached(name, &key).await? {
            attempt.succeeded();
            return Ok(login);
        }
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.checks).acquire_owned())
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(|e| AuthError::Internal(format!("password check slots: {e}")))?;
        // Another login may have checked the same credentials while this one waited.
        if let Some(login) = self.cached(name, &key).await? {
            attempt.succeeded();
            return Ok(login);
        }
        let user = self.store.user(name).await?;
        let stored = user.clone();
        let secret = secret.to_owned();
        let memory = Arc::clone(&self.memory);
        let cache = Arc::clone(&self.cache);
        // argon2 takes tens of milliseconds of CPU: off the async workers. The slot, the
        // memory and the attempt go with it, so a client that hangs up does not free its
        // slot early nor escape the count of failures.
        let matches = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut area = memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .unwrap_or_default();
            let matches = match &stored {
                Some(user) => password::verify_in(&secret, &user.password_hash, &mut area),
                None => {
                    password::verify_dummy_in(&secret, &mut area);
                    false
                }
            };
            memory.lock().unwrap_or_else(|e| e.into_inner()).push(area);
            match &stored {
                Some(user) if matches => {
                    cache.insert(key, user, Instant::now());
                    attempt.succeeded();
                }
                _ => attempt.failed(),
            }
            matches
        })
        .await
        .map_err(|e| AuthError::Internal(format!("password check: {e}")))?;
        match user {
            Some(user) if matches => Ok(Login { user, robot: None }),
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    /// The login a refresh token stands for; the user must still exist (with the same id)
    /// and not have changed password since the token was issued.
    pub async fn refresh(&self, token: &str, client: IpAddr) -> Result<Login, AuthError> {
        let keys = [Key::Client(client)];
        if let Some(wait) = self.throttle.retry_after(&keys, Instant::now()) {
            return Err(AuthError::Throttled(wait));
        }
        let claims = match self.issuer.verify_refresh(token) {
            Ok(claims) => claims,
            Err(e) => {
                self.throttle.record_failure(&keys, Instant::now());
                return Err(e);
            }
        };
        match self.store.user(&claims.sub).await? {
            Some(user) if Some(user.id) == claims.uid => {
                if claims.iat < unix(user.password_changed_at) {
                    return Err(AuthError::InvalidToken(
                        "issued before the last password change".into(),
                    ));
                }
                Ok(Login { user, robot: None })
            }
            _ => Err(AuthError::InvalidToken("the user no longer exists".into())),
        }
    }

    /// A web UI session for `login`, which must be a password login: a robot token's
    /// limits would not survive in the session, and robots have no use for one.
    pub fn open_session(&self, login: &Login) -> Result<Issued, AuthError> {
        if login.robot.is_some() {
            return Err(AuthError::BadRequest(
                "robot tokens are for registry clients: log in with your password".into(),
            ));
        }
        let user = &login.user;
        self.issuer.session_token(
            &user.name,
            user.id,
            password_fingerprint(&user.password_hash),
            self.session_ttl,
        )
    }

    /// The login a session token stands for. No password is checked (that happened once,
    /// when the session began); the user must still exist with the same id and the same
    /// stored password hash.
    pub async fn session(&self, token: &str) -> Result<Login, AuthError> {
        let claims = self.issuer.verify_session(token)?;
        match self.store.user(&claims.sub).await? {
            Some(user)
                if Some(user.id) == claims.uid
                    && claims.pwd.as_deref()
                        == Some(password_fingerprint(&user.password_hash).as_str()) =>
            {
                Ok(Login { user, robot: None })
            }
            _ => Err(AuthError::InvalidToken(
                "the session ended: the password changed or the user was removed".into(),
            )),
        }
    }

    /// Everything the user (or, for `None`, an anonymous caller) may do.
    pub async fn rights(&self, user: Option<&User>) -> Result<Rights, AuthError> {
        let public = self
            .store
            .public_patterns()
            .await?
            .iter()
            .filter_map(|p| p.parse::<Pattern>().ok())
            .collect();
        let Some(user) = user else {
            return Ok(Rights::anonymous(public));
        };
        let grants = self
            .store
            .grants(user.id)
            .await?
            .into_iter()
            .filter_map(|g| {
                Some(Grant {
                    pattern: g.pattern.parse().ok()?,
                    permissions: g
                        .permissions
                        .iter()
                        .filter_map(|p| p.parse().ok())
                        .collect(),
                })
            })
            .collect();
        Ok(Rights {
            admin: user.admin,
            grants,
            public,
        })
    }

    /// The rights of a token's subject as they stand now (anonymous when the subject is
    /// empty or no longer exists).
    pub async fn rights_of(&self, claims: &Claims) -> Result<Rights, AuthError> {
        let user = if claims.anonymous() {
            None
        } else {
            self.store.user(&claims.sub).await?
        };
        self.rights(user.as_ref()).await
    }

    /// Tokens for `login` (anonymous when `None`): access is the intersection of what was
    /// requested, what the user may do and, for robot tokens, the token's own scopes.
    pub async fn grant(
        &self,
        login: Option<&Login>,
        requested: &[Scope],
        offline: bool,
    ) -> Result<TokenGrant, AuthError> {
        let rights = self.rights(login.map(|l| &l.user)).await?;
        let mut granted = rights.intersect(requested);
        let robot = login.and_then(|l| l.robot.as_ref());
        if let Some(robot) = robot {
            granted = robot.rights.intersect(&granted);
        }
        let subject = login.map_or("", |l| l.user.name.as_str());
        let access =
            self.issuer
                .access_token(subject, granted.clone(), robot.map(|r| r.scopes.as_str()))?;
        // Refresh tokens would outlive a robot token's limits, so robots log in each time.
        let refresh = match login {
            Some(login) if offline && login.robot.is_none() => {
                Some(self.issuer.refresh_token(&login.user.name, login.user.id)?)
            }
            _ => None,
        };
        tracing::info!(
            event = "token_issued",
            user = %subject,
            granted = %granted.iter().map(Scope::to_string).collect::<Vec<_>>().join(" "),
        );
        Ok(TokenGrant {
            access,
            granted,
            refresh,
        })
    }

    /// A catalog page holding only repositories `rights` allow pulling and, for a robot
    /// token, its own scopes allow too. The store filters by `rights`; the robot's limit is
    /// applied to what it returns, reading on until the page is full, so a page is never
    /// cut short while more names remain.
    pub async fn catalog_for(
        &self,
        rights: &Rights,
        robot: Option<&Rights>,
        page: &Page,
    ) -> Result<Vec<String>, AuthError> {
        let filter = rights.pull_filter();
        let Some(robot) = robot else {
            return Ok(self.store.catalog_filtered(page, &filter).await?);
        };
        let wanted = page.n.map(|n| n as usize);
        let mut names = Vec::new();
        let mut read = page.clone();
        loop {
            let batch = self.store.catalog_filtered(&read, &filter).await?;
            let exhausted = wanted.is_none_or(|n| batch.len() < n);
            read.last = batch.last().cloned();
            names.extend(
                batch
                    .into_iter()
                    .filter(|name| robot.allows(name, scope::PULL)),
            );
            if exhausted || wanted.is_some_and(|n| names.len() >= n) {
                break;
            }
        }
        if let Some(n) = wanted {
            names.truncate(n);
        }
        Ok(names)
    }

    /// A catalog page holding only repositories the token may see: what its subject may
    /// pull, within a robot token's scopes.
    pub async fn catalog(&self, claims: &Claims, page: &Page) -> Result<Vec<String>, AuthError> {
        let rights = self.rights_of(claims).await?;
        let robot = claims
            .robot_scopes
            .as_deref()
            .map(robot_limit)
            .transpose()?;
        self.catalog_for(&rights, robot.as_ref(), page).await
    }
}

/// What a session token carries of the stored password hash: enough to tell it changed.
/// The hash is salted and high in entropy, so its digest tells nothing of the password.
fn password_fingerprint(password_hash: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(password_hash.as_bytes())[..16])
}

/// The rights a robot token's stored scopes allow (the tokens may name patterns).
fn robot_limit(scopes: &str) -> Result<Rights, AuthError> {
    let corrupt = |e: String| AuthError::Internal(format!("stored robot token scopes: {e}"));
    let grants = scope::parse_all([scopes])
        .map_err(|e| corrupt(e.to_string()))?
        .into_iter()
        .map(|s| Grant::of_scope(&s).map_err(corrupt))
        .collect::<Result<_, AuthError>>()?;
    Ok(Rights {
        admin: false,
        grants,
        public: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robot_limits_allow_only_their_scopes() {
        let limit = robot_limit("repository:team/*:pull,push repository:solo:pull").unwrap();
        assert!(limit.allows("team/app", "push"));
        assert!(limit.allows("solo", "pull"));
        assert!(!limit.allows("solo", "push"));
        assert!(!limit.allows("other", "pull"));
    }
}
