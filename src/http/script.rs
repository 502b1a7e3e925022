//! HTTP: `GET /tracks.js`, the collect script landing pages load; cacheable, gzipped when asked.

use std::io::Write;
use std::sync::LazyLock;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

use super::error::ApiError;

/// The script as written: kept small by hand (README, Endpoints: under 1 KiB gzipped; a test
/// checks it).
pub const TRACKS_JS: &str = include_str!("tracks.js");

/// Browsers and CDNs may reuse it for an hour, then revalidate with the ETag (a cheap 304).
const CACHE_CONTROL: &str = "public, max-age=3600";

/// The two representations of the script, built once on first use.
struct Script {
    plain: Bytes,
    gzip: Bytes,
    /// Strong validators, one per representation (they differ in bytes): the content hash.
    etag_plain: HeaderValue,
    etag_gzip: HeaderValue,
}

static SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    let hash = blake3::hash(TRACKS_JS.as_bytes()).to_hex();
    let tag = &hash.as_str()[..32];
    let gzip = gzip(TRACKS_JS.as_bytes());
    Script {
        plain: Bytes::from_static(TRACKS_JS.as_bytes()),
        // Compressing a constant into memory cannot fail; the plain bytes are the fallback.
        gzip: gzip.map_or_else(|_| Bytes::from_static(TRACKS_JS.as_bytes()), Bytes::from),
        etag_plain: etag(&format!("\"{tag}\"")),
        etag_gzip: etag(&format!("\"{tag}-gz\"")),
    }
});

/// The gzipped script at the best compression level.
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

fn etag(text: &str) -> HeaderValue {
    // A hex digest in quotes is always a valid header value.
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("\"tracks\""))
}

pub(super) fn serve(
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    let script = &*SCRIPT;
    let gzipped = accepts_gzip(headers) && script.gzip.len() < script.plain.len();
    let (body, tag) = if gzipped {
        (script.gzip.clone(), &script.etag_gzip)
    } else {
        (script.plain.clone(), &script.etag_plain)
    };
    // Either tag means the client holds the current script, whichever encoding it kept.
    let fresh = if_none_match(headers, &[&script.etag_plain, &script.etag_gzip]);
    let (status, length) = if fresh {
        (StatusCode::NOT_MODIFIED, None)
    } else {
        (StatusCode::OK, Some(body.len()))
    };
    let body = if fresh || *method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let out = response.headers_mut();
    out.insert(header::ETAG, tag.clone());
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    // Pages that isolate themselves (COEP: require-corp) may still load it.
    out.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    if let Some(length) = length {
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        );
        if gzipped {
            out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        // Set by hand so that a HEAD answer announces the GET's length.
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(response)
}

/// `Accept-Encoding` lists gzip (or `*`) with a non-zero quality.
pub(super) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let quality = parts
                .filter_map(|param| {
                    let (key, value) = param.split_once('=')?;
                    key.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| value.trim().parse::<f32>().ok())
                        .flatten()
                })
                .next()
                .unwrap_or(1.0);
            (coding.eq_ignore_ascii_case("gzip")
                || coding.eq_ignore_ascii_case("x-gzip")
                || coding == "*")
                && quality > 0.0
        })
}

/// `If-None-Match` names one of `tags` (weak comparison, as RFC 9110 asks for this header) or
/// is `*`.
pub(super) fn if_none_match(headers: &HeaderMap, tags: &[&HeaderValue]) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|candidate| candidate.trim())
        .any(|candidate| {
            let candidate = candidate.strip_prefix("W/").unwrap_or(candidate);
            candidate == "*"
                || tags
                    .iter()
                    .any(|tag| tag.as_bytes() == candidate.as_bytes())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_script_stays_under_one_kib_gzipped() {
        let size = gzip(TRACKS_JS.as_bytes()).expect("gzip").len();
        assert!(
            size < 1024,
            "tracks.js is {size} bytes gzipped; the budget is 1023"
        );
    }

    #[test]
    fn gzip_is_chosen_only_when_acceptable() {
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "br;q=1.0, GZIP;q=0.5"
        )])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "*")])));
        assert!(!accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip;q=0, br"
        )])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "identity")])));
        assert!(!accepts_gzip(&headers(&[])));
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists() {
        let tag = HeaderValue::from_static("\"abc\"");
        let tags = [&tag];
        assert!(if_none_match(
            &headers(&[("if-none-match", "\"abc\"")]),
            &tags
        ));
        assert!(if_none_match(
            &headers(&[("if-none-match", "\"x\", W/\"abc\"")]),
            &tags
        ));
        assert!(if_none_match(&headers(&[("if-none-match", "*")]), &tags));
        assert!(!if_none_match(
            &headers(&[("if-none-match", "\"abcd\"")]),
            &tags
        ));
        assert!(!if_none_match(&headers(&[]), &tags));
    }
}
