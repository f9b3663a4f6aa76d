//! The process' own figures, read from `/proc` at scrape time: open descriptors, resident memory, CPU
//! time. These are the standard `process_*` metrics every Prometheus client exports; they cost a few
//! small reads per scrape and nothing in between. Elsewhere than Linux they are left out.

/// What `/proc/self` says now; a figure that cannot be read is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Process {
    pub open_fds: Option<u64>,
    pub resident_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
}

impl Process {
    pub fn read() -> Process {
        Process {
            open_fds: open_fds(),
            resident_bytes: resident_bytes(),
            cpu_seconds: cpu_seconds(),
        }
    }
}

/// Descriptors open now (the entries of `/proc/self/fd`, less the one this count opens).
pub fn open_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

/// Resident memory: the second field of `/proc/self/statm`, in pages.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// User plus system time: fields 14 and 15 of `/proc/self/stat`, in clock ticks. The command name (field
/// 2) may hold spaces, so fields are counted from the `)` that ends it.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second();
    Some((user + system) as f64 / ticks as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_can_read_itself() {
        let p = Process::read();
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(p.resident_bytes.is_some_and(|n| n > 0), "{p:?}");
        assert!(p.cpu_seconds.is_some(), "{p:?}");
        let before = open_fds().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(open_fds().unwrap() > before.saturating_sub(1));
        drop(f);
    }
}
