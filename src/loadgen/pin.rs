//! Pinning a thread to CPUs (`--cpus`), so that a benchmark can keep the load generator off the cores of
//! the server it measures.
//!
//! `sched_setaffinity(2)` through `rustix`, which wraps it safely (the CPU set is a checked bit mask, the
//! call takes no pointer of ours): no `unsafe` here. Linux only; elsewhere `--cpus` is refused.

use std::io;

/// The highest CPU number `--cpus` accepts (the size of the kernel's CPU set on Linux).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const MAX_CPU: usize = rustix::thread::CpuSet::MAX_CPU - 1;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const MAX_CPU: usize = 1023;

/// Lets the calling thread run on `cpus` only. Threads it starts afterwards inherit the set.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    use rustix::thread::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    for &cpu in cpus {
        // `CpuSet::set` panics past its size: refuse such a number instead.
        if cpu > MAX_CPU {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("CPU {cpu} is above {MAX_CPU}"),
            ));
        }
        set.set(cpu);
    }
    sched_setaffinity(None, &set).map_err(io::Error::from)
}

/// Lets the calling thread run on `cpus` only: not supported off Linux.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn pin_current_thread(_cpus: &[usize]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "--cpus is supported on Linux only",
    ))
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    /// Pins a thread of its own (the test harness's threads are left as they are) to the CPU it is on,
    /// which is allowed on any machine, and reads the mask back.
    #[test]
    fn a_thread_can_be_pinned_to_one_cpu() {
        std::thread::spawn(|| {
            let allowed = rustix::thread::sched_getaffinity(None).expect("getaffinity");
            let cpu = (0..=MAX_CPU)
                .find(|&c| allowed.is_set(c))
                .expect("some CPU");
            pin_current_thread(&[cpu]).expect("pin");
            let now = rustix::thread::sched_getaffinity(None).expect("getaffinity");
            assert_eq!(now.count(), 1);
            assert!(now.is_set(cpu));
            assert!(pin_current_thread(&[MAX_CPU + 1]).is_err());
        })
        .join()
        .expect("the pinned thread");
    }
}
