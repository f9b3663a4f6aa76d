//! Path -> what the relay does with it.
//!
//! Routing is a pure function of (method, path) so that the 404/405 rules can be tested without a
//! socket. A known path with the wrong method is a 405 that names the allowed methods in `Allow`
//! (RFC 9110 §15.5.6); an unknown path is a 404. Every `GET` route also answers `HEAD` (RFC 9110 §9.3.2
//! expects it of a general-purpose server); the caller leaves the body out.

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Healthz,
    /// `POST /api/v1/generate-stream` (alias `/api/v1/stream`): relay a generation.
    Generate,
}

/// A request that matched no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    NotFound,
    /// The path exists; the value is the `Allow` header.
    MethodNotAllowed(&'static str),
}

/// Finds the route for `method` and `path` (the path without its query).
pub fn resolve(method: &str, path: &str) -> Result<Route, Miss> {
    let (route, allow) = match path {
        "/healthz" => (Route::Healthz, "GET, HEAD"),
        "/api/v1/generate-stream" | "/api/v1/stream" => (Route::Generate, "POST"),
        _ => return Err(Miss::NotFound),
    };
    if allow.split(", ").any(|m| m == method) {
        Ok(route)
    } else {
        Err(Miss::MethodNotAllowed(allow))
    }
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
