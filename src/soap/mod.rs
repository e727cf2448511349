//! The SOAP face: `envelope::parse` → dispatch on the operation name → `Operation::bind` →
//! the service → the operation's response writer → the response envelope.

pub mod envelope;
pub mod fault;
mod writer;
pub mod wsdl;

use chrono_tz::Tz;

use crate::clock::format_local_datetime;
use crate::metrics::Outcome;
use crate::operations::CallContext;
use crate::operations::{
    AddAutomaticRefundForOrderOp, AddAutomaticRefundOp, AddManualRefundOp, CancelRefundOp,
    ConfirmRefundOp, GetPossibleAutoRefundsOp, GetRefundStatusOp, Operation, RetrieveRefundsListOp,
    UpdateRefundOp, call, legacy_credentials,
};
use crate::refunds::types::Refund;
use crate::refunds::{
    Answer, Channel, Credentials, Origin, RefundError, RefundService, StoredResponse,
};
use envelope::{Envelope, SoapVersion, XmlLimits};
use fault::{Fault, FaultCode};
use writer::XmlOut;

/// The target namespace of the WSDL and of every element in our messages.
pub const TARGET_NAMESPACE: &str = "urn:refunds-gateway:refunds";

/// What the server sends back for a SOAP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// The operation, once known, for logs and metrics.
    pub operation: Option<&'static str>,
    pub outcome: Outcome,
}

impl SoapReply {
    pub fn fault(fault: &Fault) -> SoapReply {
        SoapReply {
            status: fault.status(),
            content_type: fault.version.content_type(),
            body: fault.to_xml(),
            operation: None,
            outcome: match fault.code {
                FaultCode::Server => Outcome::Failed,
                _ => Outcome::Rejected,
            },
        }
    }
}

/// A SOAP request as the server hands it over.
pub struct SoapCall<'a> {
    pub body: &'a [u8],
    pub content_type: Option<&'a str>,
    pub api_key: Option<&'a str>,
    /// The `Idempotency-Key` header; the SOAP header `idempotencyKey` is the other way to send it.
    pub idempotency_key: Option<String>,
    pub request_id: Option<String>,
}

/// Runs one SOAP request body.
pub async fn handle(service: &RefundService, call: SoapCall<'_>, limits: &XmlLimits) -> SoapReply {
    let envelope = match envelope::parse(call.body, limits, call.content_type) {
        Ok(envelope) => envelope,
        Err(fault) => return SoapReply::fault(&fault),
    };
    if let Some(header) = envelope.must_understand.first() {
        let reason =
            format!("header block '{header}' is marked mustUnderstand and is not understood");
        return SoapReply::fault(&Fault::new(
            envelope.version,
            FaultCode::MustUnderstand,
            reason,
        ));
    }
    let credentials = match call.api_key {
        Some(key) => Some(Credentials::ApiKey(key.to_owned())),
        None => legacy_credentials(&envelope.operation).map(Credentials::Legacy),
    };
    crate::operations!(
        dispatch envelope.operation.name.as_str(),
        dispatch(service, &envelope, credentials, &call),
        unknown => {
            let name: String = envelope.operation.name.chars().take(64).collect();
            let reason = format!(
                "unknown operation '{name}'; this service offers: {}",
                crate::operations::OPERATION_NAMES.join(", ")
            );
            SoapReply::fault(&Fault::client(envelope.version, reason))
        }
    )
}

/// An operation's response as SOAP writes it: the children of `{operation}Response` after
/// `errors`, exactly as the WSDL declares them.
pub trait SoapOperation: Operation {
    fn write_result(response: &Self::Response, out: &mut XmlOut, timezone: Tz);
}

async fn dispatch<Op: SoapOperation>(
    service: &RefundService,
    envelope: &Envelope,
    credentials: Option<Credentials>,
    request: &SoapCall<'_>,
) -> SoapReply {
    // Document/literal wrapped puts the fields in `params`; rpc-style clients that leave the
    // wrapper out put them directly under the operation element.
    let operation = &envelope.operation;
    let params = operation.child("params").unwrap_or(operation);
    let version = envelope.version;
    let timezone = service.timezone();
    let context = CallContext {
        dialect: match version {
            SoapVersion::V11 => "soap-1.1",
            SoapVersion::V12 => "soap-1.2",
        },
        origin: Origin {
            channel: Channel::Soap,
            request_id: request.request_id.clone(),
        },
        idempotency_key: request
            .idempotency_key
            .clone()
            .or_else(|| envelope.idempotency_key.clone()),
        render: Box::new(move |outcome| {
            let reply = response::<Op>(version, outcome, timezone);
            StoredResponse {
                status: reply.status,
                content_type: reply.content_type.to_owned(),
                body: reply.body.into_bytes(),
            }
        }),
    };
    match call::<Op, _>(service, credentials, Ok(params), context).await {
        Answer::Fresh(outcome) => response::<Op>(version, &outcome, timezone),
        Answer::Replayed(stored) => SoapReply {
            status: stored.status,
            content_type: version.content_type(),
            body: String::from_utf8_lossy(&stored.body).into_owned(),
            operation: Some(Op::NAME),
            outcome: Outcome::Ok,
        },
    }
}

