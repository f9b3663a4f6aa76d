//! What every route table shares: a known path with the wrong method is a 405 that names the allowed
//! methods in `Allow` (RFC 9110 §15.5.6), an unknown path a 404, and every `GET` route also answers `HEAD`
//! (RFC 9110 §9.3.2 expects it of a general-purpose server; the caller leaves the body out). Each
//! application keeps its own table (`relay::routes`, `mock::routes`) and ends it with [`allow`].

/// A request that matched no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    NotFound,
    /// The path exists; the value is the `Allow` header.
    MethodNotAllowed(&'static str),
}

/// `route` if `method` is one of `allowed` (a comma-separated list, as the `Allow` header wants it).
pub fn allow<R>(route: R, allowed: &'static str, method: &str) -> Result<R, Miss> {
    if allowed.split(", ").any(|m| m == method) {
        Ok(route)
    } else {
        Err(Miss::MethodNotAllowed(allowed))
    }
}
