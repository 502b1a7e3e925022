//! HTTP: `GET /dashboard` and its script and style sheet: a static page, embedded in the
//! binary, that holds no data. It asks for an `aggregates` token and reads the aggregates API
//! from the browser; nothing here reads the store.

use std::sync::LazyLock;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response};

use super::asset::Asset;
use super::error::ApiError;

/// Everything from this origin, nothing from anywhere else, no inline script or style, no
/// plugin, no framing by another site, and a form can submit nowhere (the page's forms are
/// handled by its script).
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'; object-src 'none'";

/// Revalidated on every use (a cheap 304 by ETag), so an upgraded daemon's page and script
/// never mix with a cached older one.
const CACHE_CONTROL: &str = "no-cache";

pub(super) static PAGE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("dashboard.html"),
        "text/html; charset=utf-8",
        CACHE_CONTROL,
    )
});
pub(super) static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("dashboard.js"),
        "text/javascript; charset=utf-8",
        CACHE_CONTROL,
    )
});
pub(super) static STYLE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("dashboard.css"),
        "text/css; charset=utf-8",
        CACHE_CONTROL,
    )
});

/// Answers GET or HEAD for `asset`: 200, or 304 when the client's copy is current.
pub(super) fn serve(
    asset: &Asset,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut response = asset.serve(method, headers)?;
    let out = response.headers_mut();
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
