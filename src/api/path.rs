//! Which endpoint of the table a path addresses. A repository name contains slashes, so the
//! parameter after it is found from the end of the path.

use actix_web::http::Method;

use super::endpoints::{Blob, Endpoint, ENDPOINTS};

/// The still-unvalidated parts of a path: the repository name and the parameter, each empty
/// when the endpoint's path has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments<'a> {
    pub name: &'a str,
    pub last: &'a str,
}

/// `tail` is the path after `/v2/`.
pub fn parse(tail: &str) -> Option<(&'static Endpoint, Segments<'_>)> {
    // Repository names cannot start with `_`: a path under an endpoint's own prefix (`_ext/`)
    // is one of that prefix's endpoints or none.
    let reserved = ENDPOINTS
        .iter()
        .flat_map(|endpoint| endpoint.paths)
        .filter_map(|path| Pattern::of(path))
        .map(|pattern| pattern.prefix)
        .find(|prefix| !prefix.is_empty() && tail.starts_with(prefix));
    ENDPOINTS.iter().find_map(|endpoint| {
        let segments = endpoint
            .paths
            .iter()
            .find_map(|path| match Pattern::of(path) {
                Some(pattern) if reserved.is_none_or(|prefix| prefix == pattern.prefix) => {
                    pattern.matches(tail)
                }
                Some(_) => None,
                // A path without a repository name matches only itself; `""` (`/v2`) never
                // does here, being the same endpoint as `/` (see `v2_tail`).
                None => (path.strip_prefix('/') == Some(tail))
                    .then_some(Segments { name: "", last: "" }),
            })?;
        Some((endpoint, segments))
    })
}

/// A path with a repository name: `/{prefix}{name}{between}`, or with a parameter
/// `/{prefix}{name}{between}{parameter}{suffix}`.
struct Pattern {
    prefix: &'static str,
    between: &'static str,
    parameter: bool,
    suffix: &'static str,
}

impl Pattern {
    /// `None` for a path without `{name}`.
    fn of(path: &'static str) -> Option<Pattern> {
        let (prefix, after) = path.strip_prefix('/')?.split_once("{name}")?;
        Some(match after.split_once('{') {
            None => Pattern {
                prefix,
                between: after,
                parameter: false,
                suffix: "",
            },
            Some((between, rest)) => Pattern {
                prefix,
                between,
                parameter: true,
                suffix: rest.split_once('}').map_or("", |(_, suffix)| suffix),
            },
        })
    }

    fn matches<'a>(&self, tail: &'a str) -> Option<Segments<'a>> {
        let rest = tail.strip_prefix(self.prefix)?;
        if !self.parameter {
            let name = rest.strip_suffix(self.between)?;
            return Some(Segments { name, last: "" });
        }
        let (name, last) = rest.strip_suffix(self.suffix)?.rsplit_once(self.between)?;
        // A parameter that ends the path is its last segment; one followed by more text
        // (`/layers`) is all that comes before that text.
        (!self.suffix.is_empty() || !last.contains('/')).then_some(Segments { name, last })
    }
}

/// The path after `/v2/`; `/v2` itself is the same endpoint as `/v2/`.
fn v2_tail(path: &str) -> Option<&str> {
    path.strip_prefix("/v2/")
        .or_else(|| (path == "/v2").then_some(""))
}

