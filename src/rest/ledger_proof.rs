//! `GET /api/admin/v{N}/refunds/ledgerProof?paymentId=ID[&anchor=SEQ]`: this service's own
//! extension (not an IdoSell operation). Scope `read`. Answers the proof document
//! (`crate::proof_format`) with the verdict the service computed; a client recomputes it.

use crate::operations::{optional_id, required_id};
use crate::proof_format;
use crate::refunds::proof;
use crate::refunds::{
    Channel, Credentials, OperationKind, Origin, RefundError, RefundService, Scope,
};

use super::{JsonReply, QueryParams, RestCall, rest_status};

pub const NAME: &str = "ledgerProof";

pub(super) async fn handle(service: &RefundService, call: &RestCall<'_>) -> JsonReply {
    if call.method != "GET" {
        return JsonReply {
            allow: Some("GET"),
            ..JsonReply::error(405, 2, &format!("{NAME} takes GET"))
        };
    }
    let outcome = async {
        let origin = Origin {
            channel: Channel::Rest,
            request_id: call.request_id.clone(),
        };
        let credentials = call.api_key.clone().map(Credentials::ApiKey);
        service
            .authenticate(credentials, Scope::Read, origin)
            .await?;
        let query = QueryParams::parse(call.query);
        let payment_id = required_id(&query, "paymentId")?;
        let anchor = optional_id(&query, "anchor")?;
        service.ledger_proof(payment_id, anchor).await
    }
    .await;
    let mut reply = match outcome {
        Ok(proof) => {
            let verdict = proof::verify(&proof);
            JsonReply::new(200, &proof_format::to_json(&proof, &verdict))
        }
        Err(error) => {
            if let RefundError::Internal(_) = &error {
                tracing::error!(
                    operation = NAME,
                    error = error.log_text(),
                    "operation failed"
                );
            }
            let code = error.fault_code(OperationKind::Other);
            JsonReply::error(rest_status(&error), code, &error.public_message())
        }
    };
    reply.operation = Some(NAME);
    reply
}
