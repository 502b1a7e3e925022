//! HTTP: `GET /tracks.js`, the collect script landing pages load; cacheable, gzipped when asked.

use std::sync::LazyLock;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Response};

use super::asset::Asset;
use super::error::ApiError;

/// The script as written: kept small by hand (README, Endpoints: under 1 KiB gzipped; a test
/// checks it).
pub(super) const TRACKS_JS: &str = include_str!("tracks.js");

/// Browsers and CDNs may reuse it for an hour, then revalidate with the ETag (a cheap 304).
const CACHE_CONTROL: &str = "public, max-age=3600";

static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(TRACKS_JS, "text/javascript; charset=utf-8", CACHE_CONTROL));

pub(super) fn serve(
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut response = SCRIPT.serve(method, headers)?;
    // Pages that isolate themselves (COEP: require-corp) may still load it.
    response.headers_mut().insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_stays_under_one_kib_gzipped() {
        let size = super::super::asset::gzip(TRACKS_JS.as_bytes())
            .expect("gzip")
            .len();
        assert!(
            size < 1024,
            "tracks.js is {size} bytes gzipped; the budget is 1023"
        );
    }
}
