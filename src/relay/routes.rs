//! Path -> handler, for both services a worker can run.
//!
//! Routing is a pure function of (service, method, path) so that the 404/405 rules can be tested without a
//! socket. A known path with the wrong method is a 405 that names the allowed methods in `Allow`
//! (RFC 9110 §15.5.6); an unknown path is a 404. Every `GET` route also answers `HEAD` (RFC 9110 §9.3.2
//! expects it of a general-purpose server); the caller leaves the body out.

/// Which service's table to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Relay,
    Mock,
}

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Healthz,
    /// `POST /api/v1/generate-stream` (alias `/api/v1/stream`): relay a generation.
    Generate,
    /// The mock's `GET /stats`.
    MockStats,
    /// The mock's generation endpoints, in either provider's shape.
    MockGenerate,
}

/// A request that matched no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    NotFound,
    /// The path exists; the value is the `Allow` header.
    MethodNotAllowed(&'static str),
}

/// Finds the route for `method` and `path` (the path without its query).
pub fn resolve(table: Table, method: &str, path: &str) -> Result<Route, Miss> {
    let (route, allow) = match (table, path) {
        (_, "/healthz") => (Route::Healthz, "GET, HEAD"),
        (Table::Relay, "/api/v1/generate-stream" | "/api/v1/stream") => (Route::Generate, "POST"),
        (Table::Mock, "/stats") => (Route::MockStats, "GET, HEAD"),
        (Table::Mock, p) if is_mock_generate_path(p) => (Route::MockGenerate, "POST"),
        _ => return Err(Miss::NotFound),
    };
    if allow.split(", ").any(|m| m == method) {
        Ok(route)
    } else {
        Err(Miss::MethodNotAllowed(allow))
    }
}

/// `/v1/chat/completions` (OpenAI) or `/v1beta/models/{model}:streamGenerateContent` (Gemini), under any base.
fn is_mock_generate_path(path: &str) -> bool {
    path.ends_with("/v1/chat/completions")
        || (path.contains("/models/") && path.ends_with(":streamGenerateContent"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_table() {
        let r = |m, p| resolve(Table::Relay, m, p);
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

    #[test]
    fn mock_table() {
        let r = |m, p| resolve(Table::Mock, m, p);
        assert_eq!(r("POST", "/v1/chat/completions"), Ok(Route::MockGenerate));
        assert_eq!(
            r(
                "POST",
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
            ),
            Ok(Route::MockGenerate)
        );
        assert_eq!(r("GET", "/stats"), Ok(Route::MockStats));
        assert_eq!(
            r("GET", "/v1/chat/completions"),
            Err(Miss::MethodNotAllowed("POST"))
        );
        assert_eq!(r("POST", "/api/v1/generate-stream"), Err(Miss::NotFound));
    }
}