/// The response envelope for an outcome.
pub fn response<Op: SoapOperation>(
    version: SoapVersion,
    outcome: &Result<Op::Response, RefundError>,
    timezone: Tz,
) -> SoapReply {
    let response_name = format!("{}Response", Op::NAME);
    let mut out = XmlOut::envelope(version);
    out.open_in(&response_name, TARGET_NAMESPACE);
    match outcome {
        Ok(response) => {
            write_errors(&mut out, 0, "");
            Op::write_result(response, &mut out, timezone);
        }
        Err(error) => write_errors(
            &mut out,
            error.fault_code(Op::KIND),
            &error.public_message(),
        ),
    }
    out.close(&response_name);
    SoapReply {
        status: 200,
        content_type: version.content_type(),
        body: out.finish(),
        operation: Some(Op::NAME),
        outcome: match outcome {
            Ok(_) => Outcome::Ok,
            Err(RefundError::Internal(_)) => Outcome::Failed,
            Err(_) => Outcome::BusinessError,
        },
    }
}

fn write_errors(out: &mut XmlOut, code: i32, message: &str) {
    out.open("errors");
    out.leaf("faultCode", &code.to_string());
    out.leaf("faultString", message);
    out.close("errors");
}

fn write_refund_id(id: &i64, out: &mut XmlOut) {
    out.open("result");
    out.leaf("refundId", &id.to_string());
    out.close("result");
}

fn write_flag(name: &str, flag: bool, out: &mut XmlOut) {
    out.open("result");
    out.leaf(name, if flag { "true" } else { "false" });
    out.close("result");
}

impl SoapOperation for AddAutomaticRefundOp {
    fn write_result(id: &i64, out: &mut XmlOut, _: Tz) {
        write_refund_id(id, out);
    }
}

impl SoapOperation for AddAutomaticRefundForOrderOp {
    fn write_result(id: &i64, out: &mut XmlOut, _: Tz) {
        write_refund_id(id, out);
    }
}

impl SoapOperation for AddManualRefundOp {
    fn write_result(id: &i64, out: &mut XmlOut, _: Tz) {
        write_refund_id(id, out);
    }
}

impl SoapOperation for GetPossibleAutoRefundsOp {
    fn write_result(response: &Self::Response, out: &mut XmlOut, _: Tz) {
        for possible in response {
            out.open("results");
            out.leaf("paymentId", &possible.payment_id.to_string());
            out.leaf("value", &possible.value.to_decimal().to_string());
            out.leaf("refundType", if possible.full { "full" } else { "partial" });
            out.leaf("refundCurrency", possible.value.currency.code());
            out.close("results");
        }
    }
}

impl SoapOperation for GetRefundStatusOp {
    fn write_result(status: &Self::Response, out: &mut XmlOut, timezone: Tz) {
        out.open("result");
        out.leaf(
            "refundDateAdd",
            &format_local_datetime(status.date_add, timezone),
        );
        out.leaf("refundValue", &status.value.to_decimal().to_string());
        out.leaf("refundStatus", status.status.as_str());
        let confirmed = status
            .date_confirm
            .map(|at| format_local_datetime(at, timezone));
        out.leaf("refundDateConfirm", confirmed.as_deref().unwrap_or(""));
        out.leaf(
            "refundExternalId",
            status.external_id.as_deref().unwrap_or(""),
        );
        out.leaf("refundCurrency", status.value.currency.code());
        out.close("result");
    }
}

impl SoapOperation for UpdateRefundOp {
    fn write_result(done: &bool, out: &mut XmlOut, _: Tz) {
        write_flag("updateResult", *done, out);
    }
}

impl SoapOperation for ConfirmRefundOp {
    fn write_result(done: &bool, out: &mut XmlOut, _: Tz) {
        write_flag("confirmResult", *done, out);
    }
}

impl SoapOperation for CancelRefundOp {
    fn write_result(done: &bool, out: &mut XmlOut, _: Tz) {
        write_flag("resultStatus", *done, out);
    }
}

impl SoapOperation for RetrieveRefundsListOp {
    fn write_result(page: &Self::Response, out: &mut XmlOut, _: Tz) {
        for refund in &page.refunds {
            write_list_entry(refund, out);
        }
        out.leaf("resultsNumberAll", &page.total.to_string());
        out.leaf(
            "resultsNumberPage",
            &page.total.div_ceil(u64::from(page.limit)).to_string(),
        );
        out.leaf("resultsPage", &page.page.to_string());
        out.leaf("resultsLimit", &page.limit.to_string());
    }
}

fn write_list_entry(refund: &Refund, out: &mut XmlOut) {
    out.open("results");
    out.leaf("sourceType", refund.source.source_type.as_str());
    out.leaf("sourceId", &refund.source.id.to_string());
    out.leaf("paymentId", &refund.id.to_string());
    out.leaf("refundValue", &refund.amount.to_decimal().to_string());
    out.leaf("refundCurrency", refund.amount.currency.code());
    out.close("results");
}
