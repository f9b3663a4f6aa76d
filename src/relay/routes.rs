//! Path -> what the relay does with it.
//!
//! Routing is a pure function of (method, path) so that the 404/405 rules can be tested without a
//! socket; the rules every table shares are in `crate::http::route`.

use crate::http::route;
pub use crate::http::route::Miss;

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Healthz,
    /// `POST /api/v1/generate-stream` (alias `/api/v1/stream`): relay a generation.
    Generate,
}

/// Finds the route for `method` and `path` (the path without its query).
pub fn resolve(method: &str, path: &str) -> Result<Route, Miss> {
    let (route, allow) = match path {
        "/healthz" => (Route::Healthz, "GET, HEAD"),
        "/api/v1/generate-stream" | "/api/v1/stream" => (Route::Generate, "POST"),
        _ => return Err(Miss::NotFound),
    };
    route::allow(route, allow, method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_table() {
        let r = resolve;
        assert_eq!(r("POST", "/api/v1/generate-stream"), Ok(Route::Generate));
        assert_eq!(r("POST", "/api/v1/stream"), Ok(Route::Generate));
        assert_eq!(r("GET", "/healthz"), Ok(Route::Healthz));
        assert_eq!(r("HEAD", "/healthz"), Ok(Route::Healthz));
        assert_eq!(
            r("HEAD", "/api/v1/stream"),
            Err(Miss::MethodNotAllowed("POST"))
        );
        assert_eq!(
            r("GET", "/api/v1/generate-stream"),
            Err(Miss::MethodNotAllowed("POST"))
        );
        assert_eq!(
            r("POST", "/healthz"),
            Err(Miss::MethodNotAllowed("GET, HEAD"))
        );
        assert_eq!(r("POST", "/api/v1/generate"), Err(Miss::NotFound));
        assert_eq!(r("GET", "/stats"), Err(Miss::NotFound));
    }
}
