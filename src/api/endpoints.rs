//! Every endpoint under `/v2`, in one table: the route name metrics and logs know it by, the
//! paths it answers, and per method the access it needs, the blob it carries and its handler.
//! Path parsing, dispatch, the access check and the request limits all read the table, so a
//! new endpoint is one entry here (and its handler).

use actix_web::http::Method;
use actix_web::{web, HttpRequest};
use futures::future::LocalBoxFuture;
use uuid::Uuid;

use super::handlers::{
    self, blobs, browse, federation, import, listing, looked_up, manifests, pushed, uploads,
    Response,
};
use super::AppState;
use crate::auth::scope;
use crate::oci::{Digest, InvalidReference, Reference, RepoName};

/// What a handler gets besides the path's parameters.
pub struct Call {
    pub state: web::Data<AppState>,
    pub req: HttpRequest,
    pub payload: web::Payload,
}

pub type Reply = LocalBoxFuture<'static, Response>;

pub struct Endpoint {
    /// The route's name in metrics labels and log lines.
    pub route: &'static str,
    /// The paths after `/v2` it answers. `{name}` stands for a repository name (slashes and
    /// all), another `{…}` for the one parameter; [`super::path`] says how they match. Where
    /// two endpoints' paths overlap, the one listed first wins.
    pub paths: &'static [&'static str],
    /// What a method the endpoint does not serve needs: access is checked before such a
    /// method is refused.
    pub other_methods: Access,
    pub methods: Methods,
}

