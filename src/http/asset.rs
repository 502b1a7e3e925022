//! HTTP: a file embedded in the binary and served as it is: plain or gzipped as the client
//! takes it, with a strong ETag per representation and a 304 for a copy that is current. The
//! collect script and the dashboard's files are such files; each adds headers of its own.

use std::io::Write;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

use super::error::ApiError;

/// One file, its two representations and their validators, built once.
pub(super) struct Asset {
    content_type: &'static str,
    cache_control: &'static str,
    plain: Bytes,
    gzip: Bytes,
    /// Strong validators, one per representation (they differ in bytes): the content hash.
    etag_plain: HeaderValue,
    etag_gzip: HeaderValue,
}

impl Asset {
    pub(super) fn new(
        text: &'static str,
        content_type: &'static str,
        cache_control: &'static str,
    ) -> Asset {
        let hash = blake3::hash(text.as_bytes()).to_hex();
        let tag = &hash.as_str()[..32];
        Asset {
            content_type,
            cache_control,
            plain: Bytes::from_static(text.as_bytes()),
            // Compressing a constant into memory cannot fail; the plain bytes are the fallback.
            gzip: gzip(text.as_bytes())
                .map_or_else(|_| Bytes::from_static(text.as_bytes()), Bytes::from),
            etag_plain: etag(&format!("\"{tag}\"")),
            etag_gzip: etag(&format!("\"{tag}-gz\"")),
        }
    }

    /// The bytes sent to a client that takes gzip: the file's weight on the wire.
    #[cfg(test)]
    pub(super) fn gzipped_len(&self) -> usize {
        self.gzip.len().min(self.plain.len())
    }

    /// Answers GET or HEAD: 200, or 304 when the client's copy is current.
    pub(super) fn serve(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        if !matches!(*method, Method::GET | Method::HEAD) {
            return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
        }
        let gzipped = accepts_gzip(headers) && self.gzip.len() < self.plain.len();
        let (body, tag) = if gzipped {
            (self.gzip.clone(), &self.etag_gzip)
        } else {
            (self.plain.clone(), &self.etag_plain)
        };
        // Either tag means the client holds the current file, whichever encoding it kept.
        let fresh = if_none_match(headers, &[&self.etag_plain, &self.etag_gzip]);
        let length = body.len();
        let body = if fresh || *method == Method::HEAD {
            Bytes::new()
        } else {
            body
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = if fresh {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        };
        let out = response.headers_mut();
        out.insert(header::ETAG, tag.clone());
        out.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(self.cache_control),
        );
        out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        if !fresh {
            out.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            if gzipped {
                out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            // Set by hand so that a HEAD answer announces the GET's length.
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        Ok(response)
    }
}

/// `bytes` gzipped at the best compression level.
pub(super) fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

fn etag(text: &str) -> HeaderValue {
    // A hex digest in quotes is always a valid header value.
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("\"asset\""))
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
