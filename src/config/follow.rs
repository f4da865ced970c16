//! `[[federation.follow]]`: replication rules that keep local copies of another registry's
//! published images (docs/federation.md, "Following other registries").

use std::time::Duration;

use cid::Cid;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::oci::RepoPattern;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowRule {
    /// The rule's name in metrics and status; by default its source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the index is: `/ipns/<name>`, `/ipfs/<cid>`, or a registry's base URL.
    pub source: String,
    /// Source repositories followed (globs on the source's names); none = every one.
    #[serde(default)]
    pub repositories: Vec<RepoPattern>,
    /// Prepended to the source's repository names to make local ones (`mirror/a/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// How often the source is asked for its index.
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
    /// Whether a tag gone from the source is deleted here (only while it still points at
    /// what this rule imported).
    #[serde(default)]
    pub delete: bool,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

/// Where a rule reads the index from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowSource {
    /// An IPNS name, resolved by the IPFS node on every poll.
    Ipns(String),
    /// A fixed root.
    Ipfs(Cid),
    /// Another registry: its `GET /v2/_ext/federation` names the root, and its `/ipfs/`
    /// gateway serves the blocks.
    Registry(Url),
}

impl FollowSource {
    pub fn parse(text: &str) -> Result<FollowSource, String> {
        if let Some(name) = text.strip_prefix("/ipns/") {
            let name = name.trim_end_matches('/');
            if name.is_empty() || name.contains('/') {
                return Err(format!(
                    "source {text:?}: an IPNS source is /ipns/<name>, with no path"
                ));
            }
            return Ok(FollowSource::Ipns(name.to_owned()));
        }
        if let Some(cid) = text.strip_prefix("/ipfs/") {
            let cid = cid.trim_end_matches('/');
            return Cid::try_from(cid)
                .map(FollowSource::Ipfs)
                .map_err(|e| format!("source {text:?}: not a CID: {e}"));
        }
        let url = Url::parse(text).map_err(|e| {
            format!("source {text:?}: neither /ipns/<name>, /ipfs/<cid> nor a URL: {e}")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "source {text:?}: a registry source is its http:// or https:// base URL"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("source {text:?}: must have no query or fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "source {text:?}: the index and the gateway are anonymous: no credentials"
            ));
        }
        Ok(FollowSource::Registry(url))
    }
}

impl FollowRule {
    /// The name metrics and status know the rule by.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.source)
    }

    /// The parsed source (validated at load).
    pub fn source(&self) -> Result<FollowSource, String> {
        FollowSource::parse(&self.source)
    }

    /// Whether the source repository `name` is followed.
    pub fn follows(&self, name: &str) -> bool {
        self.repositories.is_empty() || self.repositories.iter().any(|p| p.matches(name))
    }

    /// Whether a repository below the source directory `path` (`a/b`, no trailing slash)
    /// may be followed: false only when no pattern can match a name starting `path/`.
    pub fn may_follow_below(&self, path: &str) -> bool {
        let below = format!("{path}/");
        self.repositories.is_empty()
            || self.repositories.iter().any(|p| {
                // The pattern's text before its first wildcard is a literal prefix of every
                // name it matches: a directory is worth reading when the two agree.
                let pattern = p.as_str();
                let literal = &pattern[..pattern.find(['*', '?']).unwrap_or(pattern.len())];
                if literal.len() == pattern.len() {
                    return pattern.starts_with(&below);
                }
                literal.starts_with(&below) || below.starts_with(literal)
            })
    }

    /// The local name of the source repository `name`.
    pub fn local_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix.as_deref().unwrap_or(""))
    }
}