/// An endpoint's operations, grouped by the parameters their handlers take. Each group
/// validates its parameters (a malformed repository name is `NAME_INVALID`) before it looks
/// at the method, so a malformed one answers the same whatever the method.
pub enum Methods {
    /// No repository. actix routes these by path and method (see [`super::configure`]).
    Registry(&'static [Operation<RegistryHandler>]),
    Repository(&'static [Operation<RepositoryHandler>]),
    /// `DIGEST_INVALID` when the digest is malformed.
    Digest(&'static [Operation<DigestHandler>]),
    /// `BLOB_UPLOAD_UNKNOWN` when the session id is malformed.
    Upload(&'static [Operation<UploadHandler>]),
    /// A manifest to look up: `MANIFEST_UNKNOWN` when the reference is malformed.
    Lookup(&'static [Operation<LookupHandler>]),
    /// A tag or digest whose being malformed means something else per method (a lookup finds
    /// nothing, a push is a bad request): the handler says, after the method is known.
    Reference(&'static [Operation<ReferenceHandler>]),
}

type RegistryHandler = fn(Call) -> Reply;
type RepositoryHandler = fn(Call, RepoName) -> Reply;
type DigestHandler = fn(Call, RepoName, Digest) -> Reply;
type UploadHandler = fn(Call, RepoName, Uuid) -> Reply;
type LookupHandler = fn(Call, RepoName, Reference) -> Reply;
type ReferenceHandler = fn(Call, RepoName, Result<Reference, InvalidReference>) -> Reply;

pub struct Operation<H> {
    pub method: Method,
    pub access: Access,
    pub blob: Blob,
    pub handler: H,
}

/// An [`Operation`] carrying no blob: `operation!(METHOD, access, handler)`, or one that
/// does: `operation!(METHOD, access, blob, handler)`.
macro_rules! operation {
    ($method:ident, $access:expr, $handler:expr) => {
        operation!($method, $access, Blob::None, $handler)
    };
    ($method:ident, $access:expr, $blob:expr, $handler:expr) => {
        Operation {
            method: Method::$method,
            access: $access,
            blob: $blob,
            handler: $handler,
        }
    };
}

/// What a request needs its token to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (one sent is still checked, and says who calls).
    Public,
    /// Any valid token.
    Token,
    /// Any valid token; the answer holds only what the token lets the caller pull.
    Catalog,
    /// This action (`pull`, `push`, `delete`) on the repository the path names.
    Repository(&'static str),
}

const PULL: Access = Access::Repository(scope::PULL);
const PUSH: Access = Access::Repository(scope::PUSH);
const DELETE: Access = Access::Repository(scope::DELETE);

/// The blob content a request carries, which decides the limits it is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    None,
    /// From the client: takes an upload slot, and is bounded by the client's pace and the
    /// IPFS timeouts rather than the request timeout.
    Received,
    /// To the client: takes a download slot until the response body is sent.
    Sent,
}

impl Endpoint {
    /// The access and blob of `method` here; `None` when the endpoint does not serve it.
    pub fn operation(&self, method: &Method) -> Option<(Access, Blob)> {
        match self.methods {
            Methods::Registry(operations) => facts(operations, method),
            Methods::Repository(operations) => facts(operations, method),
            Methods::Digest(operations) => facts(operations, method),
            Methods::Upload(operations) => facts(operations, method),
            Methods::Lookup(operations) => facts(operations, method),
            Methods::Reference(operations) => facts(operations, method),
        }
    }

    pub fn access(&self, method: &Method) -> Access {
        self.operation(method)
            .map_or(self.other_methods, |(access, _)| access)
    }

    pub fn blob(&self, method: &Method) -> Blob {
        self.operation(method).map_or(Blob::None, |(_, blob)| blob)
    }
}

/// The operation of `operations` that serves `method`.
pub fn find<'a, H>(operations: &'a [Operation<H>], method: &Method) -> Option<&'a Operation<H>> {
    operations
        .iter()
        .find(|operation| operation.method == method)
}

fn facts<H>(operations: &[Operation<H>], method: &Method) -> Option<(Access, Blob)> {
    find(operations, method).map(|operation| (operation.access, operation.blob))
}

pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        route: "base",
        paths: &["", "/"],
        other_methods: Access::Token,
        methods: Methods::Registry(&[
            operation!(GET, Access::Token, |_| {
                Box::pin(async { Ok(handlers::base()) })
            }),
            operation!(HEAD, Access::Token, |_| {
                Box::pin(async { Ok(handlers::base()) })
            }),
        ]),
    },
    Endpoint {
        route: "catalog",
        paths: &["/_catalog"],
        other_methods: Access::Catalog,
        methods: Methods::Registry(&[operation!(GET, Access::Catalog, |c| {
            Box::pin(listing::catalog(c.req, c.state))
        })]),
    },
    Endpoint {
        route: "manifest",
        paths: &["/{name}/manifests/{reference}"],
        other_methods: PUSH,
        methods: Methods::Reference(&[
            operation!(GET, PULL, |c, repo, reference| {
                Box::pin(async move {
                    let reference = looked_up(reference)?;
                    manifests::get(&c.state, &c.req, &repo, &reference, false).await
                })
            }),
            operation!(HEAD, PULL, |c, repo, reference| {
                Box::pin(async move {
                    let reference = looked_up(reference)?;
                    manifests::get(&c.state, &c.req, &repo, &reference, true).await
                })
            }),
            operation!(PUT, PUSH, |c, repo, reference| {
                Box::pin(async move {
                    let reference = pushed(reference)?;
                    manifests::put(&c.state, &c.req, c.payload, &repo, &reference).await
                })
            }),
            operation!(DELETE, DELETE, |c, repo, reference| {
                Box::pin(async move {
                    manifests::delete(&c.state, &c.req, &repo, &pushed(reference)?).await
                })
            }),
        ]),
    },
    // Before `blob` and `upload`, whose paths also match these.
    Endpoint {
        route: "upload_start",
        paths: &["/{name}/blobs/uploads/", "/{name}/blobs/uploads"],
        other_methods: PUSH,
        methods: Methods::Repository(&[operation!(POST, PUSH, Blob::Received, |c, repo| {
            Box::pin(async move { uploads::start(&c.state, &c.req, c.payload, &repo).await })
        })]),
    },
    Endpoint {
        route: "upload",
        paths: &["/{name}/blobs/uploads/{id}"],
        other_methods: PUSH,
        methods: Methods::Upload(&[
            operation!(GET, PUSH, |c, repo, id| {
                Box::pin(async move { uploads::status(&c.state, &repo, id).await })
            }),
            operation!(PATCH, PUSH, Blob::Received, |c, repo, id| {
                Box::pin(
                    async move { uploads::append(&c.state, &c.req, c.payload, &repo, id).await },
                )
            }),
            operation!(PUT, PUSH, Blob::Received, |c, repo, id| {
                Box::pin(
                    async move { uploads::complete(&c.state, &c.req, c.payload, &repo, id).await },
                )
            }),
            operation!(DELETE, PUSH, |c, repo, id| {
                Box::pin(async move { uploads::cancel(&c.state, &repo, id).await })
            }),
        ]),
    },
    Endpoint {
        route: "blob",
        paths: &["/{name}/blobs/{digest}"],
        other_methods: PUSH,
        methods: Methods::Digest(&[
            operation!(GET, PULL, Blob::Sent, |c, repo, digest| {
                Box::pin(async move { blobs::get(&c.state, &c.req, &repo, &digest).await })
            }),
            operation!(HEAD, PULL, |c, repo, digest| {
                Box::pin(async move { blobs::head(&c.state, &c.req, &repo, &digest).await })
            }),
            operation!(DELETE, DELETE, |c, repo, digest| {
                Box::pin(async move { blobs::delete(&c.state, &c.req, &repo, &digest).await })
            }),
        ]),
    },
    Endpoint {
        route: "tags",
        paths: &["/{name}/tags/list"],
        other_methods: PULL,
        methods: Methods::Repository(&[operation!(GET, PULL, |c, repo| {
            Box::pin(async move { listing::tags(&c.state, &c.req, &repo).await })
        })]),
    },
    Endpoint {
        route: "referrers",
        paths: &["/{name}/referrers/{digest}"],
        other_methods: PULL,
        methods: Methods::Digest(&[operation!(GET, PULL, |c, repo, digest| {
            Box::pin(async move { listing::referrers(&c.state, &c.req, &repo, &digest).await })
        })]),
    },
    // Extension API: this registry's public index and IPNS name (docs/federation.md), for
    // other registries to follow: public, like the index itself.
    Endpoint {
        route: "ext_federation",
        paths: &["/_ext/federation"],
        other_methods: Access::Public,
        methods: Methods::Registry(&[operation!(GET, Access::Public, |c| {
            Box::pin(async move { federation::status(&c.state, &c.req).await })
        })]),
    },
    // Extension API: a manifest's blobs with their CIDs. Repository names cannot start with
    // `_`, so its paths collide with no repository's.
    Endpoint {
        route: "ext_layers",
        paths: &["/_ext/{name}/manifests/{reference}/layers"],
        other_methods: PULL,
        methods: Methods::Lookup(&[operation!(GET, PULL, |c, repo, reference| {
            Box::pin(async move { browse::layers(&c.state, &repo, &reference).await })
        })]),
    },
    // Extension API: the image CID of a tagged manifest's OCI Image Layout in IPFS.
    Endpoint {
        route: "ext_layout",
        paths: &["/_ext/{name}/manifests/{reference}/layout"],
        other_methods: PULL,
        methods: Methods::Lookup(&[operation!(GET, PULL, |c, repo, reference| {
            Box::pin(async move { browse::layout(&c.state, &repo, &reference).await })
        })]),
    },
    // Extension API: import an image by the CID of its OCI Image Layout (docs/federation.md).
    Endpoint {
        route: "ext_import",
        paths: &["/_ext/{name}/import"],
        other_methods: PUSH,
        methods: Methods::Repository(&[operation!(POST, PUSH, |c, repo| {
            Box::pin(async move { import::import(&c.state, &c.req, &repo).await })
        })]),
    },
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::path::{self, classify};
    use super::*;

    /// A request path for `pattern`, with a two-part name and a parameter.
    fn example(pattern: &str) -> String {
        let path = pattern.replace("{name}", "team/app");
        let path = match (path.find('{'), path.find('}')) {
            (Some(open), Some(close)) => format!("{}x{}", &path[..open], &path[close + 1..]),
            _ => path,
        };
        format!("/v2{path}")
    }

    #[test]
    fn route_names_are_unique() {
        let mut seen = HashSet::new();
        for endpoint in ENDPOINTS {
            assert!(seen.insert(endpoint.route), "{} twice", endpoint.route);
        }
    }

    #[test]
    fn every_path_parses_back_to_its_endpoint() {
        for endpoint in ENDPOINTS {
            for pattern in endpoint.paths {
                let path = example(pattern);
                let (route, _) = classify(&Method::GET, &path);
                assert_eq!(route, endpoint.route, "{path}");
                let Some(tail) = path.strip_prefix("/v2/") else {
                    continue;
                };
                let (found, segments) = path::parse(tail).unwrap();
                assert_eq!(found.route, endpoint.route, "{path}");
                if pattern.contains("{name}") {
                    assert_eq!(segments.name, "team/app", "{path}");
                }
                if pattern.replace("{name}", "").contains('{') {
                    assert_eq!(segments.last, "x", "{path}");
                }
            }
        }
    }

    /// What each group of handlers takes, each of the endpoint's paths provides.
    #[test]
    fn paths_carry_what_the_handlers_take() {
        for endpoint in ENDPOINTS {
            let (name, parameter) = match endpoint.methods {
                Methods::Registry(_) => (false, false),
                Methods::Repository(_) => (true, false),
                Methods::Digest(_)
                | Methods::Upload(_)
                | Methods::Lookup(_)
                | Methods::Reference(_) => (true, true),
            };
            for pattern in endpoint.paths {
                assert_eq!(pattern.contains("{name}"), name, "{pattern}");
                let rest = pattern.replace("{name}", "");
                assert_eq!(rest.contains('{'), parameter, "{pattern}");
            }
        }
    }

    #[test]
    fn only_repository_paths_need_repository_access() {
        let methods = [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ];
        for endpoint in ENDPOINTS {
            let registry = matches!(endpoint.methods, Methods::Registry(_));
            for method in &methods {
                let repository = matches!(endpoint.access(method), Access::Repository(_));
                assert_eq!(repository, !registry, "{} {method}", endpoint.route);
            }
        }
    }

    #[test]
    fn each_method_once_per_endpoint() {
        for endpoint in ENDPOINTS {
            let methods: Vec<&Method> = match endpoint.methods {
                Methods::Registry(o) => o.iter().map(|o| &o.method).collect(),
                Methods::Repository(o) => o.iter().map(|o| &o.method).collect(),
                Methods::Digest(o) => o.iter().map(|o| &o.method).collect(),
                Methods::Upload(o) => o.iter().map(|o| &o.method).collect(),
                Methods::Lookup(o) => o.iter().map(|o| &o.method).collect(),
                Methods::Reference(o) => o.iter().map(|o| &o.method).collect(),
            };
            let unique: HashSet<_> = methods.iter().collect();
            assert_eq!(unique.len(), methods.len(), "{}", endpoint.route);
        }
    }

    #[test]
    fn blob_bodies() {
        let blob = |method: Method, path: &str| classify(&method, path).1;
        assert_eq!(blob(Method::POST, "/v2/a/blobs/uploads/"), Blob::Received);
        assert_eq!(blob(Method::PATCH, "/v2/a/blobs/uploads/u"), Blob::Received);
        assert_eq!(blob(Method::PUT, "/v2/a/blobs/uploads/u"), Blob::Received);
        assert_eq!(blob(Method::GET, "/v2/a/blobs/uploads/u"), Blob::None);
        assert_eq!(blob(Method::GET, "/v2/a/blobs/sha256:x"), Blob::Sent);
        assert_eq!(blob(Method::HEAD, "/v2/a/blobs/sha256:x"), Blob::None);
        assert_eq!(blob(Method::GET, "/ipfs/bafy"), Blob::Sent);
        assert_eq!(blob(Method::HEAD, "/ipfs/bafy"), Blob::None);
        assert_eq!(blob(Method::PUT, "/v2/a/manifests/v1"), Blob::None);
    }
}
