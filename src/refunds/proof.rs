//! The ledger proof of one payment: every refund ever reserved on it, each step of each refund
//! with the audit entry that records it, the running total, the chain's head, and a verdict that
//! anyone can recompute from the proof alone ([`verify`]) — the service when it answers, an
//! auditor offline from a saved proof.
//!
//! What the verdict establishes: Σ live refunds ≤ what was paid (recomputed from the refunds),
//! the ledger's own running total agrees, each refund's current state is its last audited
//! step, and every audit entry's hash recomputes from its fields and its `prev_hash`. With an
//! anchor (a head published earlier), the proof also carries the chain from that head to the
//! current one, so a verifier holding the published head sees that it is still in the chain.

use super::RefundError;
use super::audit::{AuditEntry, ChainLink, ChainedEntry, entry_hash};
use super::ledger::Ledger;
use super::types::{MovementId, Refund, RefundStatus};
use crate::money::Money;

/// The most chain entries an anchored proof carries (from the anchor to the head).
pub const MAX_ANCHOR_SEGMENT: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerProof {
    pub payment_id: MovementId,
    pub order_id: i64,
    /// What was paid.
    pub paid: Money,
    /// The ledger's own running total of live refunds on the payment.
    pub recorded_refunded_minor: i64,
    pub refunds: Vec<ProvenRefund>,
    /// The chain's head when the proof was made.
    pub head: ChainLink,
    /// With an anchor: every chained entry after the anchor up to the head, in order.
    pub anchor: Option<AnchorSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenRefund {
    pub refund: Refund,
    /// The refund's chained audit entries, in chain order.
    pub history: Vec<ChainedEntry>,
    /// Entries appended but not chained yet (only where a leader chains after commit).
    pub pending: Vec<AuditEntry>,
}

/// A head published earlier, and the chain from it to the proof's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorSegment {
    pub seq: i64,
    pub hash: String,
    pub entries: Vec<ChainedEntry>,
}

/// What a proof shows, recomputed from its data alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Σ live (`New`, `Processing`, `Completed`) refunds, recomputed from the refunds.
    pub live_total_minor: i64,
    pub within_paid: bool,
    pub total_matches_ledger: bool,
    pub hashes_recompute: bool,
    pub states_match_history: bool,
    /// With an anchor: whether the anchor's hash leads, entry by entry, to the head.
    pub anchor_in_chain: Option<bool>,
    /// What failed, in words, for people.
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn holds(&self) -> bool {
        self.within_paid
            && self.total_matches_ledger
            && self.hashes_recompute
            && self.states_match_history
            && self.anchor_in_chain != Some(false)
    }
}

fn live(status: RefundStatus) -> bool {
    matches!(
        status,
        RefundStatus::New | RefundStatus::Processing | RefundStatus::Completed
    )
}

