//! Name patterns for per-repository rules (`[[immutable]]`, `[[retention]]`): a glob where
//! `*` matches any run of characters (`/` included, so `team/*` covers every repository
//! below `team/`) and `?` one character. Validated against the characters a repository name
//! or a tag may hold, so a typo is refused at load instead of silently matching nothing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::name::MAX_NAME_LEN;

/// Longest tag the spec allows, hence longest useful tag pattern.
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} pattern {pattern:?}: {reason}")]
pub struct InvalidPattern {
    kind: &'static str,
    pattern: String,
    reason: String,
}

/// A glob over repository names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoPattern(String);

/// A glob over tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TagPattern(String);

impl RepoPattern {
    pub fn matches(&self, repository: &str) -> bool {
        glob_matches(self.0.as_bytes(), repository.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TagPattern {
    pub fn matches(&self, tag: &str) -> bool {
        glob_matches(self.0.as_bytes(), tag.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(
    kind: &'static str,
    pattern: &str,
    max_len: usize,
    allowed: impl Fn(char) -> bool,
    allowed_text: &str,
) -> Result<(), InvalidPattern> {
    let invalid = |reason: String| InvalidPattern {
        kind,
        pattern: pattern.to_owned(),
        reason,
    };
    if pattern.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if pattern.len() > max_len {
        return Err(invalid(format!("longer than {max_len} characters")));
    }
    if let Some(c) = pattern
        .chars()
        .find(|&c| !(allowed(c) || c == '*' || c == '?'))
    {
        return Err(invalid(format!(
            "{c:?} cannot occur in a {kind} (allowed: {allowed_text}, and the wildcards * and ?)"
        )));
    }
    Ok(())
}

impl FromStr for RepoPattern {
    type Err = InvalidPattern;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        validate(
            "repository",
            s,
            MAX_NAME_LEN,
            |c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-' | '/'),
            "a-z 0-9 . _ - /",
        )?;
        Ok(RepoPattern(s.to_owned()))
    }
}

impl FromStr for TagPattern {
    type Err = InvalidPattern;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        validate(
            "tag",
            s,
            MAX_TAG_LEN,
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
            "A-Z a-z 0-9 . _ -",
        )?;
        Ok(TagPattern(s.to_owned()))
    }
}

macro_rules! string_conversions {
    ($type:ident) => {
        impl TryFrom<String> for $type {
            type Error = InvalidPattern;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$type> for String {
            fn from(p: $type) -> String {
                p.0
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
string_conversions!(RepoPattern);
string_conversions!(TagPattern);

/// Iterative glob match with single backtracking point (the last `*`): linear in practice,
/// and never exponential, whatever the pattern.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(p: &str) -> TagPattern {
        p.parse().unwrap()
    }

    #[test]
    fn globs_match_as_documented() {
        assert!(tag("v*").matches("v1.2.3"));
        assert!(tag("v*").matches("v"));
        assert!(!tag("v*").matches("latest"));
        assert!(tag("*-rc?").matches("1.0-rc1"));
        assert!(!tag("*-rc?").matches("1.0-rc10"));
        assert!(tag("latest").matches("latest"));
        assert!(!tag("latest").matches("latest2"));
        assert!(tag("*a*b*").matches("xxaxxbxx"));
        assert!(!tag("*a*b*").matches("xxbxxaxx"));
        let repos: RepoPattern = "team/*".parse().unwrap();
        assert!(repos.matches("team/app"));
        assert!(repos.matches("team/a/b"));
        assert!(!repos.matches("team"));
        assert!(!repos.matches("other/team/app"));
        assert!("*".parse::<RepoPattern>().unwrap().matches("x/y"));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        let e = "".parse::<TagPattern>().unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = "v/*".parse::<TagPattern>().unwrap_err().to_string();
        assert!(e.contains("'/'"), "{e}");
        let e = "Team/*".parse::<RepoPattern>().unwrap_err().to_string();
        assert!(e.contains("'T'"), "{e}");
        assert!("[ab]".parse::<TagPattern>().is_err());
        assert!("x".repeat(129).parse::<TagPattern>().is_err());
    }

    #[test]
    fn patterns_round_trip_through_serde() {
        let p: TagPattern = serde_json::from_str("\"v*\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"v*\"");
        assert!(serde_json::from_str::<TagPattern>("\"v/1\"").is_err());
    }
}
