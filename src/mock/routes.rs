//! Path -> what the mock does with it. A pure function, like the relay's routes; the 404/405 rules they
//! share are in `crate::http::route`.

use crate::http::route;
pub use crate::http::route::Miss;

/// What a request to the mock is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Healthz,
    /// `GET /stats`: the mock's counters.
    Stats,
    /// A generation endpoint, in either provider's shape.
    Generate,
}

/// Finds the route for `method` and `path` (the path without its query).
pub fn resolve(method: &str, path: &str) -> Result<Route, Miss> {
    let (route, allow) = match path {
        "/healthz" => (Route::Healthz, "GET, HEAD"),
        "/stats" => (Route::Stats, "GET, HEAD"),
        p if is_generate_path(p) => (Route::Generate, "POST"),
        _ => return Err(Miss::NotFound),
    };
    route::allow(route, allow, method)
}

/// `/v1/chat/completions` (OpenAI) or `/v1beta/models/{model}:streamGenerateContent` (Gemini), under any base.
fn is_generate_path(path: &str) -> bool {
    path.ends_with("/v1/chat/completions")
        || (path.contains("/models/") && path.ends_with(":streamGenerateContent"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_table() {
        assert_eq!(resolve("POST", "/v1/chat/completions"), Ok(Route::Generate));
        assert_eq!(
            resolve(
                "POST",
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
            ),
            Ok(Route::Generate)
        );
        assert_eq!(resolve("GET", "/stats"), Ok(Route::Stats));
        assert_eq!(resolve("HEAD", "/healthz"), Ok(Route::Healthz));
        assert_eq!(
            resolve("GET", "/v1/chat/completions"),
            Err(Miss::MethodNotAllowed("POST"))
        );
        assert_eq!(
            resolve("POST", "/api/v1/generate-stream"),
            Err(Miss::NotFound)
        );
    }
}
