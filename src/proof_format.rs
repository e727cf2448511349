//! The ledger proof's JSON format (`refunds-gateway/ledger-proof/1`), written by the REST face
//! (`ledgerProof`) and `audit prove --json`, read back by `audit prove --file`. Amounts are
//! integer minor units, as the ledger and the audit chain keep them; times are Unix seconds.
//! The `verdict` a proof carries is what its maker computed; a reader recomputes it from the
//! rest ([`crate::refunds::proof::verify`]) and never trusts the one written.

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};

use crate::money::{Currency, Money};
use crate::refunds::audit::{AuditEntry, ChainLink, ChainedEntry};
use crate::refunds::proof::{AnchorSegment, LedgerProof, ProvenRefund, Verdict};
use crate::refunds::types::{Refund, RefundMethod, RefundStatus, SourceRef, SourceType};

pub const FORMAT: &str = "refunds-gateway/ledger-proof/1";

pub fn to_json(proof: &LedgerProof, verdict: &Verdict) -> Value {
    let mut document = json!({
        "format": FORMAT,
        "paymentId": proof.payment_id,
        "orderId": proof.order_id,
        "paid": money_json(proof.paid),
        "recordedRefundedMinor": proof.recorded_refunded_minor,
        "refunds": proof.refunds.iter().map(refund_json).collect::<Vec<_>>(),
        "head": {"seq": proof.head.seq, "prevHash": proof.head.prev_hash, "hash": proof.head.hash},
        "verdict": {
            "holds": verdict.holds(),
            "liveTotalMinor": verdict.live_total_minor,
            "withinPaid": verdict.within_paid,
            "totalMatchesLedger": verdict.total_matches_ledger,
            "hashesRecompute": verdict.hashes_recompute,
            "statesMatchHistory": verdict.states_match_history,
            "anchorInChain": verdict.anchor_in_chain,
            "problems": verdict.problems,
        },
    });
    if let Some(anchor) = &proof.anchor {
        document["anchor"] = json!({
            "seq": anchor.seq,
            "hash": anchor.hash,
            "entries": anchor.entries.iter().map(chained_json).collect::<Vec<_>>(),
        });
    }
    document
}

fn money_json(money: Money) -> Value {
    json!({"minor": money.minor, "currency": money.currency.code()})
}

fn refund_json(proven: &ProvenRefund) -> Value {
    let refund = &proven.refund;
    let payment_id = match refund.method {
        RefundMethod::Automatic { payment_id } => Some(payment_id),
        RefundMethod::Manual => None,
    };
    json!({
        "refundId": refund.id,
        "orderId": refund.order_id,
        "sourceType": refund.source.source_type.as_str(),
        "sourceId": refund.source.id,
        "paymentId": payment_id,
        "status": refund.status.as_str(),
        "amount": money_json(refund.amount),
        "createdAt": refund.created_at,
        "createdBy": refund.caller,
        "confirmedAt": refund.confirmed_at,
        "externalId": refund.external_id,
        "history": proven.history.iter().map(chained_json).collect::<Vec<_>>(),
        "pending": proven.pending.iter().map(entry_json).collect::<Vec<_>>(),
    })
}

fn chained_json(chained: &ChainedEntry) -> Value {
    json!({
        "seq": chained.seq,
        "prevHash": chained.prev_hash,
        "hash": chained.hash,
        "entry": entry_json(&chained.entry),
    })
}

fn entry_json(entry: &AuditEntry) -> Value {
    json!({
        "at": entry.at,
        "actor": entry.caller,
        "channel": entry.channel,
        "operation": entry.operation,
        "refundId": entry.refund_id,
        "statusBefore": entry.status_before,
        "statusAfter": entry.status_after,
        "amountBefore": entry.amount_before,
        "amountAfter": entry.amount_after,
        "currency": entry.currency,
        "requestId": entry.request_id,
    })
}

/// Reads a proof document back; the verdict in it is ignored (recompute it).
pub fn from_json(document: &Value) -> anyhow::Result<LedgerProof> {
    let document = object(document, "the proof")?;
    let format = text(document, "format")?;
    if format != FORMAT {
        bail!("format is '{format}', expected '{FORMAT}'");
    }
    let head = object(field(document, "head")?, "head")?;
    let anchor = match document.get("anchor") {
        None | Some(Value::Null) => None,
        Some(anchor) => {
            let anchor = object(anchor, "anchor")?;
            Some(AnchorSegment {
                seq: integer(anchor, "seq")?,
                hash: text(anchor, "hash")?,
                entries: list(anchor, "entries")?
                    .iter()
                    .map(chained_from_json)
                    .collect::<anyhow::Result<_>>()?,
            })
        }
    };
    Ok(LedgerProof {
        payment_id: integer(document, "paymentId")?,
        order_id: integer(document, "orderId")?,
        paid: money_from_json(field(document, "paid")?)?,
        recorded_refunded_minor: integer(document, "recordedRefundedMinor")?,
        refunds: list(document, "refunds")?
            .iter()
            .enumerate()
            .map(|(index, refund)| {
                refund_from_json(refund).with_context(|| format!("refunds[{index}]"))
            })
            .collect::<anyhow::Result<_>>()?,
        head: ChainLink {
            seq: integer(head, "seq")?,
            prev_hash: text(head, "prevHash")?,
            hash: text(head, "hash")?,
        },
        anchor,
    })
}

