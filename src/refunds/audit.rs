//! The audit trail: every change of a refund is appended, in the same transaction as the change,
//! to a hash chain. Each entry commits to the one before it (`hash = SHA-256(prev_hash, fields)`),
//! so editing, deleting or reordering any entry breaks every hash after it; `audit verify`
//! recomputes the chain and names the first entry that does not match.

use sha2::{Digest as _, Sha256};

use super::ledger::{AuditSealing, Ledger};
use super::types::{MovementId, RefundStatus, Timestamp};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Soap,
    Rest,
    JsonGate,
    Cli,
    /// The outbox worker, recording a payment operator's answer.
    Worker,
    /// A payment operator's callback.
    Operator,
    /// The admin panel.
    Admin,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Soap => "soap",
            Channel::Rest => "rest",
            Channel::JsonGate => "json-gate",
            Channel::Cli => "cli",
            Channel::Worker => "worker",
            Channel::Operator => "operator",
            Channel::Admin => "admin",
        }
    }
}

/// One change of one refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: Timestamp,
    /// The caller that made the change (its `Caller::login`; stored as `actor`, and published
    /// as `actor` in ledger proofs and webhook events).
    pub caller: String,
    pub channel: String,
    pub operation: String,
    pub refund_id: MovementId,
    pub status_before: Option<String>,
    pub status_after: String,
    pub amount_before: Option<i64>,
    pub amount_after: i64,
    pub currency: String,
    pub request_id: Option<String>,
}

impl AuditEntry {
    pub fn status(status: RefundStatus) -> String {
        status.as_str().to_owned()
    }
}

/// A place in the chain: an entry's position (1, 2, …) and its hashes. The head of an empty
/// chain is position 0 with the genesis hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
}

impl ChainLink {
    pub fn genesis() -> ChainLink {
        ChainLink {
            seq: 0,
            prev_hash: GENESIS.to_owned(),
            hash: GENESIS.to_owned(),
        }
    }

    /// The link of `entry` chained after this one.
    pub fn next(&self, entry: &AuditEntry) -> ChainLink {
        ChainLink {
            seq: self.seq + 1,
            prev_hash: self.hash.clone(),
            hash: entry_hash(&self.hash, entry),
        }
    }
}

/// Appends `entry` in the current transaction: chained at once where the adapter serializes
/// writes, else left for the sealer ([`seal_pending`]).
pub fn append(
    ledger: &mut dyn Ledger,
    sealing: AuditSealing,
    entry: &AuditEntry,
) -> anyhow::Result<()> {
    match sealing {
        AuditSealing::InTransaction => {
            let link = ledger.audit_head()?.next(entry);
            ledger.append_audit(entry, Some(&link))
        }
        AuditSealing::ByLeader => ledger.append_audit(entry, None),
    }
}

/// Chains up to `limit` entries appended but not chained yet, if this transaction can take the
/// sealer's role; returns how many it chained.
pub fn seal_pending(ledger: &mut dyn Ledger, limit: u32) -> anyhow::Result<usize> {
    if !ledger.lead_audit_sealing()? {
        return Ok(0);
    }
    let pending = ledger.unsealed_audit(limit)?;
    let mut head = ledger.audit_head()?;
    for (entry_id, entry) in &pending {
        let link = head.next(entry);
        ledger.seal_audit(*entry_id, &link)?;
        head = link;
    }
    Ok(pending.len())
}

/// An entry as stored: its place in the chain and its hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedEntry {
    pub seq: i64,
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// `SHA-256(prev_hash || fields)`, every field length-prefixed so that no two different entries
/// serialize alike.
pub fn entry_hash(prev_hash: &str, entry: &AuditEntry) -> String {
    let mut hasher = Sha256::new();
    let mut field = |value: &str| {
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    };
    field(prev_hash);
    field(&entry.at.to_string());
    field(&entry.caller);
    field(&entry.channel);
    field(&entry.operation);
    field(&entry.refund_id.to_string());
    field(entry.status_before.as_deref().unwrap_or("-"));
    field(&entry.status_after);
    field(
        &entry
            .amount_before
            .map_or_else(|| "-".to_owned(), |amount| amount.to_string()),
    );
    field(&entry.amount_after.to_string());
    field(&entry.currency);
    field(entry.request_id.as_deref().unwrap_or("-"));
    hex::encode(hasher.finalize())
}

/// The first entry that breaks the chain, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: String,
}

/// Recomputes the chain in order; `Ok(entries checked)` or the first broken link.
pub fn verify(entries: impl IntoIterator<Item = ChainedEntry>) -> Result<u64, BrokenLink> {
    let mut expected_prev = GENESIS.to_owned();
    let mut checked = 0;
    for chained in entries {
        if chained.prev_hash != expected_prev {
            return Err(BrokenLink {
                seq: chained.seq,
                reason: "its prev_hash is not the hash of the entry before it (an entry was removed or reordered)".to_owned(),
            });
        }
        let recomputed = entry_hash(&chained.prev_hash, &chained.entry);
        if recomputed != chained.hash {
            return Err(BrokenLink {
                seq: chained.seq,
                reason: "its fields do not match its hash (the entry was edited)".to_owned(),
            });
        }
        expected_prev = chained.hash;
        checked += 1;
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(refund_id: i64, amount: i64) -> AuditEntry {
        AuditEntry {
            at: 1,
            caller: "tester".into(),
            channel: "soap".into(),
            operation: "addManualRefund".into(),
            refund_id,
            status_before: None,
            status_after: "New".into(),
            amount_before: None,
            amount_after: amount,
            currency: "PLN".into(),
            request_id: Some("7".into()),
        }
    }

    fn chain(entries: Vec<AuditEntry>) -> Vec<ChainedEntry> {
        let mut prev = GENESIS.to_owned();
        entries
            .into_iter()
            .enumerate()
            .map(|(index, entry)| {
                let hash = entry_hash(&prev, &entry);
                let chained = ChainedEntry {
                    seq: index as i64 + 1,
                    entry,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                chained
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(
            verify(chain(vec![entry(20, 100), entry(21, 200), entry(22, 300)])),
            Ok(3)
        );
    }

    #[test]
    fn an_edited_entry_breaks_the_chain_there() {
        let mut entries = chain(vec![entry(20, 100), entry(21, 200), entry(22, 300)]);
        entries[1].entry.amount_after = 999;
        assert_eq!(verify(entries).map_err(|broken| broken.seq), Err(2));
    }

    #[test]
    fn a_removed_entry_breaks_the_chain_after_it() {
        let mut entries = chain(vec![entry(20, 100), entry(21, 200), entry(22, 300)]);
        entries.remove(1);
        assert_eq!(verify(entries).map_err(|broken| broken.seq), Err(3));
    }

    #[test]
    fn fields_cannot_slide_into_each_other() {
        let mut a = entry(20, 100);
        let mut b = entry(20, 100);
        a.caller = "ab".into();
        a.channel = "c".into();
        b.caller = "a".into();
        b.channel = "bc".into();
        assert_ne!(entry_hash(GENESIS, &a), entry_hash(GENESIS, &b));
    }
}
