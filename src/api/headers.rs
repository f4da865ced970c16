//! Parsing and producing the distribution API's headers.

use actix_web::http::header::{self, HeaderMap};

use super::error::ApiError;
use crate::registry::BlobRange;

pub const DOCKER_CONTENT_DIGEST: &str = "Docker-Content-Digest";
pub const DOCKER_UPLOAD_UUID: &str = "Docker-Upload-UUID";
pub const OCI_CHUNK_MIN_LENGTH: &str = "OCI-Chunk-Min-Length";
pub const OCI_SUBJECT: &str = "OCI-Subject";
pub const OCI_FILTERS_APPLIED: &str = "OCI-Filters-Applied";
/// Where the content is in IPFS (`/ipfs/<cid>`), as IPFS gateways announce it.
pub const X_IPFS_PATH: &str = "X-Ipfs-Path";
pub const API_VERSION: (&str, &str) = ("Docker-Distribution-API-Version", "registry/2.0");

/// The `Range` value of an upload holding `received` bytes. An empty upload reports `0-0`,
/// as the reference implementation does and clients expect.
pub fn upload_range(received: u64) -> String {
    format!("0-{}", received.saturating_sub(1))
}

pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ApiError::HeaderInvalid("Content-Length".into()))
        })
        .transpose()
}

pub fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A chunk's `Content-Range: <start>-<end>` (the spec's form; `bytes ` prefixes and a
/// `/total` suffix, as some clients send, are tolerated).
pub fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let invalid = || ApiError::HeaderInvalid(format!("Content-Range {value:?}"));
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let text = text
        .strip_prefix("bytes")
        .map(str::trim_start)
        .unwrap_or(text);
    let text = text.strip_prefix('=').unwrap_or(text);
    let text = text.split('/').next().unwrap_or(text);
    let (start, end) = text.split_once('-').ok_or_else(invalid)?;
    let start = start.trim().parse().map_err(|_| invalid())?;
    let end = end.trim().parse().map_err(|_| invalid())?;
    Ok(Some((start, end)))
}

/// A blob read's `Range: bytes=...`. Multiple ranges are not supported; such a header is
/// ignored and the whole blob served, which RFC 9110 allows.
pub fn blob_range(headers: &HeaderMap) -> Result<Option<BlobRange>, ApiError> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let invalid = || ApiError::HeaderInvalid(format!("Range {value:?}"));
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let Some(spec) = text.strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or_else(invalid)?;
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        BlobRange::Suffix(end.parse().map_err(|_| invalid())?)
    } else {
        BlobRange::From {
            start: start.parse().map_err(|_| invalid())?,
            end: if end.is_empty() {
                None
            } else {
                Some(end.parse().map_err(|_| invalid())?)
            },
        }
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(name: HeaderName, value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn content_ranges() {
        let parse = |v| content_range(&headers(header::CONTENT_RANGE, v));
        assert_eq!(parse("0-99").unwrap(), Some((0, 99)));
        assert_eq!(parse("bytes 100-199/*").unwrap(), Some((100, 199)));
        assert!(parse("x-1").is_err());
        assert_eq!(content_range(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn blob_ranges() {
        let parse = |v| blob_range(&headers(header::RANGE, v));
        assert_eq!(
            parse("bytes=0-9").unwrap(),
            Some(BlobRange::From {
                start: 0,
                end: Some(9)
            })
        );
        assert_eq!(
            parse("bytes=5-").unwrap(),
            Some(BlobRange::From {
                start: 5,
                end: None
            })
        );
        assert_eq!(parse("bytes=-5").unwrap(), Some(BlobRange::Suffix(5)));
        assert_eq!(parse("bytes=0-1,4-5").unwrap(), None);
        assert_eq!(parse("items=0-1").unwrap(), None);
        assert!(parse("bytes=a-b").is_err());
    }

    #[test]
    fn upload_ranges() {
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(10), "0-9");
    }
}
