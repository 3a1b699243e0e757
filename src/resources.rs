//! What a process may use and what a stage used: one thread count applied
//! to every pool, memory budgets ([`MemoryBudget`]: configured MiB → rows
//! of a block), and per-stage CPU time and peak memory for the run
//! summary, so that the cost of a stage (and the cap) can be seen.
//!
//! Schedulers put several tasks on one machine; libtorch and rayon each
//! default to one thread per core, and two processes that both do so slow
//! each other down several times over. `run.threads` caps all of them at
//! once: tokio's workers, rayon's global pool, libtorch's intra- and
//! inter-op pools, and DataFusion's partitions (see [`crate::engine`]).

use serde::{Deserialize, Serialize};

/// A memory budget: a configured number of MiB (`candidates.memory_budget_mb`,
/// `model.memory_budget_mb`, `runtime.sql_memory_mb`), and the one place
/// where it becomes bytes or a number of rows that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryBudget {
    bytes: usize,
}

impl MemoryBudget {
    /// `mib` mebibytes (saturating at `usize::MAX` bytes).
    pub(crate) fn mib(mib: usize) -> Self {
        MemoryBudget { bytes: mib.saturating_mul(1024 * 1024) }
    }

    /// The budget in bytes.
    pub(crate) fn bytes(self) -> usize {
        self.bytes
    }

    /// Half of it, for a block that needs the other half for its scratch.
    pub(crate) fn half(self) -> Self {
        MemoryBudget { bytes: self.bytes / 2 }
    }

    /// Rows of `bytes_per_row` bytes that fit: at least 1 (a block always
    /// makes progress), at most `max`.
    pub(crate) fn rows(self, bytes_per_row: usize, max: usize) -> usize {
        (self.bytes / bytes_per_row.max(1)).clamp(1, max.max(1))
    }
}

/// The threads each pool of this process actually has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threads {
    /// The configured cap (`run.threads`, 0 resolved to the core count).
    pub configured: usize,
    /// rayon's global pool.
    pub rayon: usize,
    /// libtorch's intra-op pool.
    pub libtorch: usize,
    /// tokio's worker threads (None outside a runtime).
    pub tokio: Option<usize>,
}

impl std::fmt::Display for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (rayon {}, libtorch {}", self.configured, self.rayon, self.libtorch)?;
        if let Some(t) = self.tokio {
            write!(f, ", tokio {t}")?;
        }
        f.write_str(")")
    }
}

/// Cap rayon's global pool and libtorch's pools at `threads`. Call once,
/// first thing in the process (before any parallel work): rayon's global
/// pool can only be configured before its first use.
pub fn apply_threads(threads: usize) -> crate::Result<()> {
    let threads = threads.max(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("nightrec-rayon-{i}"))
        .build_global()
        .map_err(|e| crate::Error::Internal(format!("configuring rayon's thread pool: {e}")))?;
    tch::set_num_threads(threads as i32);
    tch::set_num_interop_threads(threads as i32);
    Ok(())
}

/// The pools as they are now.
pub(crate) fn threads_now(configured: usize) -> Threads {
    let tokio = tokio::runtime::Handle::try_current().ok().map(|h| h.metrics().num_workers());
    Threads {
        configured,
        rayon: rayon::current_num_threads(),
        libtorch: usize::try_from(tch::get_num_threads()).unwrap_or(0),
        tokio,
    }
}

/// CPU seconds (user + system) this process has used so far, all threads.
pub(crate) fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we own and reads nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// Start a new peak-memory measurement: free heap memory goes back to the
/// kernel first ([`release_free_memory`]), then the kernel's high-water mark
/// of resident memory is reset to the current RSS (Linux; elsewhere the
/// measurement stays the whole process's peak). `getrusage` and
/// `/usr/bin/time` read the same mark, so after a reset they report the
/// peak since the reset, not the whole process's.
pub(crate) fn reset_peak_rss() {
    release_free_memory();
    // Writing 5 to clear_refs resets VmHWM (Linux 4.0+). Best effort.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Give the allocator's free memory back to the operating system (called
/// as each stage starts). nightrec raises glibc's trim threshold so that
/// training's per-step buffers stay mapped between steps (see main.rs);
/// after a stage that memory is only held, and the next stage's peak would
/// include it: about 2 GiB after training at 3M events.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only hands free pages of glibc's heaps back to
    // the kernel; it takes the allocator's own locks and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Peak resident memory since the last [`reset_peak_rss`], in MiB.
pub(crate) fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    match kb {
        Some(kb) => kb / 1024.0,
        None => {
            // SAFETY: as in cpu_seconds.
            let mut u: libc::rusage = unsafe { std::mem::zeroed() };
            if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
                return f64::NAN;
            }
            u.ru_maxrss as f64 / 1024.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_and_peak_memory_sees_an_allocation() {
        let before = cpu_seconds();
        let mut x = 0u64;
        for i in 0..30_000_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds() > before, "cpu time did not move");
        reset_peak_rss();
        let base = peak_rss_mb();
        let big = vec![1u8; 256 << 20];
        std::hint::black_box(&big);
        let peak = peak_rss_mb();
        assert!(peak >= base + 200.0, "peak {peak} MiB after 256 MiB touched, base {base}");
    }
}
