//! The descriptor budget: how many clients each relay worker serves before it turns new ones away; and,
//! before it, the limit itself ([`prepare_fds`]: raised, and the table grown, once at start).
//!
//! Every open socket is a file descriptor, and the process has at most `RLIMIT_NOFILE` of them (raised at
//! start, `reactor::fdlimit`). A relay that accepts every client until `accept` fails with `EMFILE` has
//! already lost: the last clients it took cannot get an upstream connection (that `socket()` fails too),
//! and a stream in flight that needs a new one (a retry) fails with them. So each worker takes at most a
//! *budget* of clients, computed here so that every client it takes can be served:
//!
//! ```text
//! reserved  = 3 + 3 + 4 × workers + 8 + 8     stdio; the signal thread (epoll, a pipe); per worker its epoll,
//!                                             waker, listener and spare; the resolver threads (a socket and
//!                                             a file each while they look up); slack for what we do not count
//! share     = (limit - reserved) / relay workers                  descriptors one relay worker may hold
//! u         = 1, or 2 with the embedded mock                      one upstream connection (the mock holds
//!                                                                 the other end in the same process)
//! pool      = min(upstreams × --upstream-max-conns, share / 4u)   idle pooled connections, per worker:
//!                                                                 at most a quarter of the share
//! clients   = (share - u × pool) / (1 + u)                        each client, and the upstream it streams from
//! ```
//!
//! The pools are held to `pool` (each upstream's to `pool / upstreams`), so a pool can never take the
//! descriptors a client was promised; at the default limits the cap changes nothing (a quarter of the
//! share is thousands). `--max-clients N` overrides the derived figure (each worker takes `N / workers`,
//! rounded up): an operator may know better, and if the figure is too high the reactor's third regime
//! (below) keeps the worker from spinning.
//!
//! # Three regimes
//!
//! 1. Under the budget: accept and serve.
//! 2. At the budget, with descriptors to spare: accept, write a 503 (`overloaded`, `Retry-After: 1`,
//!    `Connection: close`) without reading the request, close. The client learns at once to retry
//!    elsewhere, and the streams in flight keep their descriptors.
//! 3. No descriptor left (`EMFILE`/`ENFILE`; the budget was set too high, or something else holds
//!    descriptors): turn one client away with the worker's spare descriptor, then stop accepting, leaving
//!    connections in the backlog, until a connection closes (`reactor::door`).

use crate::config::{FdLimit, LoopConfig};
use crate::reactor::fdlimit;
use crate::relay::dns::MAX_THREADS;

/// Descriptors the process holds whatever its load, with `workers` workers in all (relay and mock).
pub fn reserved(workers: usize) -> u64 {
    let stdio = 3;
    let signal_thread = 3;
    let per_worker = 4 * workers as u64;
    let resolver = 2 * MAX_THREADS as u64;
    let slack = 8;
    stdio + signal_thread + per_worker + resolver + slack
}

/// What the budget depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    /// The soft `RLIMIT_NOFILE` in force.
    pub limit: u64,
    pub relay_workers: usize,
    /// The embedded mock's workers (they hold descriptors too).
    pub mock_workers: usize,
    pub upstreams: usize,
    /// `--upstream-max-conns`: idle connections kept per upstream and worker.
    pub max_idle: usize,
    /// The upstream is the embedded mock: it holds the other end of every upstream connection.
    pub embedded_mock: bool,
    /// `--max-clients`, for the whole process.
    pub max_clients: Option<u64>,
}

/// What each relay worker may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Clients served at once; more are turned away with a 503.
    pub clients: usize,
    /// Idle connections kept per upstream (at most `--upstream-max-conns`).
    pub max_idle: usize,
    /// What the limit allows, whatever `--max-clients` says (for the log, and its warning).
    pub derived: usize,
}

/// The smallest limit that leaves every relay worker one client: the reserve, and per worker what one
/// client costs. (A share that small leaves the pool nothing: it only takes a share of `4u` or more, and
/// then at most a quarter of it.)
pub fn minimum_limit(i: &Inputs) -> u64 {
    reserved(i.relay_workers + i.mock_workers) + i.relay_workers as u64 * (1 + upstream_cost(i))
}

