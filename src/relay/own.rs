//! The routes the relay answers itself, with no upstream: health, readiness, metrics, and the teaching
//! stall.

use super::observe::{self, Observe};
use super::routes::Route;
use crate::conn::client::{AfterReply, ClientConn};
use crate::http::request::Request;
use crate::http::response::write_head;

/// Answers `req`, routed to `route` (one of [`Route::is_own`]), on `c`. `draining`: the process drains.
pub fn answer<W>(
    c: &mut ClientConn<W>,
    route: Route,
    req: &Request,
    draining: bool,
    then: AfterReply,
    o: &Observe,
) {
    let json = |status| (status, &req.method, then);
    match route {
        Route::Readyz if draining => {
            let (s, m, t) = json(503);
            c.reply_json(s, m, &serde_json::json!({"status": "draining"}), t)
        }
        Route::Readyz => {
            let (s, m, t) = json(200);
            c.reply_json(s, m, &serde_json::json!({"status": "ready"}), t)
        }
        Route::Metrics => metrics(c, req, then, o),
        Route::DebugStall => match observe::stall_ms(req.query.as_deref()) {
            Ok(ms) => {
                // The point of this route: the whole worker stops, every connection of it waits, and
                // the loop's figures (and its slow-iteration warning) show it.
                std::thread::sleep(std::time::Duration::from_millis(ms));
                let (s, m, t) = json(200);
                c.reply_json(s, m, &serde_json::json!({"stalled_ms": ms}), t)
            }
            Err(why) => c.reply_error(400, "bad_stall", &why, &[], then),
        },
        _ => {
            let (s, m, t) = json(200);
            c.reply_json(s, m, &serde_json::json!({"status": "ok"}), t)
        }
    }
}

/// `GET /metrics`: every worker's figures, added up now.
fn metrics<W>(c: &mut ClientConn<W>, req: &Request, then: AfterReply, o: &Observe) {
    let body = (o.scrape)();
    let len = body.len().to_string();
    let mut headers = vec![
        ("Content-Type", observe::METRICS_CONTENT_TYPE),
        ("Content-Length", len.as_str()),
    ];
    if then == AfterReply::Close {
        headers.push(("Connection", "close"));
    }
    let mut out = Vec::with_capacity(body.len() + 160);
    write_head(&mut out, 200, &headers);
    if req.method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    c.reply(&out, then);
    c.status = 200;
}
