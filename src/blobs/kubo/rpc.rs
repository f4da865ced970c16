//! Kubo RPC wire formats: the `add` answer, pin listings, error bodies, and how failures
//! map to [`BlobError`].

use cid::Cid;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::blobs::BlobError;
use crate::error_chain::with_sources;

/// A non-2xx answer: the node's own error (`{"Message": "...", "Code": 0, "Type": "error"}`),
/// or anything else that answered at `ipfs.url` — a gateway port, a proxy's 403 or 404, an
/// unknown command's "404 page not found" — which says nothing about the content.
#[derive(Debug, Clone)]
pub(super) struct NodeError {
    pub status: StatusCode,
    pub message: String,
    /// Whether the body is the RPC API's JSON error: only then can it be about content.
    pub from_rpc: bool,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "Type")]
    kind: String,
}

impl NodeError {
    pub(super) fn from_body(status: StatusCode, body: &[u8]) -> NodeError {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(parsed) if parsed.kind == "error" => NodeError {
                status,
                message: parsed.message,
                from_rpc: true,
            },
            _ => NodeError {
                status,
                message: String::from_utf8_lossy(body)
                    .trim()
                    .chars()
                    .take(512)
                    .collect(),
                from_rpc: false,
            },
        }
    }

    /// `pin/ls` and `pin/rm` of something not pinned. js-ipfs: "path '<cid>' is not pinned",
    /// "Failed to remove pin: <cid> is not pinned"; Kubo: "... is not pinned",
    /// "not pinned or pinned indirectly".
    pub(super) fn is_not_pinned(&self) -> bool {
        self.from_rpc && self.message.to_ascii_lowercase().contains("not pinned")
    }

    /// The content could not be found (locally or, within the RPC `timeout=`, on the
    /// network). js-ipfs answers a missing block only when its `timeout=` expires:
    /// "Failed to cat file: request timed out" / "request timed out"; Kubo says "context
    /// deadline exceeded", or "block was not found locally (offline)" / "ipld: could not
    /// find <cid>" / "no link named ..." .
    pub(super) fn is_not_found(&self) -> bool {
        let m = self.message.to_ascii_lowercase();
        self.from_rpc
            && [
                "not found",
                "could not find",
                "timed out",
                "deadline exceeded",
                "no link named",
            ]
            .iter()
            .any(|needle| m.contains(needle))
    }

    /// `NotFound(cid)` when the node says so; `Backend` for its other errors; `Unavailable`
    /// when what answered is not the RPC API at all (a misconfigured `ipfs.url`), so the
    /// request gets 503 and readiness fails instead of a "blob unknown".
    pub(super) fn into_blob_error(self, call: &str, cid: Option<&Cid>) -> BlobError {
        match cid {
            Some(cid) if self.is_not_found() => BlobError::NotFound(*cid),
            _ if !self.from_rpc => BlobError::Unavailable(format!(
                "IPFS node {call}: {} with a body that is not a Kubo RPC error (is ipfs.url the \
                 node's RPC API address, e.g. http://host:5001, not a gateway or a proxy path?): {}",
                self.status, self.message
            )),
            _ => BlobError::Backend(format!(
                "IPFS node refused {call} ({}): {}",
                self.status, self.message
            )),
        }
    }
}

/// How a call can fail: before the node answered, or with the node's error answer.
#[derive(Debug)]
pub(super) enum CallError {
    Blob(BlobError),
    Node(NodeError),
}

impl From<BlobError> for CallError {
    fn from(e: BlobError) -> Self {
        CallError::Blob(e)
    }
}

impl CallError {
    pub(super) fn into_blob_error(self, call: &str, cid: Option<&Cid>) -> BlobError {
        match self {
            CallError::Blob(e) => e,
            CallError::Node(e) => e.into_blob_error(call, cid),
        }
    }
}

/// A transport failure (nothing usable came back from the node).
pub(super) fn transport_error(call: &str, e: &reqwest::Error) -> BlobError {
    if e.is_builder() {
        return BlobError::Backend(format!("{call}: invalid request: {}", with_sources(e)));
    }
    // Connect refused/timed out, reset, closed mid-request, timeouts: the node is not
    // (or no longer) reachable.
    BlobError::Unavailable(format!("IPFS node {call}: {}", with_sources(e)))
}

/// `Size` is a number on js-ipfs and a string on Kubo.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeField {
    Number(u64),
    Text(String),
}

#[derive(Deserialize)]
struct AddLine {
    #[serde(rename = "Hash")]
    hash: Option<String>,
    #[serde(rename = "Size")]
    size: Option<SizeField>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

/// The parsed `add` answer: root CID and the node's `Size` (the UnixFS DAG size — the file
/// size plus dag-pb overhead for multi-block files, not the number of bytes added).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Added {
    pub cid: Cid,
    pub dag_size: Option<u64>,
}