/// The budget of each relay worker (see the module docs), or why the limit is too low to serve.
pub fn plan(i: &Inputs) -> Result<Budget, String> {
    let workers = i.relay_workers.max(1) as u64;
    let reserved = reserved(i.relay_workers + i.mock_workers);
    let share = i.limit.saturating_sub(reserved) / workers;
    let u = upstream_cost(i);
    let pool = (i.upstreams as u64)
        .saturating_mul(i.max_idle as u64)
        .min(share / (4 * u));
    let derived = share.saturating_sub(u * pool) / (1 + u);
    if derived == 0 {
        return Err(format!(
            "too low: {} worker(s) need at least {} file descriptors to listen and serve one client each",
            i.relay_workers + i.mock_workers,
            minimum_limit(i)
        ));
    }
    let clients = match i.max_clients {
        Some(n) => n.div_ceil(workers),
        None => derived,
    };
    let per_upstream = pool / (i.upstreams.max(1) as u64);
    Ok(Budget {
        clients: usize::try_from(clients).unwrap_or(usize::MAX),
        max_idle: usize::try_from(per_upstream)
            .unwrap_or(usize::MAX)
            .min(i.max_idle),
        derived: usize::try_from(derived).unwrap_or(usize::MAX),
    })
}

/// Raises the descriptor limit and grows the table (both process-wide); returns the limit in force
/// (`None` if it cannot be read). With `FdLimit::Keep`, the limit is only read.
pub(super) fn prepare_fds(common: &LoopConfig, workers: usize) -> Result<Option<u64>, String> {
    let FdLimit::Raise(wanted) = common.fd_limit else {
        return Ok(fdlimit::current().ok());
    };
    let limit = match fdlimit::raise(wanted) {
        Ok(limit) => limit.after,
        Err(e) => {
            log::warn!("could not raise the file descriptor limit: {e}");
            return Ok(fdlimit::current().ok());
        }
    };
    // Refused before the table grows: the relay's budget makes the exact check later.
    let needed = reserved(workers) + 1;
    if limit < needed {
        return Err(too_low(common, limit, needed, workers));
    }
    if let Err(e) = fdlimit::grow_table(limit) {
        log::warn!("could not grow the descriptor table: {e}");
    }
    Ok(Some(limit))
}

/// The refusal of a limit below `needed`, naming the option that set it.
pub(super) fn too_low(common: &LoopConfig, limit: u64, needed: u64, workers: usize) -> String {
    let what = limit_name(common, limit);
    format!(
        "{what} is too low: {workers} worker(s) need at least {needed} file descriptors to listen and \
         serve"
    )
}

/// Each relay worker's budget from the descriptor limit in force (`None`: unknown, so no budget), logged
/// once; a limit too low to serve is refused.
/// The limit as the operator set it: the option, when it was one.
fn limit_name(common: &LoopConfig, limit: u64) -> String {
    match common.fd_limit {
        FdLimit::Raise(Some(_)) => format!("--max-fds {limit}"),
        _ => format!("the descriptor limit {limit}"),
    }
}

pub(super) fn client_budget(
    common: &LoopConfig,
    limit: Option<u64>,
    inputs: &Inputs,
) -> Result<Budget, String> {
    let Some(limit) = limit else {
        return Ok(Budget {
            clients: usize::MAX,
            max_idle: inputs.max_idle,
            derived: usize::MAX,
        });
    };
    let b = plan(inputs).map_err(|e| format!("{} is {e}", limit_name(common, limit)))?;
    log::info!(
        "client budget: {} per worker (the limit {limit} allows {}); {} idle upstream connections per \
         upstream and worker",
        b.clients,
        b.derived,
        b.max_idle
    );
    if b.clients > b.derived {
        log::warn!(
            "--max-clients gives each worker {} clients, more than the {} its share of the descriptor limit \
             {limit} can serve: past that, accepting pauses whenever descriptors run out",
            b.clients,
            b.derived
        );
    }
    Ok(b)
}