/// The route a request path addresses (a low-cardinality name, for metrics and logs), and the
/// blob content a request with `method` carries there.
pub fn classify(method: &Method, path: &str) -> (&'static str, Blob) {
    let route = match path {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        "/token" => "token",
        // The gateway sends blob content too, outside `/v2`.
        _ if path.starts_with("/ipfs/") => {
            let blob = if method == Method::GET {
                Blob::Sent
            } else {
                Blob::None
            };
            return ("gateway", blob);
        }
        _ if path == "/ui" || path.starts_with("/ui/") => "ui",
        _ => {
            return match v2_tail(path).and_then(parse) {
                Some((endpoint, _)) => (endpoint.route, endpoint.blob(method)),
                None => ("other", Blob::None),
            }
        }
    };
    (route, Blob::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The route, name and parameter `tail` parses to.
    fn parsed(tail: &str) -> Option<(&'static str, &str, &str)> {
        parse(tail).map(|(endpoint, s)| (endpoint.route, s.name, s.last))
    }

    fn route_name(path: &str) -> &'static str {
        classify(&Method::GET, path).0
    }

    #[test]
    fn recognises_the_extension_api() {
        assert_eq!(
            parsed("_ext/team/app/manifests/1.0/layers"),
            Some(("ext_layers", "team/app", "1.0"))
        );
        assert_eq!(
            parsed("_ext/team/manifests/a/b/layers"),
            Some(("ext_layers", "team", "a/b"))
        );
        assert_eq!(parsed("_ext/team/app/manifests/1.0"), None);
        assert_eq!(parsed("_ext/layers"), None);
    }

    #[test]
    fn recognises_every_endpoint() {
        assert_eq!(parsed(""), Some(("base", "", "")));
        assert_eq!(parsed("_catalog"), Some(("catalog", "", "")));
        assert_eq!(
            parsed("a/b/manifests/latest"),
            Some(("manifest", "a/b", "latest"))
        );
        assert_eq!(parsed("a/blobs/sha256:x"), Some(("blob", "a", "sha256:x")));
        assert_eq!(
            parsed("a/b/blobs/uploads/"),
            Some(("upload_start", "a/b", ""))
        );
        assert_eq!(parsed("a/blobs/uploads"), Some(("upload_start", "a", "")));
        assert_eq!(parsed("a/blobs/uploads/123"), Some(("upload", "a", "123")));
        assert_eq!(parsed("x/y/tags/list"), Some(("tags", "x/y", "")));
        assert_eq!(
            parsed("x/referrers/sha256:1"),
            Some(("referrers", "x", "sha256:1"))
        );
    }

    #[test]
    fn names_that_look_like_endpoints() {
        assert_eq!(
            parsed("blobs/uploads/manifests/v1"),
            Some(("manifest", "blobs/uploads", "v1"))
        );
        assert_eq!(
            parsed("manifests/blobs/sha256:x"),
            Some(("blob", "manifests", "sha256:x"))
        );
        assert_eq!(parsed("x/blobs/blobs/y"), Some(("blob", "x/blobs", "y")));
        assert_eq!(
            parsed("_catalog/manifests/v1"),
            Some(("manifest", "_catalog", "v1"))
        );
        assert_eq!(parsed("/tags/list"), Some(("tags", "", "")));
        assert_eq!(parsed("a/manifests/"), Some(("manifest", "a", "")));
    }

    #[test]
    fn rejects_unknown_paths() {
        assert_eq!(parsed("a"), None);
        assert_eq!(parsed("a/b/c"), None);
        assert_eq!(parsed("a/uploads/1"), None);
        assert_eq!(parsed("a/manifests/b/c"), None);
        assert_eq!(parsed("/"), None);
        assert_eq!(parsed("_catalog/"), None);
    }

    #[test]
    fn routes_have_fixed_names() {
        assert_eq!(route_name("/v2"), "base");
        assert_eq!(route_name("/v2/"), "base");
        assert_eq!(route_name("/v2/a/b/manifests/latest"), "manifest");
        assert_eq!(route_name("/v2/a/blobs/uploads/"), "upload_start");
        assert_eq!(route_name("/v2/a/blobs/uploads/1234"), "upload");
        assert_eq!(route_name("/v2/a/blobs/sha256:x"), "blob");
        assert_eq!(route_name("/v2/_catalog"), "catalog");
        assert_eq!(route_name("/v2/_ext/a/manifests/v1/layers"), "ext_layers");
        assert_eq!(route_name("/ipfs/bafy"), "gateway");
        assert_eq!(route_name("/ui/a"), "ui");
        assert_eq!(route_name("/token"), "token");
        assert_eq!(route_name("/readyz"), "readyz");
        assert_eq!(route_name("/v2x/a/manifests/v1"), "other");
        assert_eq!(route_name("/favicon.ico"), "other");
    }
}