/// Parses the `add` answer: one JSON object, or newline-delimited objects (progress lines,
/// one line per file) of which the last one carrying a `Hash` is the root.
pub(super) fn parse_add_response(body: &[u8]) -> Result<Added, BlobError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| BlobError::Backend("IPFS add answer is not UTF-8".into()))?;
    let mut last: Option<AddLine> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parsed: AddLine = serde_json::from_str(line).map_err(|e| {
            BlobError::Backend(format!("IPFS add answer is not JSON ({e}): {line:.200}"))
        })?;
        match (&parsed.hash, &parsed.message) {
            (Some(_), _) => last = Some(parsed),
            (None, Some(message)) => {
                return Err(BlobError::Backend(format!("IPFS add failed: {message}")))
            }
            (None, None) => {}
        }
    }
    let Some(AddLine {
        hash: Some(hash),
        size,
        ..
    }) = last
    else {
        return Err(BlobError::Backend(format!(
            "IPFS add answer has no Hash: {text:.200}"
        )));
    };
    let cid = Cid::try_from(hash.as_str())
        .map_err(|e| BlobError::Backend(format!("IPFS add answered an invalid CID {hash}: {e}")))?;
    let dag_size =
        match size {
            None => None,
            Some(SizeField::Number(n)) => Some(n),
            Some(SizeField::Text(s)) => Some(s.parse().map_err(|_| {
                BlobError::Backend(format!("IPFS add answered an invalid Size {s:?}"))
            })?),
        };
    Ok(Added { cid, dag_size })
}

#[derive(Deserialize)]
struct PinLs {
    #[serde(rename = "Keys", default)]
    keys: std::collections::HashMap<String, serde_json::Value>,
}

/// Whether a successful `pin/ls?arg=<cid>` answer lists `cid` (compared as parsed CIDs: the
/// node may answer in another base, or as CIDv0 for a dag-pb sha2-256 CIDv1).
pub(super) fn pin_ls_contains(body: &[u8], cid: &Cid) -> Result<bool, BlobError> {
    let parsed: PinLs = serde_json::from_slice(body)
        .map_err(|e| BlobError::Backend(format!("IPFS pin/ls answer is not understood: {e}")))?;
    Ok(parsed.keys.keys().any(|key| {
        Cid::try_from(key.as_str())
            .map(|k| k.codec() == cid.codec() && k.hash() == cid.hash())
            .unwrap_or(false)
    }))
}

/// The roots a `pin/ls?type=recursive` answer lists, as CIDv1 (the node may answer CIDv0).
pub(super) fn pin_ls_roots(body: &[u8]) -> Result<Vec<Cid>, BlobError> {
    let parsed: PinLs = serde_json::from_slice(body)
        .map_err(|e| BlobError::Backend(format!("IPFS pin/ls answer is not understood: {e}")))?;
    parsed
        .keys
        .keys()
        .map(|key| {
            Cid::try_from(key.as_str())
                .map(|cid| crate::blobs::unixfs::as_v1(&cid))
                .map_err(|e| BlobError::Backend(format!("IPFS pin/ls listed {key:?}: {e}")))
        })
        .collect()
}

/// The CIDs a `refs` answer lists (one `{"Ref": cid, "Err": ""}` object per line); lines
/// that carry an error or no CID are skipped.
pub(super) fn refs_lines(body: &[u8]) -> Vec<Cid> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(rename = "Ref", default)]
        reference: String,
    }
    body.split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Line>(line).ok())
        .filter_map(|line| Cid::try_from(line.reference.as_str()).ok())
        .collect()
}

/// One object of a `pin/add?progress=true` answer. Kubo streams `{"Progress": n, "Bytes": b}`
/// every 500 ms while it walks the DAG (n: blocks so far, repeated unchanged while it waits
/// for one) and ends with `{"Pins": [...]}`; js-ipfs 0.66 ignores `progress` and answers
/// the final object alone. An error object (`{"Message": ...}`) can end the stream too.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PinEvent {
    Progress(u64),
    Pinned(Vec<Cid>),
    Failed(String),
}

