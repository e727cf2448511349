//! Any bytes as a REST body or query string, through every operation's binding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refunds_gateway::operations::{
    AddAutomaticRefundForOrderOp, AddAutomaticRefundOp, AddManualRefundOp, CancelRefundOp, ConfirmRefundOp,
    GetPossibleAutoRefundsOp, GetRefundStatusOp, Operation, Params, RetrieveRefundsListOp, UpdateRefundOp,
};
use refunds_gateway::rest::QueryParams;
use serde_json::Value;

fn bind_all(params: &impl Params) {
    let _ = AddAutomaticRefundOp::bind(params);
    let _ = AddAutomaticRefundForOrderOp::bind(params);
    let _ = AddManualRefundOp::bind(params);
    let _ = GetPossibleAutoRefundsOp::bind(params);
    let _ = GetRefundStatusOp::bind(params);
    let _ = UpdateRefundOp::bind(params);
    let _ = ConfirmRefundOp::bind(params);
    let _ = CancelRefundOp::bind(params);
    let _ = RetrieveRefundsListOp::bind(params);
}

fuzz_target!(|body: &[u8]| {
    if let Ok(Value::Object(document)) = serde_json::from_slice::<Value>(body) {
        if let Some(Value::Object(params)) = document.get("params") {
            bind_all(params);
        }
        bind_all(&document);
    }
    if let Ok(query) = std::str::from_utf8(body) {
        bind_all(&QueryParams::parse(query));
    }
});