/// Recomputes the verdict of `proof` from its data alone.
pub fn verify(proof: &LedgerProof) -> Verdict {
    let mut problems = Vec::new();
    let live_total_minor: i64 = proof
        .refunds
        .iter()
        .filter(|proven| live(proven.refund.status))
        .map(|proven| proven.refund.amount.minor)
        .sum();
    let within_paid = live_total_minor <= proof.paid.minor;
    if !within_paid {
        problems.push(format!(
            "live refunds total {live_total_minor} minor units, more than the {} paid",
            proof.paid.minor
        ));
    }
    let total_matches_ledger = live_total_minor == proof.recorded_refunded_minor;
    if !total_matches_ledger {
        problems.push(format!(
            "the ledger's running total is {} but the live refunds add up to {live_total_minor}",
            proof.recorded_refunded_minor
        ));
    }
    let mut hashes_recompute = true;
    let mut states_match_history = true;
    for proven in &proof.refunds {
        let refund = &proven.refund;
        for chained in &proven.history {
            if entry_hash(&chained.prev_hash, &chained.entry) != chained.hash {
                hashes_recompute = false;
                problems.push(format!(
                    "audit entry {} (refund {}) does not match its hash",
                    chained.seq, refund.id
                ));
            }
            if chained.entry.refund_id != refund.id {
                states_match_history = false;
                problems.push(format!(
                    "audit entry {} names refund {}, not {}",
                    chained.seq, chained.entry.refund_id, refund.id
                ));
            }
        }
        let last = proven
            .pending
            .last()
            .or_else(|| proven.history.last().map(|chained| &chained.entry));
        let matches = last.is_some_and(|entry| {
            entry.status_after == refund.status.as_str()
                && entry.amount_after == refund.amount.minor
                && entry.currency == refund.amount.currency.code()
        });
        if !matches {
            states_match_history = false;
            problems.push(format!(
                "refund {} is {} {} but its last audited step says otherwise",
                refund.id,
                refund.status.as_str(),
                refund.amount.minor
            ));
        }
    }
    let anchor_in_chain = proof.anchor.as_ref().map(|anchor| {
        let mut previous = anchor.hash.clone();
        let mut seq = anchor.seq;
        for chained in &anchor.entries {
            if chained.seq != seq + 1
                || chained.prev_hash != previous
                || entry_hash(&chained.prev_hash, &chained.entry) != chained.hash
            {
                return false;
            }
            previous = chained.hash.clone();
            seq = chained.seq;
        }
        seq == proof.head.seq && previous == proof.head.hash
    });
    match &proof.anchor {
        Some(anchor) if anchor.seq > proof.head.seq => problems.push(format!(
            "the anchor, chain position {}, is beyond the head at {}: entries were lost",
            anchor.seq, proof.head.seq
        )),
        _ if anchor_in_chain == Some(false) => problems
            .push("the anchor does not lead to the head through the given entries".to_owned()),
        _ => {}
    }
    Verdict {
        live_total_minor,
        within_paid,
        total_matches_ledger,
        hashes_recompute,
        states_match_history,
        anchor_in_chain,
        problems,
    }
}

/// Builds the proof of `payment_id` inside one read transaction; with `anchor`, carries the
/// chain from that position to the head.
pub fn build(
    ledger: &mut dyn Ledger,
    payment_id: MovementId,
    anchor: Option<i64>,
) -> Result<LedgerProof, RefundError> {
    let head = ledger.audit_head()?;
    let proof = proof_without_anchor(ledger, payment_id, head.clone())?;
    let anchor = match anchor {
        None => None,
        Some(seq) => {
            if seq < 0 {
                return Err(RefundError::InvalidParameters(format!(
                    "anchor must be a chain position (0 or more), got {seq}"
                )));
            }
            if head.seq - seq > MAX_ANCHOR_SEGMENT as i64 {
                return Err(RefundError::InvalidParameters(format!(
                    "anchor {seq} is more than {MAX_ANCHOR_SEGMENT} entries behind the head"
                )));
            }
            if seq > head.seq {
                // A head published beyond today's: the chain has lost entries since. The proof
                // says so in its verdict (the anchor does not lead to the head).
                return Ok(LedgerProof {
                    anchor: Some(AnchorSegment {
                        seq,
                        hash: String::new(),
                        entries: Vec::new(),
                    }),
                    ..proof
                });
            }
            let hash = match seq {
                0 => ChainLink::genesis().hash,
                _ => ledger
                    .audit_chain_from(seq, 1)?
                    .first()
                    .map(|chained| chained.hash.clone())
                    .ok_or_else(|| anyhow::anyhow!("chain position {seq} is missing"))?,
            };
            let entries = ledger.audit_chain_from(seq + 1, MAX_ANCHOR_SEGMENT as u32)?;
            Some(AnchorSegment { seq, hash, entries })
        }
    };
    Ok(LedgerProof { anchor, ..proof })
}

fn proof_without_anchor(
    ledger: &mut dyn Ledger,
    payment_id: MovementId,
    head: ChainLink,
) -> Result<LedgerProof, RefundError> {
    let payment = ledger
        .payment(payment_id)?
        .ok_or_else(|| RefundError::InvalidPayment(format!("{payment_id} is not a payment")))?;
    let mut refunds = Vec::new();
    for refund in ledger.payment_refunds(payment_id)? {
        let (history, pending) = ledger.refund_audit(refund.id)?;
        refunds.push(ProvenRefund {
            refund,
            history,
            pending,
        });
    }
    Ok(LedgerProof {
        payment_id,
        order_id: payment.order_id,
        paid: payment.amount,
        recorded_refunded_minor: payment.refunded_minor,
        refunds,
        head,
        anchor: None,
    })
}
