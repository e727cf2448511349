//! Any bytes through the SOAP envelope pre-pass, then every operation's binding: a fault or a
//! request, never a panic, a hang or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refunds_gateway::operations::{
    AddAutomaticRefundForOrderOp, AddAutomaticRefundOp, AddManualRefundOp, CancelRefundOp, ConfirmRefundOp,
    GetPossibleAutoRefundsOp, GetRefundStatusOp, Operation, RetrieveRefundsListOp, UpdateRefundOp,
};
use refunds_gateway::soap::envelope::{XmlLimits, parse};

fuzz_target!(|body: &[u8]| {
    for content_type in [None, Some("application/soap+xml")] {
        let Ok(envelope) = parse(body, &XmlLimits::default(), content_type) else {
            continue;
        };
        let operation = &envelope.operation;
        let params = operation.child("params").unwrap_or(operation);
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
});
