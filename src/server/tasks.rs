//! Periodic work inside `serve`: chaining audit entries where a leader does it, and
//! forgetting expired idempotency keys and panel records.

use std::time::Duration;

use crate::refunds::RefundService;

/// How often audit entries are chained where a leader chains them after commit: the longest an
/// entry stays outside the chain while the database answers.
pub const AUDIT_SEAL_INTERVAL: Duration = Duration::from_millis(200);

/// Chains the audit entries that writes appended, in batches, whenever no other instance is
/// doing it (only for stores whose writes run side by side).
pub(super) async fn seal_audit(service: RefundService) {
    let mut every = tokio::time::interval(AUDIT_SEAL_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // A full batch means more may be waiting: go on at once.
        loop {
            match service.seal_audit(1000).await {
                Ok(1000) => continue,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(error = error.log_text(), "chaining audit entries failed");
                    break;
                }
            }
        }
    }
}

/// Forgets expired idempotency keys, panel sessions and old failed sign-ins every ten minutes.
pub(super) async fn housekeeping(service: RefundService) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        match service.purge_idempotency_keys().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired idempotency keys forgotten"),
            Err(error) => {
                tracing::warn!(error = error.log_text(), "purging idempotency keys failed")
            }
        }
        match service.purge_panel_records().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(
                purged,
                "expired panel sessions and sign-in failures forgotten"
            ),
            Err(error) => {
                tracing::warn!(error = error.log_text(), "purging panel sessions failed")
            }
        }
    }
}
