//! Token scopes as the Docker token specification writes them:
//! `repository:<name>:<action>[,<action>…]` and `registry:catalog:*`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One requested or granted resource with its actions. Also the `access` claim's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: BTreeSet<String>,
}

pub const REPOSITORY: &str = "repository";
pub const REGISTRY: &str = "registry";
pub const CATALOG: &str = "catalog";

pub const PULL: &str = "pull";
pub const PUSH: &str = "push";
pub const DELETE: &str = "delete";
/// Everything on the resource (needs the admin permission).
pub const ALL: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {0:?}: expected <type>:<name>:<actions>")]
pub struct InvalidScope(pub String);

impl Scope {
    pub fn repository(name: &str, actions: &[&str]) -> Scope {
        Scope {
            kind: REPOSITORY.to_owned(),
            name: name.to_owned(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    pub fn catalog() -> Scope {
        Scope {
            kind: REGISTRY.to_owned(),
            name: CATALOG.to_owned(),
            actions: [ALL.to_owned()].into(),
        }
    }

    pub fn is_repository(&self) -> bool {
        self.kind == REPOSITORY
    }

    /// Whether this entry lets its holder do `action` on repository `name`.
    pub fn allows(&self, name: &str, action: &str) -> bool {
        self.is_repository()
            && self.name == name
            && (self.actions.contains(action) || self.actions.contains(ALL))
    }
}

impl FromStr for Scope {
    type Err = InvalidScope;

    /// The name sits between the first and the last colon: names may hold a `host:port/`
    /// part, actions never hold a colon. A resource class (`repository(plugin)`) is dropped.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidScope(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(invalid)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(invalid)?;
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        if kind.is_empty() || name.is_empty() {
            return Err(invalid());
        }
        let actions: BTreeSet<String> = actions
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Scope {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions,
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actions: Vec<&str> = self.actions.iter().map(String::as_str).collect();
        write!(f, "{}:{}:{}", self.kind, self.name, actions.join(","))
    }
}

/// Every scope in the request's `scope` values; one value may hold several, space-separated
/// (the OAuth2 form). Requests for the same resource are merged.
pub fn parse_all<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Scope>, InvalidScope> {
    let mut scopes: Vec<Scope> = Vec::new();
    for value in values {
        for part in value.split_whitespace() {
            let scope: Scope = part.parse()?;
            match scopes
                .iter_mut()
                .find(|s| s.kind == scope.kind && s.name == scope.name)
            {
                Some(existing) => existing.actions.extend(scope.actions),
                None => scopes.push(scope),
            }
        }
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_scopes() {
        let scope: Scope = "repository:team/app:pull,push".parse().unwrap();
        assert_eq!(scope, Scope::repository("team/app", &["pull", "push"]));
        assert_eq!(scope.to_string(), "repository:team/app:pull,push");

        let scope: Scope = "registry:catalog:*".parse().unwrap();
        assert_eq!(scope, Scope::catalog());

        let scope: Scope = "repository(plugin):x/y:pull".parse().unwrap();
        assert_eq!(scope, Scope::repository("x/y", &["pull"]));

        let scope: Scope = "repository:localhost:5000/app:pull".parse().unwrap();
        assert_eq!(scope.name, "localhost:5000/app");
    }

    #[test]
    fn rejects_malformed_scopes() {
        for bad in [
            "",
            "repository",
            "repository:app",
            ":app:pull",
            "repository::pull",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn merges_repeated_and_space_separated_scopes() {
        let scopes =
            parse_all(["repository:a:pull repository:b:push", "repository:a:push"]).unwrap();
        assert_eq!(
            scopes,
            vec![
                Scope::repository("a", &["pull", "push"]),
                Scope::repository("b", &["push"]),
            ]
        );
    }

    #[test]
    fn allows_matches_name_and_action() {
        let scope = Scope::repository("a", &["pull"]);
        assert!(scope.allows("a", PULL));
        assert!(!scope.allows("a", PUSH));
        assert!(!scope.allows("ab", PULL));
        let all = Scope::repository("a", &[ALL]);
        assert!(all.allows("a", DELETE));
        assert!(!Scope::catalog().allows("catalog", PULL));
    }
}
