//! HTTP: `GET /dashboard` and its script and style sheet: a static page, embedded in the
//! binary, that holds no data. It asks for an `aggregates` token and reads the aggregates API
//! from the browser; nothing here reads the store.

use std::sync::LazyLock;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

use super::error::ApiError;
use super::script::{accepts_gzip, gzip, if_none_match};

/// Everything from this origin, nothing from anywhere else, no inline script or style, no
/// plugin, no framing by another site, and a form can submit nowhere (the page's forms are
/// handled by its script).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'; object-src 'none'";

/// Revalidated on every use (a cheap 304 by ETag), so an upgraded daemon's page and script
/// never mix with a cached older one.
const CACHE_CONTROL: &str = "no-cache";

/// One of the page's files, with its two representations and their validators.
pub struct Asset {
    content_type: &'static str,
    plain: Bytes,
    gzip: Bytes,
    etag_plain: HeaderValue,
    etag_gzip: HeaderValue,
}

impl Asset {
    fn new(text: &'static str, content_type: &'static str) -> Asset {
        let hash = blake3::hash(text.as_bytes()).to_hex();
        let tag = &hash.as_str()[..32];
        Asset {
            content_type,
            plain: Bytes::from_static(text.as_bytes()),
            // Compressing a constant into memory cannot fail; the plain bytes are the fallback.
            gzip: gzip(text.as_bytes())
                .map_or_else(|_| Bytes::from_static(text.as_bytes()), Bytes::from),
            etag_plain: etag(&format!("\"{tag}\"")),
            etag_gzip: etag(&format!("\"{tag}-gz\"")),
        }
    }

    /// The bytes sent to a client that takes gzip: the page's weight on the wire.
    #[cfg(test)]
    fn gzipped_len(&self) -> usize {
        self.gzip.len().min(self.plain.len())
    }
}

fn etag(text: &str) -> HeaderValue {
    // A hex digest in quotes is always a valid header value.
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("\"dashboard\""))
}

pub static PAGE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("dashboard.html"), "text/html; charset=utf-8"));
pub static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("dashboard.js"),
        "text/javascript; charset=utf-8",
    )
});
pub static STYLE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("dashboard.css"), "text/css; charset=utf-8"));

/// Answers GET or HEAD for `asset`: 200, or 304 when the client's copy is current.
pub(super) fn serve(
    asset: &Asset,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    let gzipped = accepts_gzip(headers) && asset.gzip.len() < asset.plain.len();
    let (body, tag) = if gzipped {
        (asset.gzip.clone(), &asset.etag_gzip)
    } else {
        (asset.plain.clone(), &asset.etag_plain)
    };
    let fresh = if_none_match(headers, &[&asset.etag_plain, &asset.etag_gzip]);
    let status = if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let length = body.len();
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
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // The page's address (and a token a careless hand put in its query) goes nowhere.
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    out.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    out.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !fresh {
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        if gzipped {
            out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        // Set by hand so that a HEAD answer announces the GET's length.
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page loads nothing from elsewhere and nothing inline: the CSP would refuse it, and
    /// the page would silently not work.
    #[test]
    fn the_page_has_no_inline_code_and_no_other_origin() {
        let page = include_str!("dashboard.html");
        for forbidden in [
            "<style",
            " style=",
            " onclick",
            " onload",
            " onsubmit",
            "javascript:",
            "http://",
            "https://",
            "//cdn",
        ] {
            assert!(!page.contains(forbidden), "{forbidden} in dashboard.html");
        }
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.contains("<script defer src=\"/dashboard.js\"></script>"));
        for asset in [include_str!("dashboard.js"), include_str!("dashboard.css")] {
            for forbidden in [
                "https://",
                "@import",
                "url(",
                "eval(",
                "new Function",
                "innerHTML",
            ] {
                assert!(
                    !asset.contains(forbidden),
                    "{forbidden} in a dashboard file"
                );
            }
        }
    }

    #[test]
    fn the_page_is_light() {
        let total: usize = [&*PAGE, &*SCRIPT, &*STYLE]
            .iter()
            .map(|asset| asset.gzipped_len())
            .sum();
        assert!(total < 16 * 1024, "the dashboard is {total} bytes gzipped");
    }
}
