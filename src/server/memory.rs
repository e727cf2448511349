//! Memory held by the process: glibc's trimming thresholds, and handing freed body memory
//! back to the system after a burst.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::App;

/// Keeps glibc's allocator from handing freed memory back to the kernel after every request.
///
/// SQLite builds and drops small in-memory tables while checking a refund (its `IN (…)`
/// constraints), and by default glibc then trims the heap with `madvise`, which on a
/// multi-threaded process flushes every core's TLB: a profile of addManualRefund under load put
/// a tenth of the writer thread's time there. Memory is still trimmed above 64 MiB of free
/// heap. Process-wide, so the binary calls it once at start-up; other allocators ignore it.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes the allocator's own lock and only changes two thresholds.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// Sweeps idle per-address slots; after a burst of large bodies, hands the freed memory back
/// to the system: glibc keeps up to
/// 64 MiB of free heap (see [`tune_allocator`]), which after a burst of parked bodies would stay
/// resident. Checked every five seconds; trims only when more than 8 MiB of bodies were held
/// since the last trim and few are held now.
pub(super) async fn hand_back_memory(app: Arc<App>) {
    const BURST: usize = 8 * 1024 * 1024;
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        app.anonymous_bodies.sweep();
        let held = app.config.body_budget_bytes - app.body_budget.available_permits();
        if app.body_bytes_peak.load(Ordering::Relaxed) > BURST && held < BURST {
            app.body_bytes_peak.store(held, Ordering::Relaxed);
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            let _ = tokio::task::spawn_blocking(|| {
                // SAFETY: malloc_trim takes the allocator's locks itself.
                unsafe { libc::malloc_trim(0) }
            })
            .await;
        }
    }
}
