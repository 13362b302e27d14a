//! File descriptors: the soft `RLIMIT_NOFILE` is raised to the hard limit at start, and the API
//! asks how many are free so it can shed load (503) before sources and the store run out.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering::Relaxed};

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The soft limit in force (0 until `raise_limit` ran or when unknown).
static LIMIT: AtomicUsize = AtomicUsize::new(0);
/// Last count of open descriptors and when it was taken (unix ms), for `free_cached`.
static OPEN: AtomicUsize = AtomicUsize::new(0);
static OPEN_AT: AtomicI64 = AtomicI64::new(i64::MIN);

/// Raises the soft descriptor limit to the hard one; returns `(soft before, soft now)`.
pub fn raise_limit() -> (u64, u64) {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (0, 0);
    };
    let now = if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    LIMIT.store(usize::try_from(now).unwrap_or(usize::MAX), Relaxed);
    #[allow(clippy::useless_conversion)] // rlim_t is u32 on 32-bit ARM, u64 elsewhere
    (u64::from(soft), u64::from(now))
}

/// The soft limit (read once if `raise_limit` has not run).
pub fn limit() -> usize {
    match LIMIT.load(Relaxed) {
        0 => getrlimit(Resource::RLIMIT_NOFILE)
            .map(|(s, _)| usize::try_from(s).unwrap_or(usize::MAX))
            .unwrap_or(0),
        n => n,
    }
}

/// Descriptors open in this process now (`/proc/self/fd`; 0 where there is no procfs).
pub fn open() -> usize {
    match std::fs::read_dir("/proc/self/fd") {
        // the directory's own descriptor is listed too
        Ok(d) => d.count().saturating_sub(1),
        Err(_) => 0,
    }
}

/// Free descriptors, counted at most every 50 ms (the count reads a directory).
pub fn free_cached(now_ms: i64) -> usize {
    let at = OPEN_AT.load(Relaxed);
    let open = if now_ms.saturating_sub(at) >= 50 || now_ms < at {
        let n = open();
        OPEN.store(n, Relaxed);
        OPEN_AT.store(now_ms, Relaxed);
        n
    } else {
        OPEN.load(Relaxed)
    };
    limit().saturating_sub(open)
}

#[cfg(test)]
mod tests {
    #[test]
    fn open_descriptors_are_counted() {
        let before = super::open();
        let files: Vec<_> = (0..5)
            .map(|_| std::fs::File::open("/proc/self/stat").expect("open"))
            .collect();
        // other test threads may open files meanwhile, never fewer than ours
        assert!(super::open() >= before + 5);
        drop(files);
        assert!(super::limit() > 0);
    }
}
