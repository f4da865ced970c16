//! Issuing and verifying the JWTs: registry access tokens (audience = the service) and
//! refresh tokens (a distinct audience, so neither is accepted as the other).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::SigningKey;
use super::scope::Scope;
use super::AuthError;

/// Clock skew tolerated on `exp`, `nbf` and `iat` between replicas and clients.
pub const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user name; empty for anonymous callers.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Scope>,
    /// The user's id in refresh tokens: a user removed and re-created under the same name
    /// does not inherit them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<i64>,
    /// A robot token's own scopes, in access tokens issued to it: what it may see stays
    /// within them where `access` cannot say so (the catalog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robot_scopes: Option<String>,
    /// In session tokens: a fingerprint of the user's stored password hash when the session
    /// began, so that a password change ends the session whatever the clocks say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwd: Option<String>,
}

impl Claims {
    pub fn anonymous(&self) -> bool {
        self.sub.is_empty()
    }

    /// Whether the token grants `action` on repository `repo`.
    pub fn allows(&self, repo: &str, action: &str) -> bool {
        self.access.iter().any(|s| s.allows(repo, action))
    }
}

/// The claims only some kinds of token carry.
#[derive(Default)]
struct Extra {
    uid: Option<i64>,
    robot_scopes: Option<String>,
    pwd: Option<String>,
}

/// A signed token and when it was made.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub issued_at: SystemTime,
    pub expires_in: Duration,
}

