//! Who may do what: repository patterns, per-user grants, public repositories, and the
//! intersection of a token request with them.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use super::scope::{self, Scope};
use crate::meta::users::RepoFilter;
use crate::oci::RepoName;

/// Which repositories a grant or a public flag covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    /// `*`: every repository.
    All,
    /// `team/*`: every repository below `team/` (kept with its trailing slash).
    Prefix(String),
    /// One repository.
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository pattern {0:?}: expected a repository name, <namespace>/* or *")]
pub struct InvalidPattern(pub String);

impl Pattern {
    pub fn matches(&self, repo: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Prefix(prefix) => repo.starts_with(prefix.as_str()),
            Pattern::Exact(name) => name == repo,
        }
    }
}

impl FromStr for Pattern {
    type Err = InvalidPattern;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "*" {
            return Ok(Pattern::All);
        }
        if let Some(namespace) = s.strip_suffix("/*") {
            namespace
                .parse::<RepoName>()
                .map_err(|_| InvalidPattern(s.to_owned()))?;
            return Ok(Pattern::Prefix(format!("{namespace}/")));
        }
        s.parse::<RepoName>()
            .map_err(|_| InvalidPattern(s.to_owned()))?;
        Ok(Pattern::Exact(s.to_owned()))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::All => f.write_str("*"),
            Pattern::Prefix(prefix) => write!(f, "{prefix}*"),
            Pattern::Exact(name) => f.write_str(name),
        }
    }
}

/// What a grant allows on the repositories its pattern covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    Pull,
    Push,
    Delete,
    /// Everything, including the `*` action.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission {0:?}: expected pull, push, delete or admin")]
pub struct InvalidPermission(pub String);

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Pull => "pull",
            Permission::Push => "push",
            Permission::Delete => "delete",
            Permission::Admin => "admin",
        }
    }

    /// Whether holding this permission allows the token action `action`.
    fn allows(self, action: &str) -> bool {
        match self {
            Permission::Admin => true,
            Permission::Pull => action == scope::PULL,
            Permission::Push => action == scope::PUSH,
            Permission::Delete => action == scope::DELETE,
        }
    }
}

impl FromStr for Permission {
    type Err = InvalidPermission;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pull" => Ok(Permission::Pull),
            "push" => Ok(Permission::Push),
            "delete" => Ok(Permission::Delete),
            "admin" | "*" => Ok(Permission::Admin),
            _ => Err(InvalidPermission(s.to_owned())),
        }
    }
}

/// A comma-separated permission list (`pull,push`).
pub fn parse_permissions(s: &str) -> Result<BTreeSet<Permission>, InvalidPermission> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub pattern: Pattern,
    pub permissions: BTreeSet<Permission>,
}

impl Grant {
    /// The grant a `repository:<name or pattern>:<actions>` scope stands for (a robot
    /// token's limit); the error says which part does not parse.
    pub fn of_scope(scope: &Scope) -> Result<Grant, String> {
        Ok(Grant {
            pattern: scope
                .name
                .parse()
                .map_err(|e: InvalidPattern| e.to_string())?,
            permissions: scope
                .actions
                .iter()
                .map(|a| a.parse())
                .collect::<Result<_, InvalidPermission>>()
                .map_err(|e| e.to_string())?,
        })
    }
}

/// Everything one caller may do: an admin flag, grants, and the public repositories that
/// anyone may pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    pub admin: bool,
    pub grants: Vec<Grant>,
    pub public: Vec<Pattern>,
}

impl Rights {
    /// Rights of someone who presented no credentials.
    pub fn anonymous(public: Vec<Pattern>) -> Rights {
        Rights {
            admin: false,
            grants: Vec::new(),
            public,
        }
    }

    /// Whether the caller may do `action` (a token action) on repository `repo`.
    pub fn allows(&self, repo: &str, action: &str) -> bool {
        if self.admin {
            return true;
        }
        if action == scope::PULL && self.public.iter().any(|p| p.matches(repo)) {
            return true;
        }
        self.grants.iter().any(|g| {
            g.pattern.matches(repo)
                && if action == scope::ALL {
                    g.permissions.contains(&Permission::Admin)
                } else {
                    g.permissions.iter().any(|p| p.allows(action))
                }
        })
    }

    /// The part of `requested` these rights allow: the access a token gets. Resources with
    /// no allowed action are left out; unknown resource types and actions are never granted.
    /// The catalog is granted to everyone, since it lists only what the caller may pull.
    pub fn intersect(&self, requested: &[Scope]) -> Vec<Scope> {
        requested
            .iter()
            .filter_map(|scope| {
                let actions: BTreeSet<String> =
                    if scope.kind == scope::REGISTRY && scope.name == scope::CATALOG {
                        scope
                            .actions
                            .iter()
                            .filter(|a| *a == scope::ALL)
                            .cloned()
                            .collect()
                    } else if scope.is_repository() && scope.name.parse::<RepoName>().is_ok() {
                        scope
                            .actions
                            .iter()
                            .filter(|a| {
                                matches!(
                                    a.as_str(),
                                    scope::PULL | scope::PUSH | scope::DELETE | scope::ALL
                                ) && self.allows(&scope.name, a)
                            })
                            .cloned()
                            .collect()
                    } else {
                        BTreeSet::new()
                    };
                (!actions.is_empty()).then(|| Scope {
                    kind: scope.kind.clone(),
                    name: scope.name.clone(),
                    actions,
                })
            })
            .collect()
    }

    /// The repositories these rights may pull, for filtering the catalog in its query.
    pub fn pull_filter(&self) -> RepoFilter {
        let mut filter = RepoFilter::default();
        let pullable = self.grants.iter().filter(|g| {
            g.permissions.contains(&Permission::Pull) || g.permissions.contains(&Permission::Admin)
        });
        let patterns = pullable.map(|g| &g.pattern).chain(self.public.iter());
        filter.all = self.admin;
        for pattern in patterns {
            match pattern {
                Pattern::All => filter.all = true,
                Pattern::Prefix(p) => filter.prefixes.push(p.clone()),
                Pattern::Exact(n) => filter.names.push(n.clone()),
            }
        }
        filter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(pattern: &str, permissions: &str) -> Grant {
        Grant {
            pattern: pattern.parse().unwrap(),
            permissions: parse_permissions(permissions).unwrap(),
        }
    }

    #[test]
    fn patterns() {
        let ns: Pattern = "team/*".parse().unwrap();
        assert!(ns.matches("team/app"));
        assert!(ns.matches("team/a/b"));
        assert!(!ns.matches("team"));
        assert!(!ns.matches("teams/app"));
        assert_eq!(ns.to_string(), "team/*");
        let exact: Pattern = "team/app".parse().unwrap();
        assert!(exact.matches("team/app"));
        assert!(!exact.matches("team/app2"));
        assert!("*".parse::<Pattern>().unwrap().matches("x"));
        for bad in ["", "team/", "Team/*", "a*", "*/x", "team/**"] {
            assert!(bad.parse::<Pattern>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn permissions_parse() {
        assert_eq!(
            parse_permissions("pull, push").unwrap(),
            [Permission::Pull, Permission::Push].into()
        );
        assert!(parse_permissions("pull,write").is_err());
    }

    #[test]
    fn grants_allow_only_their_actions() {
        let rights = Rights {
            admin: false,
            grants: vec![grant("team/*", "pull,push"), grant("solo", "delete")],
            public: vec!["pub/*".parse().unwrap()],
        };
        assert!(rights.allows("team/app", "pull"));
        assert!(rights.allows("team/app", "push"));
        assert!(!rights.allows("team/app", "delete"));
        assert!(!rights.allows("team/app", "*"));
        assert!(rights.allows("solo", "delete"));
        assert!(!rights.allows("solo", "pull"));
        assert!(rights.allows("pub/x", "pull"));
        assert!(!rights.allows("pub/x", "push"));
        assert!(!rights.allows("other", "pull"));

        let admin_grant = Rights {
            grants: vec![grant("ops/*", "admin")],
            ..Rights::default()
        };
        for action in ["pull", "push", "delete", "*"] {
            assert!(admin_grant.allows("ops/db", action), "{action}");
        }
        let admin = Rights {
            admin: true,
            ..Rights::default()
        };
        assert!(admin.allows("anything", "*"));
    }

    #[test]
    fn intersection_keeps_only_what_is_allowed() {
        let rights = Rights {
            admin: false,
            grants: vec![grant("team/*", "pull")],
            public: Vec::new(),
        };
        let requested = vec![
            Scope::repository("team/app", &["pull", "push"]),
            Scope::repository("other", &["pull"]),
            Scope::repository("team/app2", &["pull", "bogus"]),
            Scope::catalog(),
            Scope {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: ["pull".to_owned()].into(),
            },
            Scope::repository("Team/INVALID", &["pull"]),
        ];
        assert_eq!(
            rights.intersect(&requested),
            vec![
                Scope::repository("team/app", &["pull"]),
                Scope::repository("team/app2", &["pull"]),
                Scope::catalog(),
            ]
        );
        assert_eq!(
            Rights::anonymous(Vec::new()).intersect(&requested[..2]),
            vec![]
        );
    }

    #[test]
    fn pull_filter_lists_pullable_patterns() {
        let rights = Rights {
            admin: false,
            grants: vec![
                grant("team/*", "pull"),
                grant("solo", "push"),
                grant("ops", "admin"),
            ],
            public: vec!["pub".parse().unwrap()],
        };
        let filter = rights.pull_filter();
        assert!(!filter.all);
        assert_eq!(filter.prefixes, vec!["team/"]);
        assert_eq!(filter.names, vec!["ops", "pub"]);
        assert!(
            Rights {
                admin: true,
                ..Rights::default()
            }
            .pull_filter()
            .all
        );
    }
}
