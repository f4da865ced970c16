//! Splits a `/v2/...` path into the endpoint it addresses. Repository names contain
//! slashes, so the endpoint is recognised from the end of the path.

/// The endpoint, with the still-unvalidated name and reference segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint<'a> {
    Manifest {
        name: &'a str,
        reference: &'a str,
    },
    Blob {
        name: &'a str,
        digest: &'a str,
    },
    UploadStart {
        name: &'a str,
    },
    Upload {
        name: &'a str,
        id: &'a str,
    },
    Tags {
        name: &'a str,
    },
    Referrers {
        name: &'a str,
        digest: &'a str,
    },
    /// Extension API (`_ext/<name>/manifests/<reference>/layers`): a manifest's blobs with
    /// their CIDs. Repository names cannot start with `_`, so it collides with nothing.
    ExtLayers {
        name: &'a str,
        reference: &'a str,
    },
}

/// `tail` is the path after `/v2/`.
pub fn parse(tail: &str) -> Option<Endpoint<'_>> {
    if let Some(ext) = tail.strip_prefix("_ext/") {
        let (name, reference) = ext.strip_suffix("/layers")?.rsplit_once("/manifests/")?;
        return Some(Endpoint::ExtLayers { name, reference });
    }
    if let Some(name) = tail.strip_suffix("/tags/list") {
        return Some(Endpoint::Tags { name });
    }
    if let Some(name) = tail
        .strip_suffix("/blobs/uploads/")
        .or_else(|| tail.strip_suffix("/blobs/uploads"))
    {
        return Some(Endpoint::UploadStart { name });
    }
    let (rest, last) = tail.rsplit_once('/')?;
    let (name, kind) = rest.rsplit_once('/')?;
    match kind {
        "manifests" => Some(Endpoint::Manifest {
            name,
            reference: last,
        }),
        "referrers" => Some(Endpoint::Referrers { name, digest: last }),
        "blobs" => Some(Endpoint::Blob { name, digest: last }),
        "uploads" => {
            let name = name.strip_suffix("/blobs")?;
            Some(Endpoint::Upload { name, id: last })
        }
        _ => None,
    }
}

/// A low-cardinality name for the route a request path addresses (for metrics).
pub fn route_name(path: &str) -> &'static str {
    match path {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        "/v2" | "/v2/" => "base",
        "/v2/_catalog" => "catalog",
        "/token" => "token",
        _ if path.starts_with("/ipfs/") => "gateway",
        _ if path == "/ui" || path.starts_with("/ui/") => "ui",
        _ => match path.strip_prefix("/v2/").and_then(parse) {
            Some(Endpoint::Manifest { .. }) => "manifest",
            Some(Endpoint::Blob { .. }) => "blob",
            Some(Endpoint::UploadStart { .. }) => "upload_start",
            Some(Endpoint::Upload { .. }) => "upload",
            Some(Endpoint::Tags { .. }) => "tags",
            Some(Endpoint::Referrers { .. }) => "referrers",
            Some(Endpoint::ExtLayers { .. }) => "ext_layers",
            None => "other",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_extension_api() {
        assert_eq!(
            parse("_ext/team/app/manifests/1.0/layers"),
            Some(Endpoint::ExtLayers {
                name: "team/app",
                reference: "1.0"
            })
        );
        assert_eq!(parse("_ext/team/app/manifests/1.0"), None);
        assert_eq!(parse("_ext/layers"), None);
    }

    #[test]
    fn recognises_every_endpoint() {
        assert_eq!(
            parse("a/b/manifests/latest"),
            Some(Endpoint::Manifest {
                name: "a/b",
                reference: "latest"
            })
        );
        assert_eq!(
            parse("a/blobs/sha256:x"),
            Some(Endpoint::Blob {
                name: "a",
                digest: "sha256:x"
            })
        );
        assert_eq!(
            parse("a/b/blobs/uploads/"),
            Some(Endpoint::UploadStart { name: "a/b" })
        );
        assert_eq!(
            parse("a/blobs/uploads"),
            Some(Endpoint::UploadStart { name: "a" })
        );
        assert_eq!(
            parse("a/blobs/uploads/123"),
            Some(Endpoint::Upload {
                name: "a",
                id: "123"
            })
        );
        assert_eq!(parse("x/y/tags/list"), Some(Endpoint::Tags { name: "x/y" }));
        assert_eq!(
            parse("x/referrers/sha256:1"),
            Some(Endpoint::Referrers {
                name: "x",
                digest: "sha256:1"
            })
        );
    }

    #[test]
    fn names_that_look_like_endpoints() {
        assert_eq!(
            parse("blobs/uploads/manifests/v1"),
            Some(Endpoint::Manifest {
                name: "blobs/uploads",
                reference: "v1"
            })
        );
        assert_eq!(
            parse("manifests/blobs/sha256:x"),
            Some(Endpoint::Blob {
                name: "manifests",
                digest: "sha256:x"
            })
        );
    }

    #[test]
    fn rejects_unknown_paths() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("a"), None);
        assert_eq!(parse("a/b/c"), None);
        assert_eq!(parse("a/uploads/1"), None);
    }

    #[test]
    fn routes_have_fixed_names() {
        assert_eq!(route_name("/v2/"), "base");
        assert_eq!(route_name("/v2/a/b/manifests/latest"), "manifest");
        assert_eq!(route_name("/v2/a/blobs/uploads/"), "upload_start");
        assert_eq!(route_name("/v2/a/blobs/uploads/1234"), "upload");
        assert_eq!(route_name("/v2/a/blobs/sha256:x"), "blob");
        assert_eq!(route_name("/v2/_catalog"), "catalog");
        assert_eq!(route_name("/readyz"), "readyz");
        assert_eq!(route_name("/favicon.ico"), "other");
    }
}
