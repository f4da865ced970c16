//! Per-repository rules from the configuration: `[[immutable]]` tags, which pushes may not
//! move and deletes may not remove, and `[[retention]]`, which GC applies. Pure: what to
//! protect and what to remove is decided here, the stores only carry it out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::meta::gc::TagRecord;
use crate::meta::ProtectedTags;
use crate::oci::{RepoPattern, TagPattern};

/// Tags matching `tags` in repositories matching `repositories` cannot be moved by a push
/// or removed by a delete (an admin may override a delete), nor by retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImmutableRule {
    pub repositories: RepoPattern,
    pub tags: Vec<TagPattern>,
}

/// What GC keeps in the repositories matching `repositories`: the `keep_last` most recently
/// pushed tags and every tag matching `keep_tags` (the other tags are removed when either
/// is set), and untagged manifests younger than `untagged_older_than` (which replaces
/// `gc.untagged_retention` there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    pub repositories: RepoPattern,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<TagPattern>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub untagged_older_than: Option<Duration>,
}

/// Why a rule is refused at load: the setting and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRule {
    pub setting: &'static str,
    pub message: String,
}

impl ImmutableRule {
    fn validate(&self) -> Result<(), String> {
        if self.tags.is_empty() {
            return Err("is empty: name at least one tag pattern".into());
        }
        Ok(())
    }
}

impl RetentionRule {
    /// Whether the rule removes tags at all.
    fn prunes_tags(&self) -> bool {
        self.keep_last.is_some() || !self.keep_tags.is_empty()
    }

    fn validate(&self) -> Result<(), InvalidRule> {
        let invalid = |setting, message: &str| {
            Err(InvalidRule {
                setting,
                message: message.to_owned(),
            })
        };
        if self.keep_last == Some(0) {
            return invalid(
                "retention.keep_last",
                "must be at least 1 (to keep only the tags keep_tags names, leave it unset)",
            );
        }
        if !self.prunes_tags() && self.untagged_older_than.is_none() {
            return invalid(
                "retention.repositories",
                "the rule keeps everything: set keep_last, keep_tags or untagged_older_than",
            );
        }
        Ok(())
    }

    /// The tags this rule removes from `tags` (one repository's): all but the `keep_last`
    /// most recently pushed, those `keep_tags` matches and those `protected` covers. Ties
    /// in push time are broken by name, so the choice does not depend on listing order.
    pub fn tags_to_remove(&self, tags: &[TagRecord], protected: &ProtectedTags) -> Vec<TagRecord> {
        if !self.prunes_tags() {
            return Vec::new();
        }
        let mut newest_first: Vec<&TagRecord> = tags.iter().collect();
        newest_first.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then_with(|| a.tag.cmp(&b.tag))
        });
        let keep_last = self.keep_last.map_or(0, |n| n as usize);
        newest_first
            .into_iter()
            .skip(keep_last)
            .filter(|t| !self.keep_tags.iter().any(|p| p.matches(&t.tag)))
            .filter(|t| !protected.covers(&t.tag))
            .cloned()
            .collect()
    }
}

/// Every `[[immutable]]` and `[[retention]]` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub immutable: Vec<ImmutableRule>,
    pub retention: Vec<RetentionRule>,
}

impl Rules {
    /// Refuses rules that cannot be what was meant, naming the setting and the rule.
    pub fn validate(&self) -> Result<(), InvalidRule> {
        for (i, rule) in self.immutable.iter().enumerate() {
            rule.validate().map_err(|message| InvalidRule {
                setting: "immutable.tags",
                message: format!(
                    "rule {} (repositories = {:?}) {message}",
                    i + 1,
                    rule.repositories.as_str()
                ),
            })?;
        }
        for (i, rule) in self.retention.iter().enumerate() {
            rule.validate().map_err(|e| InvalidRule {
                setting: e.setting,
                message: format!(
                    "rule {} (repositories = {:?}): {}",
                    i + 1,
                    rule.repositories.as_str(),
                    e.message
                ),
            })?;
        }
        Ok(())
    }

    /// The tags of `repo` that every immutable rule covering it protects.
    pub fn protected_tags(&self, repo: &str) -> ProtectedTags {
        ProtectedTags(
            self.immutable
                .iter()
                .filter(|r| r.repositories.matches(repo))
                .flat_map(|r| r.tags.iter().cloned())
                .collect(),
        )
    }

    /// The first immutable rule protecting `tag` in `repo`, for telling the client which.
    pub fn immutable_rule(&self, repo: &str, tag: &str) -> Option<&ImmutableRule> {
        self.immutable
            .iter()
            .find(|r| r.repositories.matches(repo) && r.tags.iter().any(|p| p.matches(tag)))
    }

    /// The retention rule for `repo`: the first whose pattern matches.
    pub fn retention_for(&self, repo: &str) -> Option<&RetentionRule> {
        self.retention.iter().find(|r| r.repositories.matches(repo))
    }
}

