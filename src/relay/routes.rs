//! Path -> what the relay does with it.
//!
//! Routing is a pure function of (method, path) so that the 404/405 rules can be tested without a
//! socket; the rules every table shares are in `crate::http::route`.

use super::passthrough;
use super::providers::Provider;
use crate::http::route;
pub use crate::http::route::Miss;

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Healthz,
    /// `POST /api/v1/generate-stream` (alias `/api/v1/stream`): relay a generation.
    Generate,
    /// One of the upstream provider's own API paths: passed through (`relay::passthrough`).
    PassThrough,
}

/// Finds the route for `method` and `path` (the path without its query), when the upstream speaks
/// `provider`'s API.
pub fn resolve(method: &str, path: &str, provider: Provider) -> Result<Route, Miss> {
    let (route, allow) = match path {
        "/healthz" => (Route::Healthz, "GET, HEAD"),
        "/api/v1/generate-stream" | "/api/v1/stream" => (Route::Generate, "POST"),
        _ => {
            return match passthrough::route(provider, method, path) {
                Some(allowed) => allowed.map(|()| Route::PassThrough),
                None => Err(Miss::NotFound),
            };
        }
    };
    route::allow(route, allow, method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_table() {
        let r = |m, p| resolve(m, p, Provider::OpenAi);
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
        assert_eq!(r("POST", "/v1/chat/completions"), Ok(Route::PassThrough));
        assert_eq!(
            r("GET", "/v1/chat/completions"),
            Err(Miss::MethodNotAllowed("POST"))
        );
        assert_eq!(
            resolve("POST", "/v1/messages", Provider::Anthropic),
            Ok(Route::PassThrough)
        );
    }
}
