//! Raising `RLIMIT_NOFILE`.
//!
//! Every stream costs two file descriptors (client and upstream), and the default soft limit on most Linux
//! systems is 1024: a relay left at that limit fails at about 500 streams with `EMFILE`. The soft limit may
//! be raised by any process up to the hard limit, so we do it at start, once, before any worker runs, and log
//! the figures so an operator can see what the process got. `--max-fds` asks for less (or for a specific
//! amount); asking for more than the hard limit gets the hard limit and a warning.

use rlimit::Resource;

/// What the limit was and what it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub before: u64,
    pub after: u64,
    pub hard: u64,
}

/// Sets the soft `RLIMIT_NOFILE` to `wanted` (default: the hard limit), capped at the hard limit.
pub fn raise(wanted: Option<u64>) -> std::io::Result<FdLimit> {
    let (before, hard) = Resource::NOFILE.get()?;
    let target = match wanted {
        Some(w) if w > hard => {
            log::warn!("--max-fds {w} is above the hard limit {hard}; using {hard}");
            hard
        }
        Some(w) => w,
        None => hard,
    };
    if target != before {
        Resource::NOFILE.set(target, hard)?;
    }
    let (after, hard) = Resource::NOFILE.get()?;
    log::info!("file descriptor limit: soft {before} -> {after} (hard {hard})");
    Ok(FdLimit {
        before,
        after,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_to_the_hard_limit_reports_it() {
        let limit = raise(None).expect("getrlimit/setrlimit");
        assert_eq!(limit.after, limit.hard);
        assert!(limit.after >= limit.before);
    }
}
