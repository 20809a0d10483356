//! The console's files, embedded in the binary, served with their content type, an `ETag`
//! (answering `If-None-Match` with 304) and a strict Content-Security-Policy.
//!
//! The policy allows scripts, styles and connections to this origin only and no inline
//! script or style at all, so even a row value that somehow reached the DOM as markup could
//! not run: the pages build every cell with `textContent`, and the policy is the second
//! line. `frame-ancestors 'none'` stops another site framing the console to trick a click on
//! its clear button.
//!
//! `Cache-Control: no-cache` with the ETag: a browser revalidates each load (a 304 of a few
//! bytes), so an upgraded server never runs with the previous version's script.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The policy every console response carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
pub struct Asset {
    /// Its name under `/ui/`.
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// Every file of the console; `index.html` is also served at `/ui` and `/ui/`.
pub const ASSETS: [Asset; 7] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../console/index.html"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/console.css"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/api.js"),
    },
    Asset {
        name: "queries.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/queries.js"),
    },
    Asset {
        name: "query.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/query.js"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/app.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../console/favicon.svg"),
    },
];

/// Bytes of every embedded file together (what the console adds to the binary, besides its
/// handful of handlers).
pub fn embedded_bytes() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

/// FNV-1a of a file: a stable ETag for bytes fixed at compile time.
fn etag_of(body: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

fn not_modified(request: &HeaderMap, etag: &str) -> bool {
    (request.get_all(header::IF_NONE_MATCH).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|c| {
            let c = c.trim();
            c == "*" || c == etag || c.strip_prefix("W/") == Some(etag)
        })
}

/// The headers every console response carries, whatever its status.
fn harden(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = etag_of(asset.body);
    let mut response = if not_modified(request, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = asset.body.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    harden(&mut response);
    response
}

/// `GET /ui` and `/ui/`: the page.
pub async fn index(request: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == "index.html") {
        Some(asset) => serve(asset, &request),
        None => missing(),
    }
}

/// `GET /ui/{file}`: one embedded file, or 404.
pub async fn file(Path(name): Path<String>, request: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset, &request),
        None => missing(),
    }
}

fn missing() -> Response {
    let mut response = crate::problem::problem(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        "the console has no such file",
    );
    harden(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_by_content_and_are_quoted() {
        let a = etag_of(b"a");
        assert_ne!(a, etag_of(b"b"));
        assert!(a.starts_with('"') && a.ends_with('"') && a.len() == 18);
    }

    #[test]
    fn html_loads_only_its_own_scripts_and_styles() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap_or_default();
        // No inline script or style: the policy would block them, and the page would break.
        assert!(!html.contains("<script>") && !html.contains("style="));
        assert!(!html.contains("<style"));
        for asset in &ASSETS[1..] {
            assert!(
                html.contains(asset.name),
                "index.html does not load {}",
                asset.name
            );
        }
        assert!(!html.contains("http://") && !html.contains("https://"));
        // Absolute paths: `/ui` (no slash) would resolve relative ones against `/`.
        assert!(html.contains("src=\"/ui/app.js\""));
    }
}
