//! Path -> what the mock does with it. A pure function, like the relay's routes; the 404/405 rules they
//! share are in `crate::http::route`.
//!
//! Each provider's paths are recognised by their ending, under any base path (`/openai/v1/chat/completions`
//! is OpenAI's too), so a client configured with a base URL that has a prefix still finds them:
//!
//! | path ends with | method | endpoint |
//! | --- | --- | --- |
//! | `/v1/chat/completions` | POST | [`Endpoint::ChatCompletions`] |
//! | `/v1/completions` | POST | [`Endpoint::Completions`] |
//! | `/v1/responses` | POST | [`Endpoint::Responses`] |
//! | `/v1/embeddings` | POST | [`Endpoint::Embeddings`] |
//! | `/v1/models` | GET | [`Endpoint::Models`] (OpenAI, Anthropic and Gemini's `v1` all serve it) |
//! | `/v1/messages` | POST | [`Endpoint::Messages`] (Anthropic) |
//! | `/models/{model}:streamGenerateContent` | POST | [`Endpoint::GeminiGenerate`] streaming |
//! | `/models/{model}:generateContent` | POST | [`Endpoint::GeminiGenerate`] |
//! | `/v1beta/models` | GET | [`Endpoint::GeminiModels`] |
//!
//! Plus the mock's own `GET /healthz`, `GET /stats` and `GET /debug/requests`. Every `GET` also answers
//! `HEAD`.

use crate::http::route;
pub use crate::http::route::Miss;

/// What a request to the mock is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Healthz,
    /// `GET /stats`: the mock's counters.
    Stats,
    /// `GET /debug/requests`: the last requests the mock received.
    Requests,
    /// One of the providers' endpoints.
    Api(Endpoint),
}

/// A provider endpoint the mock imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/completions` (legacy text completions).
    Completions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// `GET /v1/models`.
    Models,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Gemini `POST .../models/{model}:streamGenerateContent` (`stream`) or `:generateContent`.
    GeminiGenerate { stream: bool },
    /// Gemini `GET /v1beta/models`.
    GeminiModels,
}

/// Finds the route for `method` and `path` (the path without its query).
pub fn resolve(method: &str, path: &str) -> Result<Route, Miss> {
    const GET: &str = "GET, HEAD";
    let (route, allow) = match path {
        "/healthz" => (Route::Healthz, GET),
        "/stats" => (Route::Stats, GET),
        "/debug/requests" => (Route::Requests, GET),
        p => match endpoint(p) {
            Some(e @ (Endpoint::Models | Endpoint::GeminiModels)) => (Route::Api(e), GET),
            Some(e) => (Route::Api(e), "POST"),
            None => return Err(Miss::NotFound),
        },
    };
    route::allow(route, allow, method)
}

/// The provider endpoint `path` names, under any base.
fn endpoint(path: &str) -> Option<Endpoint> {
    if path.contains("/models/") {
        if path.ends_with(":streamGenerateContent") {
            return Some(Endpoint::GeminiGenerate { stream: true });
        }
        if path.ends_with(":generateContent") {
            return Some(Endpoint::GeminiGenerate { stream: false });
        }
    }
    [
        ("/v1/chat/completions", Endpoint::ChatCompletions),
        ("/v1/completions", Endpoint::Completions),
        ("/v1/responses", Endpoint::Responses),
        ("/v1/embeddings", Endpoint::Embeddings),
        ("/v1/models", Endpoint::Models),
        ("/v1/messages", Endpoint::Messages),
        ("/v1beta/models", Endpoint::GeminiModels),
    ]
    .into_iter()
    .find(|(end, _)| path.ends_with(end))
    .map(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_table() {
        let api = |e| Ok(Route::Api(e));
        assert_eq!(
            resolve("POST", "/v1/chat/completions"),
            api(Endpoint::ChatCompletions)
        );
        assert_eq!(
            resolve(
                "POST",
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
            ),
            api(Endpoint::GeminiGenerate { stream: true })
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

    #[test]
    fn every_provider_path_under_any_base() {
        for base in ["", "/openai", "/a/b"] {
            for (path, method, endpoint) in [
                ("/v1/chat/completions", "POST", Endpoint::ChatCompletions),
                ("/v1/completions", "POST", Endpoint::Completions),
                ("/v1/responses", "POST", Endpoint::Responses),
                ("/v1/embeddings", "POST", Endpoint::Embeddings),
                ("/v1/models", "GET", Endpoint::Models),
                ("/v1/models", "HEAD", Endpoint::Models),
                ("/v1/messages", "POST", Endpoint::Messages),
                ("/v1beta/models", "GET", Endpoint::GeminiModels),
                (
                    "/v1beta/models/m:generateContent",
                    "POST",
                    Endpoint::GeminiGenerate { stream: false },
                ),
                (
                    "/v1/models/m:streamGenerateContent",
                    "POST",
                    Endpoint::GeminiGenerate { stream: true },
                ),
            ] {
                let full = format!("{base}{path}");
                assert_eq!(
                    resolve(method, &full),
                    Ok(Route::Api(endpoint)),
                    "{method} {full}"
                );
            }
        }
        assert_eq!(resolve("GET", "/debug/requests"), Ok(Route::Requests));
        assert_eq!(
            resolve("POST", "/v1/models"),
            Err(Miss::MethodNotAllowed("GET, HEAD"))
        );
        assert_eq!(
            resolve("GET", "/v1/messages"),
            Err(Miss::MethodNotAllowed("POST"))
        );
        for miss in [
            "/v1/chat",
            "/v1/messages/count_tokens",
            "/v1beta/models/m:countTokens",
            "/debug/requests/x",
            "/v2/completions",
        ] {
            assert_eq!(resolve("POST", miss), Err(Miss::NotFound), "{miss}");
        }
    }
}
