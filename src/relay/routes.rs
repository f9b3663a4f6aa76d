//! Path -> what the relay does with it, and which upstream does it.
//!
//! Routing is a pure function of (method, path) and the configured upstreams, so that the 404/405 rules
//! can be tested without a socket (the rules every table shares are in `crate::http::route`):
//!
//! 1. `/healthz`, `/readyz` and the simple route `/api/v1/generate-stream` (alias `/api/v1/stream`) are ours; the
//!    simple route goes to the `generate` upstream.
//! 2. A path under a configured route prefix goes to that route's upstream, the prefix removed; what
//!    remains must be one of that upstream's provider's paths.
//! 3. Any other path goes to the first upstream whose provider owns it: `/v1/messages` to Anthropic,
//!    `/v1beta/...` to Gemini, `/v1/chat/completions` to OpenAI. So each provider's SDK works with the
//!    base URL set to the relay, several providers at once.

use super::passthrough;
use super::providers::Provider;
use crate::http::route;
pub use crate::http::route::Miss;

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`: the process is alive (whatever it is doing).
    Healthz,
    /// `GET /readyz`: the process takes new work (503 while it drains).
    Readyz,
    /// `POST /api/v1/generate-stream` (alias `/api/v1/stream`): relay a generation.
    Generate,
    /// One of an upstream provider's own API paths: passed through (`relay::passthrough`).
    PassThrough,
    /// `GET /metrics`: the Prometheus exposition (`observe::Scrape`).
    Metrics,
    /// `GET /debug/stall?ms=N`: blocks the worker's loop for N ms, to watch the metrics catch it. Only
    /// with `--debug-stall-route`.
    DebugStall,
}

impl Route {
    /// Its label in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Generate => "generate",
            Route::PassThrough => "passthrough",
            Route::Metrics => "metrics",
            Route::DebugStall => "debug_stall",
        }
    }

    /// A route the relay answers itself, with no upstream.
    pub fn is_own(self) -> bool {
        !matches!(self, Route::Generate | Route::PassThrough)
    }
}

/// Where a request goes: the route, the upstream (its index in the configuration), and the path to ask
/// it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub route: Route,
    pub upstream: usize,
    pub path: &'a str,
}

/// The routing table of one relay.
#[derive(Debug, Clone)]
pub struct Router {
    /// The provider of each upstream, in configuration order.
    providers: Vec<Provider>,
    /// Route prefixes and their upstream, longest prefix first.
    prefixes: Vec<(String, usize)>,
    /// The upstream of the simple route.
    generate: usize,
    /// `/debug/stall` is served (`--debug-stall-route`).
    debug_stall: bool,
}

impl Router {
    /// A table over upstreams speaking `providers`, with `prefixes` (prefix, upstream index) and the simple
    /// route's upstream. Prefixes are matched on whole path segments (`/local` matches `/local/v1/x`,
    /// not `/localhost`).
    pub fn new(
        providers: Vec<Provider>,
        mut prefixes: Vec<(String, usize)>,
        generate: usize,
    ) -> Router {
        for (prefix, _) in &mut prefixes {
            let trimmed = prefix.trim_end_matches('/').to_string();
            *prefix = trimmed;
        }
        prefixes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Router {
            providers,
            prefixes,
            generate,
            debug_stall: false,
        }
    }

    /// The same table, with `/debug/stall` served or not.
    pub fn with_debug_stall(mut self, on: bool) -> Router {
        self.debug_stall = on;
        self
    }

    /// A table with one upstream, which serves everything.
    pub fn single(provider: Provider) -> Router {
        Router::new(vec![provider], Vec::new(), 0)
    }

    /// The provider whose own API `to` passes a request through to (`None` for the relay's own routes).
    pub fn provider_of(&self, to: &Target<'_>) -> Option<Provider> {
        match to.route {
            Route::PassThrough => self.providers.get(to.upstream).copied(),
            _ => None,
        }
    }

    /// Finds where `method` `path` (the path without its query) goes.
    pub fn resolve<'a>(&self, method: &str, path: &'a str) -> Result<Target<'a>, Miss> {
        let ours = |route, allow| {
            route::allow(route, allow, method).map(|route| Target {
                route,
                upstream: self.generate,
                path,
            })
        };
        match path {
            "/healthz" => return ours(Route::Healthz, "GET, HEAD"),
            "/readyz" => return ours(Route::Readyz, "GET, HEAD"),
            "/metrics" => return ours(Route::Metrics, "GET, HEAD"),
            "/debug/stall" if self.debug_stall => return ours(Route::DebugStall, "GET"),
            "/api/v1/generate-stream" | "/api/v1/stream" => return ours(Route::Generate, "POST"),
            _ => {}
        }
        for (prefix, upstream) in &self.prefixes {
            let Some(rest) = path.strip_prefix(prefix.as_str()) else {
                continue;
            };
            if !(rest.is_empty() || rest.starts_with('/')) {
                continue;
            }
            let rest = if rest.is_empty() { "/" } else { rest };
            let provider = self
                .providers
                .get(*upstream)
                .copied()
                .ok_or(Miss::NotFound)?;
            return self.pass(provider, *upstream, method, rest);
        }
        // The first upstream whose provider takes this method on this path; if some own the path but not
        // the method, a 405 naming what the first of them takes.
        let mut wrong_method = None;
        for (upstream, &provider) in self.providers.iter().enumerate() {
            match passthrough::route(provider, method, path) {
                Some(Ok(())) => return self.pass(provider, upstream, method, path),
                Some(Err(miss)) => {
                    wrong_method.get_or_insert(miss);
                }
                None => {}
            }
        }
        Err(wrong_method.unwrap_or(Miss::NotFound))
    }

    fn pass<'a>(
        &self,
        provider: Provider,
        upstream: usize,
        method: &str,
        path: &'a str,
    ) -> Result<Target<'a>, Miss> {
        // Checked after the route matched (an unknown path stays a 404), before anything is forwarded.
        route::plain_path(path).map_err(Miss::BadPath)?;
        match passthrough::route(provider, method, path) {
            Some(Ok(())) => Ok(Target {
                route: Route::PassThrough,
                upstream,
                path,
            }),
            Some(Err(miss)) => Err(miss),
            None => Err(Miss::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(r: Result<Target<'_>, Miss>) -> Result<(Route, usize, String), Miss> {
        r.map(|t| (t.route, t.upstream, t.path.to_string()))
    }

    #[test]
    fn a_single_upstream_serves_its_providers_paths() {
        let router = Router::single(Provider::OpenAi);
        let r = |m, p| route(router.resolve(m, p));
        assert_eq!(
            r("POST", "/api/v1/generate-stream"),
            Ok((Route::Generate, 0, "/api/v1/generate-stream".into()))
        );
        assert_eq!(
            r("POST", "/api/v1/stream").map(|t| t.0),
            Ok(Route::Generate)
        );
        assert_eq!(r("GET", "/healthz").map(|t| t.0), Ok(Route::Healthz));
        assert_eq!(r("HEAD", "/healthz").map(|t| t.0), Ok(Route::Healthz));
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
        assert_eq!(r("GET", "/readyz").map(|t| t.0), Ok(Route::Readyz));
        assert_eq!(r("HEAD", "/readyz").map(|t| t.0), Ok(Route::Readyz));
        assert_eq!(
            r("DELETE", "/readyz"),
            Err(Miss::MethodNotAllowed("GET, HEAD"))
        );
        assert_eq!(r("POST", "/api/v1/generate"), Err(Miss::NotFound));
        assert_eq!(r("GET", "/stats"), Err(Miss::NotFound));
        assert_eq!(
            r("POST", "/v1/chat/completions"),
            Ok((Route::PassThrough, 0, "/v1/chat/completions".into()))
        );
        assert_eq!(
            r("GET", "/v1/chat/completions"),
            Err(Miss::MethodNotAllowed("POST"))
        );
        assert_eq!(
            r("POST", "/v1/messages"),
            Err(Miss::NotFound),
            "not an OpenAI path"
        );
    }

    /// Several providers behind one relay: each SDK's paths find their provider; a prefix picks an upstream
    /// and is removed; the simple route goes where it is told.
    #[test]
    fn paths_find_their_provider_and_prefixes_pick_an_upstream() {
        use Provider::*;
        let router = Router::new(
            vec![OpenAi, Gemini, Anthropic, OpenAi],
            vec![("/local/".into(), 3), ("/lo".into(), 1)],
            2,
        );
        let r = |m, p| route(router.resolve(m, p));
        assert_eq!(
            r("POST", "/v1/chat/completions"),
            Ok((Route::PassThrough, 0, "/v1/chat/completions".into()))
        );
        assert_eq!(
            r("POST", "/v1/messages"),
            Ok((Route::PassThrough, 2, "/v1/messages".into()))
        );
        assert_eq!(
            r("POST", "/v1beta/models/g:generateContent").map(|t| t.1),
            Ok(1)
        );
        assert_eq!(
            r("GET", "/v1/models").map(|t| t.1),
            Ok(0),
            "the first upstream that owns it"
        );
        assert_eq!(
            r("POST", "/local/v1/chat/completions"),
            Ok((Route::PassThrough, 3, "/v1/chat/completions".into()))
        );
        assert_eq!(
            r("POST", "/local/v1/messages"),
            Err(Miss::NotFound),
            "not the local upstream's path"
        );
        assert_eq!(
            r("POST", "/localhost/v1/chat/completions"),
            Err(Miss::NotFound),
            "whole segments only"
        );
        assert_eq!(r("POST", "/api/v1/generate-stream").map(|t| t.1), Ok(2));
    }

    /// A path that a normalising front end would read as another one never reaches an upstream, whichever
    /// way it was routed.
    #[test]
    fn dot_segments_and_escapes_are_refused() {
        use Provider::*;
        let router = Router::new(vec![OpenAi, Gemini], vec![("/g".into(), 1)], 0);
        for path in [
            "/v1/models/../files",
            "/v1/models/%2e%2e/files",
            "/v1beta/models/../cachedContents",
            "/g/v1beta/models/x/../../files",
            "/v1/models/a%2Fb",
        ] {
            assert!(
                matches!(router.resolve("GET", path), Err(Miss::BadPath(_))),
                "{path}: {:?}",
                router.resolve("GET", path)
            );
        }
    }
}