fn refund_from_json(value: &Value) -> anyhow::Result<ProvenRefund> {
    let refund = object(value, "refund")?;
    let source_type = text(refund, "sourceType")?;
    let status = text(refund, "status")?;
    let method = match refund.get("paymentId") {
        Some(Value::Null) | None => RefundMethod::Manual,
        Some(_) => RefundMethod::Automatic {
            payment_id: integer(refund, "paymentId")?,
        },
    };
    Ok(ProvenRefund {
        refund: Refund {
            id: integer(refund, "refundId")?,
            order_id: integer(refund, "orderId")?,
            source: SourceRef {
                source_type: SourceType::parse(&source_type)
                    .with_context(|| format!("unknown sourceType '{source_type}'"))?,
                id: integer(refund, "sourceId")?,
            },
            method,
            amount: money_from_json(field(refund, "amount")?)?,
            status: RefundStatus::parse(&status)
                .with_context(|| format!("unknown status '{status}'"))?,
            details: None,
            created_at: integer(refund, "createdAt")?,
            caller: text(refund, "createdBy")?,
            confirmed_at: optional_integer(refund, "confirmedAt")?,
            external_id: optional_text(refund, "externalId")?,
        },
        history: list(refund, "history")?
            .iter()
            .map(chained_from_json)
            .collect::<anyhow::Result<_>>()?,
        pending: list(refund, "pending")?
            .iter()
            .map(entry_from_json)
            .collect::<anyhow::Result<_>>()?,
    })
}

fn chained_from_json(value: &Value) -> anyhow::Result<ChainedEntry> {
    let chained = object(value, "chain entry")?;
    Ok(ChainedEntry {
        seq: integer(chained, "seq")?,
        prev_hash: text(chained, "prevHash")?,
        hash: text(chained, "hash")?,
        entry: entry_from_json(field(chained, "entry")?)?,
    })
}

fn entry_from_json(value: &Value) -> anyhow::Result<AuditEntry> {
    let entry = object(value, "audit entry")?;
    Ok(AuditEntry {
        at: integer(entry, "at")?,
        caller: text(entry, "actor")?,
        channel: text(entry, "channel")?,
        operation: text(entry, "operation")?,
        refund_id: integer(entry, "refundId")?,
        status_before: optional_text(entry, "statusBefore")?,
        status_after: text(entry, "statusAfter")?,
        amount_before: optional_integer(entry, "amountBefore")?,
        amount_after: integer(entry, "amountAfter")?,
        currency: text(entry, "currency")?,
        request_id: optional_text(entry, "requestId")?,
    })
}

fn money_from_json(value: &Value) -> anyhow::Result<Money> {
    let money = object(value, "amount")?;
    let code = text(money, "currency")?;
    Ok(Money {
        minor: integer(money, "minor")?,
        currency: Currency::parse(&code).with_context(|| format!("unknown currency '{code}'"))?,
    })
}

fn object<'a>(value: &'a Value, what: &str) -> anyhow::Result<&'a Map<String, Value>> {
    value
        .as_object()
        .with_context(|| format!("{what} is not a JSON object"))
}

fn field<'a>(object: &'a Map<String, Value>, name: &str) -> anyhow::Result<&'a Value> {
    object
        .get(name)
        .with_context(|| format!("'{name}' is missing"))
}

fn list<'a>(object: &'a Map<String, Value>, name: &str) -> anyhow::Result<&'a Vec<Value>> {
    field(object, name)?
        .as_array()
        .with_context(|| format!("'{name}' is not a list"))
}

fn integer(object: &Map<String, Value>, name: &str) -> anyhow::Result<i64> {
    let value = field(object, name)?;
    value
        .as_i64()
        .with_context(|| format!("'{name}' is not an integer: {value}"))
}

fn optional_integer(object: &Map<String, Value>, name: &str) -> anyhow::Result<Option<i64>> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => integer(object, name).map(Some),
    }
}

fn text(object: &Map<String, Value>, name: &str) -> anyhow::Result<String> {
    let value = field(object, name)?;
    value
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("'{name}' is not a string: {value}"))
}

fn optional_text(object: &Map<String, Value>, name: &str) -> anyhow::Result<Option<String>> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => text(object, name).map(Some),
    }
}