#[derive(Deserialize)]
struct PinLine {
    #[serde(rename = "Pins")]
    pins: Option<Vec<String>>,
    #[serde(rename = "Progress")]
    progress: Option<u64>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

/// Parses one line of a `pin/add` answer.
pub(super) fn parse_pin_line(line: &[u8]) -> Result<PinEvent, BlobError> {
    let parsed: PinLine = serde_json::from_slice(line).map_err(|e| {
        BlobError::Backend(format!(
            "IPFS pin/add answer is not JSON ({e}): {:.200}",
            String::from_utf8_lossy(line)
        ))
    })?;
    if let Some(message) = parsed.message {
        return Ok(PinEvent::Failed(message));
    }
    if let Some(pins) = parsed.pins {
        let pins = pins
            .iter()
            .map(|p| {
                Cid::try_from(p.as_str()).map_err(|e| {
                    BlobError::Backend(format!("IPFS pin/add answered an invalid CID {p}: {e}"))
                })
            })
            .collect::<Result<_, _>>()?;
        return Ok(PinEvent::Pinned(pins));
    }
    // `Progress` is omitted while it is 0 (Go's omitempty).
    Ok(PinEvent::Progress(parsed.progress.unwrap_or(0)))
}

#[derive(Deserialize)]
struct BlockStat {
    #[serde(rename = "Size")]
    size: u64,
}

/// The block's size from a `block/stat` answer.
pub(super) fn parse_block_size(body: &[u8]) -> Result<u64, BlobError> {
    serde_json::from_slice::<BlockStat>(body)
        .map(|stat| stat.size)
        .map_err(|e| BlobError::Backend(format!("IPFS block/stat answer is not understood: {e}")))
}

/// The `block/put` answer: the key the node stored the block under.
#[derive(Deserialize)]
struct BlockPutAnswer {
    #[serde(rename = "Key")]
    key: String,
}

/// Whether a `block/put` answer names `expected` (same codec and multihash; js-ipfs answers
/// a dag-pb sha2-256 block as CIDv0).
pub(super) fn block_put_names(body: &[u8], expected: &Cid) -> Result<bool, BlobError> {
    let answer: BlockPutAnswer = serde_json::from_slice(body)
        .map_err(|e| BlobError::Backend(format!("IPFS block/put answer is not understood: {e}")))?;
    let key = Cid::try_from(answer.key.as_str()).map_err(|e| {
        BlobError::Backend(format!(
            "IPFS block/put answered an invalid CID {}: {e}",
            answer.key
        ))
    })?;
    Ok(key.codec() == expected.codec() && key.hash() == expected.hash())
}

/// The CID of `name/resolve`'s answer, `{"Path": "/ipfs/<cid>"}`.
pub(super) fn resolved_path(body: &[u8]) -> Result<Cid, BlobError> {
    #[derive(serde::Deserialize)]
    struct Resolved {
        #[serde(rename = "Path")]
        path: String,
    }
    let resolved: Resolved = serde_json::from_slice(body)
        .map_err(|e| BlobError::Backend(format!("IPFS node name/resolve: {e}")))?;
    let cid = resolved
        .path
        .strip_prefix("/ipfs/")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| {
            BlobError::Backend(format!(
                "IPFS node name/resolve: {:?} is not an /ipfs/ path",
                resolved.path
            ))
        })?;
    Cid::try_from(cid)
        .map_err(|e| BlobError::Backend(format!("IPFS node name/resolve: {cid:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";

    #[test]
    fn add_answer_js_ipfs_number_size_base58() {
        let body = br#"{"Name":"blob","Hash":"zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY","Size":12}"#;
        let added = parse_add_response(body).unwrap();
        assert_eq!(added.cid, Cid::try_from(HELLO).unwrap());
        assert_eq!(added.dag_size, Some(12));
    }

    #[test]
    fn add_answer_kubo_string_size_ndjson_takes_last() {
        let body = format!(
            "{{\"Name\":\"blob\",\"Bytes\":262144}}\n{{\"Name\":\"blob\",\"Hash\":\"{HELLO}\",\"Size\":\"262249\"}}\n"
        );
        let added = parse_add_response(body.as_bytes()).unwrap();
        assert_eq!(added.cid.to_string(), HELLO);
        assert_eq!(added.dag_size, Some(262_249));
    }

    #[test]
    fn add_answer_without_hash_or_with_error_is_refused() {
        assert!(parse_add_response(b"").is_err());
        assert!(parse_add_response(br#"{"Name":"blob","Bytes":5}"#).is_err());
        let err = parse_add_response(br#"{"Message":"boom","Code":0,"Type":"error"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("boom"), "{err}");
        assert!(parse_add_response(br#"{"Hash":"nonsense","Size":1}"#).is_err());
        assert!(
            parse_add_response(format!(r#"{{"Hash":"{HELLO}","Size":"x"}}"#).as_bytes()).is_err()
        );
    }

    #[test]
    fn error_bodies_are_classified() {
        let status = StatusCode::INTERNAL_SERVER_ERROR;
        let cid = Cid::try_from(HELLO).unwrap();
        let e = NodeError::from_body(
            status,
            br#"{"Message":"Failed to cat file: request timed out","Code":0,"Type":"error"}"#,
        );
        assert!(e.is_not_found());
        assert!(matches!(e.into_blob_error("cat", Some(&cid)), BlobError::NotFound(c) if c == cid));

        let e = NodeError::from_body(
            status,
            format!(r#"{{"Message":"path '{HELLO}' is not pinned","Code":0,"Type":"error"}}"#)
                .as_bytes(),
        );
        assert!(e.is_not_pinned());

        let e = NodeError::from_body(StatusCode::METHOD_NOT_ALLOWED, b"<html>nope</html>");
        assert_eq!(e.message, "<html>nope</html>");
        match e.into_blob_error("add", None) {
            BlobError::Unavailable(m) => assert!(m.contains("405") && m.contains("nope"), "{m}"),
            other => panic!("{other:?}"),
        }

        // A gateway or proxy in front says "not found" about its own paths, not the content.
        let e = NodeError::from_body(StatusCode::NOT_FOUND, b"404 page not found");
        assert!(!e.is_not_found());
        assert!(matches!(
            e.into_blob_error("cat", Some(&cid)),
            BlobError::Unavailable(_)
        ));
        let e = NodeError::from_body(StatusCode::FORBIDDEN, br#"{"message":"not found"}"#);
        assert!(matches!(
            e.into_blob_error("block/get", Some(&cid)),
            BlobError::Unavailable(_)
        ));

        // The node's own refusals that are not about content stay backend faults.
        let e = NodeError::from_body(
            status,
            br#"{"Message":"invalid path","Code":0,"Type":"error"}"#,
        );
        assert!(matches!(
            e.into_blob_error("cat", Some(&cid)),
            BlobError::Backend(_)
        ));
    }

    #[test]
    fn pin_listing_compares_parsed_cids() {
        let cid = Cid::try_from(HELLO).unwrap();
        let body = br#"{"Keys":{"zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY":{"Type":"recursive"}}}"#;
        assert!(pin_ls_contains(body, &cid).unwrap());
        assert!(!pin_ls_contains(br#"{"Keys":{}}"#, &cid).unwrap());
    }

    #[test]
    fn pin_answers_of_kubo_and_js_ipfs() {
        let cid = Cid::try_from(HELLO).unwrap();
        assert_eq!(
            parse_pin_line(br#"{"Progress":12,"Bytes":3145728}"#).unwrap(),
            PinEvent::Progress(12)
        );
        assert_eq!(parse_pin_line(b"{}").unwrap(), PinEvent::Progress(0));
        assert_eq!(
            parse_pin_line(br#"{"Pins":["zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY"]}"#)
                .unwrap(),
            PinEvent::Pinned(vec![cid])
        );
        assert!(matches!(
            parse_pin_line(br#"{"Message":"context deadline exceeded","Code":0,"Type":"error"}"#)
                .unwrap(),
            PinEvent::Failed(m) if m.contains("deadline")
        ));
        assert!(parse_pin_line(b"nonsense").is_err());
    }

    #[test]
    fn refs_answers_list_their_cids() {
        let leaf = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
        let body = format!(
            "{{\"Ref\":\"{leaf}\",\"Err\":\"\"}}\n{{\"Ref\":\"\",\"Err\":\"block not found\"}}\nnot json\n"
        );
        let listed = refs_lines(body.as_bytes());
        assert_eq!(listed, vec![Cid::try_from(leaf).unwrap()]);
        assert!(refs_lines(b"").is_empty());
    }

    #[test]
    fn block_put_answer_is_compared_as_a_cid() {
        let v1 =
            Cid::try_from("bafybeicqyg4vgi7kevmkn7jqjiitraeozedsfanbw4yztteicw7lonsxdi").unwrap();
        let v0 = br#"{"Key":"QmTmtezJBdFtJtu29wLF8LpXgFR7fMKvBo4gDex9yHGW6D","Size":1000}"#;
        assert!(block_put_names(v0, &v1).unwrap());
        let raw = Cid::new_v1(crate::blobs::kubo::RAW_CODEC, *v1.hash());
        assert!(!block_put_names(v0, &raw).unwrap());
        assert!(block_put_names(b"{}", &v1).is_err());
        assert_eq!(
            parse_block_size(br#"{"Key":"x","Size":262144}"#).unwrap(),
            262_144
        );
    }
}

/// The `name/publish` answer (`{"Name": "k51…", "Value": "/ipfs/…"}`).
#[derive(Deserialize)]
pub(super) struct NamePublished {
    #[serde(rename = "Name")]
    pub name: String,
}

/// The `key/list` answer (`{"Keys": [{"Name": "self", "Id": "k51…"}]}`).
#[derive(Deserialize)]
pub(super) struct KeyList {
    #[serde(rename = "Keys", default)]
    pub keys: Vec<Key>,
}

#[derive(Deserialize)]
pub(super) struct Key {
    #[serde(rename = "Name")]
    pub name: String,
}