impl std::fmt::Display for ImmutableRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tags: Vec<&str> = self.tags.iter().map(TagPattern::as_str).collect();
        write!(
            f,
            "[[immutable]] repositories = {:?}, tags = {tags:?}",
            self.repositories.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::oci::Digest;

    fn tag_record(tag: &str, digest: Digest, updated_at: SystemTime) -> TagRecord {
        TagRecord {
            tag: tag.to_owned(),
            digest,
            updated_at,
        }
    }

    fn rule(keep_last: Option<u32>, keep_tags: &[&str]) -> RetentionRule {
        RetentionRule {
            repositories: "team/*".parse().unwrap(),
            keep_last,
            keep_tags: keep_tags.iter().map(|t| t.parse().unwrap()).collect(),
            untagged_older_than: None,
        }
    }

    fn tags(names: &[&str]) -> Vec<TagRecord> {
        // Pushed in the order given, one second apart.
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                tag_record(
                    name,
                    Digest::sha256_of(name.as_bytes()),
                    start + Duration::from_secs(i as u64),
                )
            })
            .collect()
    }

    fn removed(rule: &RetentionRule, tags: &[TagRecord], protected: &ProtectedTags) -> Vec<String> {
        let mut names: Vec<String> = rule
            .tags_to_remove(tags, protected)
            .into_iter()
            .map(|t| t.tag)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn keep_last_keeps_the_most_recently_pushed() {
        let all = tags(&["a", "b", "c", "d", "e"]);
        let none = ProtectedTags::none();
        assert_eq!(removed(&rule(Some(2), &[]), &all, &none), ["a", "b", "c"]);
        assert_eq!(
            removed(&rule(Some(10), &[]), &all, &none),
            Vec::<String>::new()
        );
    }

    #[test]
    fn keep_tags_and_protected_tags_are_kept_beside_the_last_n() {
        let all = tags(&["v1", "a", "v2", "b", "latest", "c"]);
        let protected = ProtectedTags(vec!["latest".parse().unwrap()]);
        assert_eq!(
            removed(&rule(Some(1), &["v*"]), &all, &protected),
            ["a", "b"]
        );
        assert_eq!(
            removed(&rule(None, &["v*"]), &all, &ProtectedTags::none()),
            ["a", "b", "c", "latest"]
        );
    }

    #[test]
    fn equal_push_times_are_ordered_by_name() {
        let mut all = tags(&["x", "y", "z"]);
        for t in &mut all {
            t.updated_at = SystemTime::UNIX_EPOCH;
        }
        all.reverse();
        assert_eq!(
            removed(&rule(Some(1), &[]), &all, &ProtectedTags::none()),
            ["y", "z"]
        );
    }

    #[test]
    fn a_rule_without_tag_settings_removes_no_tag() {
        let mut r = rule(None, &[]);
        r.untagged_older_than = Some(Duration::from_secs(60));
        assert!(r
            .tags_to_remove(&tags(&["a"]), &ProtectedTags::none())
            .is_empty());
    }

    #[test]
    fn rules_are_matched_by_repository() {
        let rules = Rules {
            immutable: vec![
                ImmutableRule {
                    repositories: "team/*".parse().unwrap(),
                    tags: vec!["v*".parse().unwrap()],
                },
                ImmutableRule {
                    repositories: "*".parse().unwrap(),
                    tags: vec!["stable".parse().unwrap()],
                },
            ],
            retention: vec![rule(Some(1), &[]), rule(Some(5), &[])],
        };
        let team = rules.protected_tags("team/app");
        assert!(team.covers("v1") && team.covers("stable") && !team.covers("latest"));
        let other = rules.protected_tags("other/app");
        assert!(!other.covers("v1") && other.covers("stable"));
        assert_eq!(
            rules.immutable_rule("team/app", "v1").unwrap().to_string(),
            r#"[[immutable]] repositories = "team/*", tags = ["v*"]"#
        );
        assert!(rules.immutable_rule("other/app", "v1").is_none());
        assert_eq!(rules.retention_for("team/app").unwrap().keep_last, Some(1));
        assert!(rules.retention_for("other/app").is_none());
    }

    #[test]
    fn rules_that_cannot_be_meant_are_refused() {
        let mut rules = Rules {
            immutable: Vec::new(),
            retention: vec![rule(Some(0), &[])],
        };
        let e = rules.validate().unwrap_err();
        assert_eq!(e.setting, "retention.keep_last");
        assert!(
            e.message.contains("rule 1 (repositories = \"team/*\")"),
            "{e:?}"
        );
        rules.retention = vec![rule(None, &[])];
        assert_eq!(
            rules.validate().unwrap_err().setting,
            "retention.repositories"
        );
        rules.retention.clear();
        rules.immutable = vec![ImmutableRule {
            repositories: "*".parse().unwrap(),
            tags: Vec::new(),
        }];
        assert_eq!(rules.validate().unwrap_err().setting, "immutable.tags");
    }
}
