//! What every route table shares: a known path with the wrong method is a 405 that names the allowed
//! methods in `Allow` (RFC 9110 §15.5.6), an unknown path a 404, and every `GET` route also answers `HEAD`
//! (RFC 9110 §9.3.2 expects it of a general-purpose server; the caller leaves the body out). Each
//! application keeps its own table (`relay::routes`, `mock::routes`) and ends it with [`allow`].

/// A request that matched no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    NotFound,
    /// A path a proxy must not forward (dot segments, encoded separators): the reason, for a 400.
    BadPath(&'static str),
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

/// Checks that `path` (without its query) can be forwarded as it is: every segment is a plain name. A
/// relay that forwards paths under an allow-list must refuse anything the upstream, or a front end before
/// it, could read as another path: `.` and `..` segments (`/v1/models/../files` would reach `/v1/files`
/// with the relay's key after normalisation), percent-escapes (`%2e%2e`, `%2f`), backslashes and empty
/// segments. The characters allowed are those of the providers' paths and model names (RFC 3986
/// unreserved, plus `:` `@` `+` `,` `=`).
pub fn plain_path(path: &str) -> Result<(), &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("the path must start with '/'");
    };
    for segment in rest.split('/') {
        match segment {
            "" => return Err("the path has an empty segment"),
            "." | ".." => return Err("the path has a dot segment"),
            _ => {}
        }
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~:@+,=".contains(&b);
        if !segment.bytes().all(plain) {
            return Err(if segment.contains('%') {
                "the path has a percent-escape"
            } else {
                "the path has a character outside [A-Za-z0-9-._~:@+,=]"
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_segments_are_forwarded() {
        for ok in [
            "/v1/chat/completions",
            "/v1/models/ft:gpt-4o-mini:org:custom:id",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            "/v1/models/gpt-4.1",
        ] {
            assert_eq!(plain_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/v1/models/../files",
            "/v1/models/./x",
            "/v1/models/..",
            "/v1/models/%2e%2e/files",
            "/v1/models/a%2Fb",
            "/v1/models/a\\..\\files",
            "/v1//models",
            "/v1/models/",
            "v1/models",
            "/v1/models/a b",
        ] {
            assert!(plain_path(bad).is_err(), "{bad}");
        }
    }
}
