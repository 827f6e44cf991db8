//! Task identity, compatible with Dragonfly v2: one task per logical object, so
//! signed URLs of one object (different signatures, same object) share a task.

use sha2::{Digest as _, Sha256};
use thiserror::Error;
use url::Url;

/// Query parameters dropped before hashing unless the caller names its own list:
/// the signature parameters of S3, GCS, Aliyun OSS, Huawei OBS and Tencent COS,
/// and containerd's `ns` (the registry a mirror request is for).
pub const DEFAULT_FILTERED_QUERY_PARAMS: &[&str] = &[
    // AWS S3 (SigV4 presigned URLs)
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "X-Amz-User-Agent",
    // Google Cloud Storage (V4 signed URLs)
    "X-Goog-Algorithm",
    "X-Goog-Credential",
    "X-Goog-Date",
    "X-Goog-Expires",
    "X-Goog-SignedHeaders",
    "X-Goog-Signature",
    // Aliyun OSS
    "OSSAccessKeyId",
    "Expires",
    "Signature",
    "SecurityToken",
    // Huawei OBS
    "AccessKeyId",
    "X-Obs-Date",
    "X-Obs-Security-Token",
    // Tencent COS
    "q-sign-algorithm",
    "q-ak",
    "q-sign-time",
    "q-key-time",
    "q-header-list",
    "q-url-param-list",
    "q-signature",
    "x-cos-security-token",
    // containerd registry mirror
    "ns",
];

#[derive(Debug, Error)]
pub enum TaskIdError {
    #[error("invalid URL {url:?}: {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
}

/// What identifies a task besides its URL.
#[derive(Debug, Clone, Default)]
pub struct TaskIdParams<'a> {
    /// Distinguishes otherwise identical URLs (e.g. two versions behind one URL).
    pub tag: Option<&'a str>,
    /// The application the download is for.
    pub application: Option<&'a str>,
    /// Query parameters ignored for identity; `None` means the defaults.
    pub filtered_query_params: Option<&'a [String]>,
    /// A piece length the caller fixed; part of the identity because it changes
    /// how the content is cut.
    pub piece_length: Option<u64>,
}

/// The URL with filtered query parameters removed, normalised as Dragonfly does
/// (no empty `?`, and a lone `/` path loses its trailing slash).
pub fn canonical_url(url: &str, filtered: Option<&[String]>) -> Result<String, TaskIdError> {
    let parsed = Url::parse(url).map_err(|source| TaskIdError::InvalidUrl {
        url: url.to_string(),
        source,
    })?;
    let keep = |k: &str| match filtered {
        Some(list) => !list.iter().any(|f| f == k),
        None => !DEFAULT_FILTERED_QUERY_PARAMS.contains(&k),
    };
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = parsed.clone();
    if kept.is_empty() {
        out.set_query(None);
    } else if kept.len() != parsed.query_pairs().count() {
        out.query_pairs_mut().clear().extend_pairs(kept);
    }
    let s = out.to_string();
    Ok(if out.path() == "/" && s.ends_with('/') {
        s.trim_end_matches('/').to_string()
    } else {
        s
    })
}

/// Hex SHA-256 over the canonical URL, tag, application and fixed piece length.
pub fn task_id(url: &str, params: &TaskIdParams<'_>) -> Result<String, TaskIdError> {
    let mut h = Sha256::new();
    h.update(canonical_url(url, params.filtered_query_params)?);
    if let Some(tag) = params.tag {
        h.update(tag);
    }
    if let Some(app) = params.application {
        h.update(app);
    }
    if let Some(len) = params.piece_length {
        h.update(len.to_string());
    }
    Ok(hex::encode(h.finalize()))
}

/// Whether a string looks like a task id (64 lowercase hex digits).
pub fn is_task_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed independently with `printf '%s' INPUT | sha256sum`.
    #[test]
    fn plain_url() {
        assert_eq!(
            task_id("https://example.com/blob", &TaskIdParams::default()).unwrap(),
            "c8625961b1d79e2e66e591aa1f9069cb8c39ae96ed973880c72262a3fcdf71dd"
        );
    }

    #[test]
    fn root_path_drops_trailing_slash() {
        assert_eq!(
            canonical_url("https://example.com/", None).unwrap(),
            "https://example.com"
        );
        assert_eq!(
            canonical_url("https://example.com/a/", None).unwrap(),
            "https://example.com/a/"
        );
    }

    #[test]
    fn signed_urls_of_one_object_share_a_task() {
        let a = "https://bucket.s3.amazonaws.com/model.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=aaa&versionId=3";
        let b = "https://bucket.s3.amazonaws.com/model.bin?X-Amz-Signature=bbb&versionId=3&X-Amz-Date=20260101T000000Z";
        let p = TaskIdParams::default();
        assert_eq!(task_id(a, &p).unwrap(), task_id(b, &p).unwrap());
        assert_eq!(
            canonical_url(a, None).unwrap(),
            "https://bucket.s3.amazonaws.com/model.bin?versionId=3"
        );
        let c = "https://bucket.s3.amazonaws.com/model.bin?versionId=4";
        assert_ne!(task_id(a, &p).unwrap(), task_id(c, &p).unwrap());
    }

    #[test]
    fn custom_filter_replaces_defaults() {
        let f = vec!["token".to_string()];
        assert_eq!(
            canonical_url("http://o/x?token=1&X-Amz-Date=2", Some(&f)).unwrap(),
            "http://o/x?X-Amz-Date=2"
        );
    }

    #[test]
    fn tag_application_and_piece_length_are_hashed_in_order() {
        let url = "https://example.com/blob";
        let p = TaskIdParams {
            tag: Some("v1"),
            application: Some("app"),
            piece_length: Some(4194304),
            ..Default::default()
        };
        // printf '%s' 'https://example.com/blobv1app4194304' | sha256sum
        assert_eq!(
            task_id(url, &p).unwrap(),
            "c3189aa346dd14384cc549e413a7a54112e0aab25a5df7beeef18859ca84a067"
        );
    }

    #[test]
    fn bad_url_is_an_error() {
        assert!(task_id("not a url", &TaskIdParams::default()).is_err());
        assert!(is_task_id(
            &task_id("http://x/y", &TaskIdParams::default()).unwrap()
        ));
    }
}