/// Descriptors one upstream connection costs the process.
fn upstream_cost(i: &Inputs) -> u64 {
    1 + u64::from(i.embedded_mock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(limit: u64) -> Inputs {
        Inputs {
            limit,
            relay_workers: 1,
            mock_workers: 0,
            upstreams: 1,
            max_idle: 64,
            embedded_mock: false,
            max_clients: None,
        }
    }

    /// The worked examples of chapter 12.
    #[test]
    fn the_formula_at_a_few_limits() {
        // 64: reserved 26, share 38, pool min(64, 9) = 9, clients (38 - 9) / 2 = 14; the pool is capped.
        let b = plan(&inputs(64)).unwrap();
        assert_eq!((b.clients, b.max_idle, b.derived), (14, 9, 14));
        // 20,000 and 2 workers: reserved 30, share 9,985, the pool keeps its 64, (9,985 - 64) / 2.
        let b = plan(&Inputs {
            relay_workers: 2,
            ..inputs(20_000)
        })
        .unwrap();
        assert_eq!((b.clients, b.max_idle), (4_960, 64));
        // The embedded mock holds the other end of each upstream connection: a client costs 3, an idle
        // pooled connection 2; reserved 30, share 34, pool min(64, 34 / 8) = 4, clients (34 - 8) / 3.
        let b = plan(&Inputs {
            mock_workers: 1,
            embedded_mock: true,
            ..inputs(64)
        })
        .unwrap();
        assert_eq!((b.clients, b.max_idle), (8, 4));
    }

    /// Every descriptor the budget promises exists: clients and their upstreams, the capped pools and the
    /// reserve fit in the limit, over a range of limits, worker counts and pool sizes.
    #[test]
    fn the_budget_never_promises_more_than_the_limit() {
        for workers in 1..=4 {
            for embedded_mock in [false, true] {
                for (upstreams, max_idle) in [(1, 0), (1, 64), (3, 2), (4, 1000)] {
                    for limit in (0..2_000).chain([20_000, 1 << 20]) {
                        let i = Inputs {
                            limit,
                            relay_workers: workers,
                            mock_workers: usize::from(embedded_mock),
                            upstreams,
                            max_idle,
                            embedded_mock,
                            max_clients: None,
                        };
                        let Ok(b) = plan(&i) else {
                            assert!(limit < minimum_limit(&i), "{i:?} refused");
                            continue;
                        };
                        assert!(limit >= minimum_limit(&i), "{i:?} served below the minimum");
                        let u = 1 + u64::from(embedded_mock);
                        let per_worker =
                            b.clients as u64 * (1 + u) + (b.max_idle * upstreams) as u64 * u;
                        let used = reserved(i.relay_workers + i.mock_workers)
                            + per_worker * workers as u64;
                        assert!(used <= limit, "{i:?} -> {b:?} uses {used}");
                        assert!(b.clients >= 1 && b.max_idle <= max_idle, "{i:?} -> {b:?}");
                    }
                }
            }
        }
    }

    /// The minimum the error names is exact: it serves, and one less is refused.
    #[test]
    fn the_minimum_limit_is_exact() {
        for embedded_mock in [false, true] {
            let i = Inputs {
                mock_workers: usize::from(embedded_mock),
                embedded_mock,
                relay_workers: 2,
                ..inputs(0)
            };
            let min = minimum_limit(&i);
            assert!(plan(&Inputs { limit: min, ..i }).is_ok(), "{i:?} at {min}");
            let err = plan(&Inputs {
                limit: min - 1,
                ..i
            })
            .unwrap_err();
            assert!(err.contains(&min.to_string()), "{err}");
        }
    }

    /// `--max-clients` is a process total: each worker takes its share, rounded up, even above what the
    /// limit allows (the derived figure is still reported).
    #[test]
    fn an_explicit_cap_is_split_across_workers() {
        let i = Inputs {
            relay_workers: 3,
            max_clients: Some(10),
            ..inputs(20_000)
        };
        assert_eq!(plan(&i).unwrap().clients, 4);
        let b = plan(&Inputs {
            max_clients: Some(1000),
            ..inputs(64)
        })
        .unwrap();
        assert_eq!((b.clients, b.derived), (1000, 14));
    }
}