pub struct TokenIssuer {
    key: SigningKey,
    issuer: String,
    service: String,
    ttl: Duration,
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TokenIssuer {
    pub fn new(key: SigningKey, issuer: String, service: String, ttl: Duration) -> TokenIssuer {
        TokenIssuer {
            key,
            issuer,
            service,
            ttl,
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn kid(&self) -> &str {
        &self.key.kid
    }

    fn refresh_audience(&self) -> String {
        format!("{}/refresh", self.service)
    }

    fn session_audience(&self) -> String {
        format!("{}/session", self.service)
    }

    /// How long refresh tokens stay valid.
    pub const REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

    fn sign(
        &self,
        sub: &str,
        aud: String,
        ttl: Duration,
        access: Vec<Scope>,
        extra: Extra,
    ) -> Result<Issued, AuthError> {
        let now = SystemTime::now();
        let iat = unix(now);
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_owned(),
            aud,
            exp: iat + ttl.as_secs(),
            nbf: iat,
            iat,
            jti: Uuid::new_v4().to_string(),
            access,
            uid: extra.uid,
            robot_scopes: extra.robot_scopes,
            pwd: extra.pwd,
        };
        let mut header = Header::new(self.key.algorithm);
        header.kid = Some(self.key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key.encoding)
            .map_err(|e| AuthError::Internal(format!("signing a token: {e}")))?;
        Ok(Issued {
            token,
            issued_at: now,
            expires_in: ttl,
        })
    }

    /// A registry token for `sub` (empty = anonymous) granting `access`; `robot_scopes`
    /// when a robot token logged in.
    pub fn access_token(
        &self,
        sub: &str,
        access: Vec<Scope>,
        robot_scopes: Option<&str>,
    ) -> Result<Issued, AuthError> {
        self.sign(
            sub,
            self.service.clone(),
            self.ttl,
            access,
            Extra {
                robot_scopes: robot_scopes.map(str::to_owned),
                ..Extra::default()
            },
        )
    }

    pub fn refresh_token(&self, sub: &str, uid: i64) -> Result<Issued, AuthError> {
        self.sign(
            sub,
            self.refresh_audience(),
            Self::REFRESH_TTL,
            Vec::new(),
            Extra {
                uid: Some(uid),
                ..Extra::default()
            },
        )
    }

    /// A web UI session of user `sub` (id `uid`), whose stored password hash has the
    /// fingerprint `pwd`.
    pub fn session_token(
        &self,
        sub: &str,
        uid: i64,
        pwd: String,
        ttl: Duration,
    ) -> Result<Issued, AuthError> {
        self.sign(
            sub,
            self.session_audience(),
            ttl,
            Vec::new(),
            Extra {
                uid: Some(uid),
                pwd: Some(pwd),
                ..Extra::default()
            },
        )
    }

    /// Verifies a registry token: our algorithm and key only, our issuer and audience,
    /// within its validity period (± the leeway).
    pub fn verify_access(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify(token, &self.service)
    }

    pub fn verify_refresh(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = self.verify(token, &self.refresh_audience())?;
        if claims.uid.is_none() || claims.anonymous() {
            return Err(AuthError::InvalidToken("not a refresh token".into()));
        }
        Ok(claims)
    }

    pub fn verify_session(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = self.verify(token, &self.session_audience())?;
        if claims.uid.is_none() || claims.pwd.is_none() || claims.anonymous() {
            return Err(AuthError::InvalidToken("not a session token".into()));
        }
        Ok(claims)
    }

    fn verify(&self, token: &str, audience: &str) -> Result<Claims, AuthError> {
        let invalid = |e: jsonwebtoken::errors::Error| AuthError::InvalidToken(e.to_string());
        // Headers naming another key are refused before any signature work; `alg` is
        // pinned below (jsonwebtoken has no `none`, and refuses any algorithm but ours).
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        if header.kid.as_deref() != Some(self.key.kid.as_str()) {
            return Err(AuthError::InvalidToken("unknown signing key".into()));
        }
        let mut validation = Validation::new(self.key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.key.decoding, &validation)
            .map_err(invalid)?;
        let claims = data.claims;
        if claims.iat > unix(SystemTime::now()) + LEEWAY_SECS {
            return Err(AuthError::InvalidToken("issued in the future".into()));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey};

    fn issuer() -> TokenIssuer {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load(None, None, dir.path()).unwrap();
        TokenIssuer::new(key, "iss".into(), "svc".into(), Duration::from_secs(300))
    }

    #[test]
    fn round_trip_and_audiences() {
        let issuer = issuer();
        let access = vec![Scope::repository("a/b", &["pull"])];
        let token = issuer.access_token("alice", access.clone(), None).unwrap();
        let claims = issuer.verify_access(&token.token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.access, access);
        assert!(claims.allows("a/b", "pull"));
        assert!(!claims.allows("a/b", "push"));
        assert_eq!(claims.exp - claims.iat, 300);

        let header = jsonwebtoken::decode_header(&token.token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(issuer.kid()));

        let refresh = issuer.refresh_token("alice", 7).unwrap();
        assert!(issuer.verify_access(&refresh.token).is_err());
        assert_eq!(issuer.verify_refresh(&refresh.token).unwrap().uid, Some(7));
        assert!(issuer.verify_refresh(&token.token).is_err());

        let session = issuer
            .session_token("alice", 7, "f1".into(), Duration::from_secs(60))
            .unwrap();
        let claims = issuer.verify_session(&session.token).unwrap();
        assert_eq!((claims.uid, claims.pwd.as_deref()), (Some(7), Some("f1")));
        assert!(issuer.verify_access(&session.token).is_err());
        assert!(issuer.verify_refresh(&session.token).is_err());
        assert!(issuer.verify_session(&refresh.token).is_err());
        assert!(issuer.verify_session(&token.token).is_err());
    }

    #[test]
    fn refuses_other_keys_and_algorithms() {
        let issuer = issuer();
        let other = self::issuer();
        let forged = other.access_token("alice", Vec::new(), None).unwrap();
        assert!(issuer.verify_access(&forged.token).is_err());

        // Same kid, someone else's key.
        let now = unix(SystemTime::now());
        let claims = Claims {
            iss: "iss".into(),
            sub: "alice".into(),
            aud: "svc".into(),
            exp: now + 60,
            nbf: now,
            iat: now,
            jti: "x".into(),
            access: Vec::new(),
            uid: None,
            robot_scopes: None,
            pwd: None,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(issuer.kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, &other.key.encoding).unwrap();
        assert!(issuer.verify_access(&token).is_err());

        // HS256 keyed with bytes an attacker could know.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(issuer.kid().to_owned());
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"public")).unwrap();
        assert!(issuer.verify_access(&token).is_err());
    }
}