/// Refuses what would fail only when the rule runs. Errors name the entry.
pub fn validate(rules: &[FollowRule]) -> Result<(), (String, String)> {
    let mut names = std::collections::HashSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("federation.follow[{i}]");
        let fail = |message: String| Err((at.clone(), message));
        if let Err(e) = rule.source() {
            return fail(e);
        }
        if let Some(name) = &rule.name {
            if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
                return fail(format!(
                    "name {name:?} must be 1-128 characters, none a control character"
                ));
            }
        }
        if !names.insert(rule.name()) {
            return fail(format!(
                "name {:?} is used by two rules (give each a name)",
                rule.name()
            ));
        }
        if let Some(prefix) = &rule.prefix {
            if let Err(e) = super::mirror::check_prefix(prefix) {
                return fail(format!("prefix {prefix:?} {e}"));
            }
        }
        if rule.interval.is_zero() {
            return fail("interval must be greater than zero".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> FollowRule {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn sources_parse() {
        assert_eq!(
            FollowSource::parse("/ipns/k51abc").unwrap(),
            FollowSource::Ipns("k51abc".into())
        );
        let cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
        assert!(matches!(
            FollowSource::parse(&format!("/ipfs/{cid}")).unwrap(),
            FollowSource::Ipfs(_)
        ));
        assert!(matches!(
            FollowSource::parse("https://registry.example").unwrap(),
            FollowSource::Registry(_)
        ));
        for bad in [
            "/ipfs/nope",
            "/ipns/",
            "/ipns/a/b",
            "ftp://x.example",
            "registry.example",
            "https://u:p@r.example",
        ] {
            assert!(FollowSource::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_names_and_prefixes() {
        let r = rule("source = \"https://a.example\"");
        assert_eq!(r.interval, Duration::from_secs(60));
        assert!(!r.delete);
        assert_eq!(r.name(), "https://a.example");
        assert_eq!(r.local_name("team/app"), "team/app");
        let r = rule("source = \"https://a.example\"\nprefix = \"mirror/a/\"\nname = \"a\"");
        assert_eq!(r.name(), "a");
        assert_eq!(r.local_name("team/app"), "mirror/a/team/app");
    }

    #[test]
    fn patterns_prune_directories() {
        let r = rule("source = \"https://a.example\"\nrepositories = [\"team/*\", \"x/y\"]");
        assert!(r.follows("team/app") && r.follows("x/y") && !r.follows("other/app"));
        assert!(r.may_follow_below("team"));
        assert!(r.may_follow_below("team/sub"));
        assert!(r.may_follow_below("x"));
        assert!(!r.may_follow_below("x/y"));
        assert!(!r.may_follow_below("other"));
        assert!(!r.may_follow_below("te"));
        let r = rule("source = \"https://a.example\"\nrepositories = [\"t*\"]");
        assert!(r.may_follow_below("team") && !r.may_follow_below("other"));
        let r = rule("source = \"https://a.example\"");
        assert!(r.may_follow_below("anything"));
    }

    #[test]
    fn refuses_what_cannot_work() {
        let check = |entries: &[&str]| {
            let rules: Vec<FollowRule> = entries.iter().map(|t| rule(t)).collect();
            validate(&rules)
        };
        assert!(check(&["source = \"https://a.example\"\nprefix = \"a/\""]).is_ok());
        let (at, e) =
            check(&["source = \"https://a.example\"", "source = \"/ipfs/nope\""]).unwrap_err();
        assert_eq!(at, "federation.follow[1]");
        assert!(e.contains("not a CID"), "{e}");
        let (_, e) = check(&["source = \"https://a.example\"\nprefix = \"a\""]).unwrap_err();
        assert!(e.contains("must end with '/'"), "{e}");
        let (_, e) = check(&["source = \"https://a.example\"\nprefix = \"A/\""]).unwrap_err();
        assert!(e.contains("valid repository name"), "{e}");
        let (_, e) = check(&["source = \"https://a.example\"\ninterval = \"0s\""]).unwrap_err();
        assert!(e.contains("interval"), "{e}");
        let (_, e) = check(&[
            "source = \"https://a.example\"",
            "source = \"https://a.example\"",
        ])
        .unwrap_err();
        assert!(e.contains("two rules"), "{e}");
        assert!(toml::from_str::<FollowRule>("source = \"x\"\nrepositories = [\"A\"]").is_err());
        assert!(toml::from_str::<FollowRule>("source = \"x\"\nunknown = 1").is_err());
    }
}
