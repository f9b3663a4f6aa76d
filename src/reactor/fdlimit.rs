//! Raising `RLIMIT_NOFILE`, and growing the descriptor table once, before the load comes.
//!
//! Every stream costs two file descriptors (client and upstream), and the default soft limit on most Linux
//! systems is 1024: a relay left at that limit fails at about 500 streams with `EMFILE`. The soft limit may
//! be raised by any process up to the hard limit, so we do it at start, once, before any worker runs, and log
//! the figures so an operator can see what the process got. `--max-fds` asks for less (or for a specific
//! amount); asking for more than the hard limit gets the hard limit and a warning.
//!
//! # Why grow the table at start ([`grow_table`])
//!
//! The kernel keeps a process's descriptors in a table that starts small and doubles when a new descriptor
//! does not fit: at 256, 512, 1,024 and so on. In a process with several threads, each doubling waits for
//! an RCU grace period (`synchronize_rcu` in `expand_fdtable`: the old table may still be read by another
//! thread), which takes milliseconds. Measured on this project's relay: the `accept4` that returned
//! descriptor 512 took 12.9 ms, and the first 1,000-stream burst on a fresh relay had a median time to
//! first byte of 91-97 ms, against 55-59 ms for the same burst once the table had grown. The whole worker
//! stalls in that `accept4`, and with it every stream it serves.
//!
//! So, once the limit is known and before the workers start, we make the table as large as the limit:
//! duplicate a descriptor onto the lowest number at or above `limit - 1` (`fcntl(F_DUPFD_CLOEXEC)`), which
//! makes the kernel grow the table in one step while only one thread exists, then close it. The table keeps
//! its size. The cost is kernel memory, about 8.3 bytes per slot (a pointer and three bits), so 160 KiB
//! for a 20,000 limit; above [`TABLE_CAP`] slots we stop, to keep that cost bounded.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};

use rlimit::Resource;

/// The largest table [`grow_table`] asks for (about 8.7 MB of kernel memory). Limits above it are rare;
/// growth past it happens as it would without us.
pub const TABLE_CAP: u64 = 1 << 20;

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

/// The soft limit in force, for a server that leaves it as it is (`FdLimit::Keep`).
pub fn current() -> std::io::Result<u64> {
    Ok(Resource::NOFILE.get()?.0)
}

/// Grows the descriptor table to hold `limit` descriptors (at most [`TABLE_CAP`]); see the module docs.
/// Returns the highest descriptor number it reached.
pub fn grow_table(limit: u64) -> std::io::Result<u64> {
    let top = limit.min(TABLE_CAP).saturating_sub(1);
    let any = File::open("/dev/null")?;
    let min = i32::try_from(top).unwrap_or(i32::MAX);
    // Dropping the duplicate closes it; the table keeps its size.
    let high = rustix::io::fcntl_dupfd_cloexec(any.as_fd(), min)?;
    Ok(high.as_raw_fd() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small limit, so that the test process's table grows by little.
    #[test]
    fn growing_the_table_reaches_the_top_descriptor() {
        let top = grow_table(300).expect("fcntl(F_DUPFD_CLOEXEC)");
        // The lowest free number at or above 299: 299 itself unless the test harness holds it.
        assert!(top >= 299, "duplicated onto {top}");
        assert!(top < 400, "duplicated onto {top}");
        // It was closed again: the next open gets a low number.
        let f = File::open("/dev/null").unwrap();
        assert!(f.as_raw_fd() < 299);
    }
}
