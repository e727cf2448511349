//! The operation registry shared by every face.
//!
//! Each of the nine operations is a type implementing [`Operation`]: its wire name, the scope it
//! needs, how its request is bound from parameters (the same code for an XML `params` element
//! and, later, a JSON `params` object, through [`Params`]), and which service function runs it.
//! Faces add only their own serialization of the response.

use std::borrow::Cow;
use std::future::Future;

use rust_decimal::Decimal;

use crate::money::{Currency, float_artefact_amount, parse_exact};
use crate::refunds::error::quote;
use crate::refunds::types::{ManualDetails, RequestedAmount, SourceFilter, SourceRef, SourceType};
use sha2::Digest as _;

use crate::refunds::{
    AddAutomaticRefund, AddAutomaticRefundForOrder, AddManualRefund, Answer, Caller, Channel,
    Credentials, IdempotencyClaim, LegacyCredentials, MAX_RESULTS_LIMIT, OperationKind, Origin,
    PossibleAutoRefund, RefundAt, RefundError, RefundService, RefundStatusView, RefundsPage,
    Render, RetrieveRefundsList, Scope, UpdateRefund,
};

/// A tree of named parameters, as a face received them.
pub trait Params {
    /// The scalar value of field `name`: `Ok(None)` when absent or nil, `Err(what)` when present
    /// but not a scalar (`what` describes what was found).
    fn scalar(&self, name: &str) -> Result<Option<Scalar<'_>>, &'static str>;
    /// The nested parameters of field `name`: `Ok(None)` when absent or nil, `Err(what)` when
    /// present but not a group of fields.
    fn nested(&self, name: &str) -> Result<Option<&Self>, &'static str>;
}

/// A scalar parameter. XML and query strings only carry text; JSON also carries typed numbers
/// and booleans, and a JSON client that sends a number where a string belongs (or the reverse
/// for booleans) gets "invalid call parameters".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar<'a> {
    Text(Cow<'a, str>),
    /// A number's exact text.
    Number(String),
    Bool(bool),
}

/// One operation of the Refunds gateway.
pub trait Operation {
    const NAME: &'static str;
    const SCOPE: Scope;
    const KIND: OperationKind;
    type Request: std::fmt::Debug + Send + 'static;
    type Response: Send + 'static;

    fn bind(params: &impl Params) -> Result<Self::Request, RefundError>;

    /// Runs the operation; writes honour `claim` (an idempotency key), reads ignore it.
    fn run(
        service: &RefundService,
        caller: &Caller,
        request: Self::Request,
        claim: Option<IdempotencyClaim<Self::Response>>,
    ) -> impl Future<Output = Answer<Self::Response>> + Send;
}

/// Legacy credentials from the `authenticate` group of `request` (the operation element or
/// the JSON gate's document): `userLogin`/`authenticateKey`, or the older
/// `system_login`/`system_key`.
pub fn legacy_credentials(request: &impl Params) -> Option<LegacyCredentials> {
    let authenticate = request.nested("authenticate").ok().flatten()?;
    let field = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|name| match authenticate.scalar(name) {
                Ok(Some(Scalar::Text(text))) => {
                    Some(text.trim().to_owned()).filter(|text| !text.is_empty())
                }
                _ => None,
            })
    };
    Some(LegacyCredentials {
        login: field(["userLogin", "system_login"])?,
        key: field(["authenticateKey", "system_key"])?,
    })
}

/// What a face adds to a call: where it came from, its idempotency key, and how the face
/// serializes the outcome (used only to store the answer of an idempotent write).
pub struct CallContext<T> {
    pub origin: Origin,
    pub idempotency_key: Option<String>,
    /// What else makes an answer different on this face (the SOAP version), so that a key is
    /// never replayed in another envelope.
    pub dialect: &'static str,
    pub render: Render<T>,
}

/// Authenticates, binds and runs one operation: what every face does with a call. `params` is
/// an `Err` when the face could not read any parameters (a body that is not JSON, say); the
/// caller is still authenticated first, so an unauthenticated client learns nothing more. A
/// fresh error is logged here, for every face: an internal one with its cause (which never
/// reaches the client), a business one at debug level.
pub async fn call<Op: Operation, P: Params>(
    service: &RefundService,
    credentials: Option<Credentials>,
    params: Result<&P, RefundError>,
    context: CallContext<Op::Response>,
) -> Answer<Op::Response> {
    let answer = async {
        let caller = match service
            .authenticate(credentials, Op::SCOPE, context.origin)
            .await
        {
            Ok(caller) => caller,
            Err(error) => return Answer::Fresh(Err(error)),
        };
        let request = match params.and_then(|params| Op::bind(params)) {
            Ok(request) => request,
            Err(error) => return Answer::Fresh(Err(error)),
        };
        let claim = context.idempotency_key.map(|key| IdempotencyClaim {
            key,
            request_digest: request_digest(caller.channel, context.dialect, Op::NAME, &request),
            render: context.render,
        });
        Op::run(service, &caller, request, claim).await
    }
    .await;
    if let Answer::Fresh(Err(error)) = &answer {
        match error {
            RefundError::Internal(_) => {
                tracing::error!(
                    operation = Op::NAME,
                    error = error.log_text(),
                    "operation failed"
                );
            }
            other => tracing::debug!(operation = Op::NAME, error = %other, "business error"),
        }
    }
    answer
}

/// What makes two requests "the same" for an idempotency key: the face, the operation and the
/// bound request (so formatting, prefixes, an amount's spelling and a refreshed legacy key do
/// not matter; `RequestedAmount`'s `Debug` writes the exact value, normalized).
fn request_digest(
    channel: Channel,
    dialect: &str,
    operation: &str,
    request: &impl std::fmt::Debug,
) -> String {
    let text = format!("{}|{dialect}|{operation}|{request:?}", channel.as_str());
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// The one list of the operations, in the order the WSDL lists them. Everything else that lists
/// operations is generated from it: their marker types (below), [`OPERATION_NAMES`], the
/// dispatch of every face and the REST routes (`rest::ROUTES`). Adding an operation means adding
/// its marker type here and writing its `impl Operation`; the faces' response impls
/// (`soap::SoapOperation`, `rest::JsonOperation`) follow, because the dispatch does not compile
/// without them. A test compares the list with the WSDL (names and order) and the routes with the
/// OpenAPI document.
///
/// - `operations!(map Op => expression)`: an array of `expression` evaluated once per operation,
///   in the list's order, with `Op` naming that operation's marker type (usable in constants).
/// - `operations!(dispatch name, handler(args…), unknown => fallback)`: a `match` of `name` over
///   the operations' names that awaits `handler::<TheOperation>(args…)`, and evaluates
///   `fallback` for any other name.
#[macro_export]
macro_rules! operations {
    (@list $($then:tt)*) => {
        $crate::operations! { @$($then)* [
            AddAutomaticRefundOp,
            AddAutomaticRefundForOrderOp,
            AddManualRefundOp,
            GetPossibleAutoRefundsOp,
            GetRefundStatusOp,
            UpdateRefundOp,
            ConfirmRefundOp,
            CancelRefundOp,
            RetrieveRefundsListOp,
        ] }
    };
    (map $alias:ident => $body:expr) => {
        $crate::operations!(@list map_each ($alias => $body))
    };
    (dispatch $name:expr, $handler:ident $args:tt, unknown => $unknown:expr $(,)?) => {
        $crate::operations!(@list dispatch_each ($name, $handler $args, $unknown))
    };
    (@markers () [$($operation:ident,)*]) => {
        $(
            #[doc = concat!("The operation `", stringify!($operation), "` of the registry.")]
            pub struct $operation;
        )*
    };
    (@map_each ($alias:ident => $body:expr) [$($operation:ident,)*]) => {
        [$({
            type $alias = $crate::operations::$operation;
            $body
        }),*]
    };
    (@dispatch_each ($name:expr, $handler:ident $args:tt, $unknown:expr) [$($operation:ident,)*]) => {
        match $name {
            $(
                <$crate::operations::$operation as $crate::operations::Operation>::NAME => {
                    $handler::<$crate::operations::$operation> $args.await
                }
            )*
            _ => $unknown,
        }
    };
}

crate::operations!(@list markers ());

/// How many operations there are.
pub const OPERATION_COUNT: usize = crate::operations!(map Op => Op::NAME).len();

/// The wire names of all operations, in the order the WSDL lists them.
pub const OPERATION_NAMES: [&str; OPERATION_COUNT] = crate::operations!(map Op => Op::NAME);

impl Operation for AddAutomaticRefundOp {
    const NAME: &'static str = "addAutomaticRefund";
    const SCOPE: Scope = Scope::Write;
    const KIND: OperationKind = OperationKind::Add;
    type Request = AddAutomaticRefund;
    type Response = i64;

    fn bind(params: &impl Params) -> Result<AddAutomaticRefund, RefundError> {
        Ok(AddAutomaticRefund {
            source: source(params)?,
        })
    }

    async fn run(
        service: &RefundService,
        caller: &Caller,
        request: AddAutomaticRefund,
        claim: Option<IdempotencyClaim<i64>>,
    ) -> Answer<i64> {
        service.add_automatic_refund(caller, request, claim).await
    }
}

impl Operation for AddAutomaticRefundForOrderOp {
    const NAME: &'static str = "addAutomaticRefundForOrder";
    const SCOPE: Scope = Scope::Write;
    const KIND: OperationKind = OperationKind::Add;
    type Request = AddAutomaticRefundForOrder;
    type Response = i64;

    fn bind(params: &impl Params) -> Result<AddAutomaticRefundForOrder, RefundError> {
        Ok(AddAutomaticRefundForOrder {
            order_id: required_id(params, "sourceId")?,
            payment_id: required_id(params, "paymentId")?,
            amount: amount(params)?,
        })
    }

    async fn run(
        service: &RefundService,
        caller: &Caller,
        request: AddAutomaticRefundForOrder,
        claim: Option<IdempotencyClaim<i64>>,
    ) -> Answer<i64> {
        service
            .add_automatic_refund_for_order(caller, request, claim)
            .await
    }
}

impl Operation for AddManualRefundOp {
    const NAME: &'static str = "addManualRefund";
    const SCOPE: Scope = Scope::Write;
    const KIND: OperationKind = OperationKind::Add;
    type Request = AddManualRefund;
    type Response = i64;

    fn bind(params: &impl Params) -> Result<AddManualRefund, RefundError> {
        let details = params
            .nested("refundDetails")
            .map_err(|found| {
                RefundError::InvalidParameters(format!(
                    "params.refundDetails must be an object, got {found}"
                ))
            })?
            .ok_or_else(|| missing("refundDetails"))?;
        let amount = amount(params)?;
        let details = ManualDetails {
            payment_form_id: required_id(details, "paymentFormId")
                .map_err(|e| nested_field("refundDetails", e))?,
            payment_system: optional_id(details, "paymentSystem")
                .map_err(|e| nested_field("refundDetails", e))?,
            account: optional_text(details, "account")
                .map_err(|e| nested_field("refundDetails", e))?,
            client_account: optional_text(details, "clientAccount")
                .map_err(|e| nested_field("refundDetails", e))?,
        };
        Ok(AddManualRefund {
            source: source(params)?,
            amount,
            details,
        })
    }

    async fn run(
        service: &RefundService,
        caller: &Caller,
        request: AddManualRefund,
        claim: Option<IdempotencyClaim<i64>>,
    ) -> Answer<i64> {
        service.add_manual_refund(caller, request, claim).await
    }
}

impl Operation for GetPossibleAutoRefundsOp {
    const NAME: &'static str = "getPossibleAutoRefunds";
    const SCOPE: Scope = Scope::Read;
    const KIND: OperationKind = OperationKind::Other;
    type Request = SourceRef;
    type Response = Vec<PossibleAutoRefund>;

    fn bind(params: &impl Params) -> Result<SourceRef, RefundError> {
        source(params)
    }

    async fn run(
        service: &RefundService,
        _caller: &Caller,
        request: SourceRef,
        _claim: Option<IdempotencyClaim<Vec<PossibleAutoRefund>>>,
    ) -> Answer<Vec<PossibleAutoRefund>> {
        Answer::Fresh(service.get_possible_auto_refunds(request).await)
    }
}

impl Operation for GetRefundStatusOp {
    const NAME: &'static str = "getRefundStatus";
    const SCOPE: Scope = Scope::Read;
    const KIND: OperationKind = OperationKind::Other;
    type Request = RefundAt;
    type Response = RefundStatusView;

    fn bind(params: &impl Params) -> Result<RefundAt, RefundError> {
        refund_at(params)
    }

    async fn run(
        service: &RefundService,
        _caller: &Caller,
        request: RefundAt,
        _claim: Option<IdempotencyClaim<RefundStatusView>>,
    ) -> Answer<RefundStatusView> {
        Answer::Fresh(service.get_refund_status(request).await)
    }
}

impl Operation for UpdateRefundOp {
    const NAME: &'static str = "updateRefund";
    const SCOPE: Scope = Scope::Write;
    const KIND: OperationKind = OperationKind::Other;
    type Request = UpdateRefund;
    type Response = bool;

    fn bind(params: &impl Params) -> Result<UpdateRefund, RefundError> {
        let amount = amount(params)?;
        Ok(UpdateRefund {
            refund: refund_at(params)?,
            amount,
        })
    }

    async fn run(
        service: &RefundService,
        caller: &Caller,
        request: UpdateRefund,
        claim: Option<IdempotencyClaim<bool>>,
    ) -> Answer<bool> {
        service.update_refund(caller, request, claim).await
    }
}

impl Operation for ConfirmRefundOp {
    const NAME: &'static str = "confirmRefund";
    const SCOPE: Scope = Scope::Confirm;
    const KIND: OperationKind = OperationKind::Other;
    type Request = RefundAt;
    type Response = bool;

    fn bind(params: &impl Params) -> Result<RefundAt, RefundError> {
        refund_at(params)
    }

    async fn run(
        service: &RefundService,
        caller: &Caller,
        request: RefundAt,
        claim: Option<IdempotencyClaim<bool>>,
    ) -> Answer<bool> {
        service.confirm_refund(caller, request, claim).await
    }
}

impl Operation for CancelRefundOp {
    const NAME: &'static str = "cancelRefund";
    const SCOPE: Scope = Scope::Write;
    const KIND: OperationKind = OperationKind::Other;
    type Request = RefundAt;
    type Response = bool;

    fn bind(params: &impl Params) -> Result<RefundAt, RefundError> {
        refund_at(params)
    }

    async fn run(
        service: &RefundService,
        caller: &Caller,
        request: RefundAt,
        claim: Option<IdempotencyClaim<bool>>,
    ) -> Answer<bool> {
        service.cancel_refund(caller, request, claim).await
    }
}

impl Operation for RetrieveRefundsListOp {
    const NAME: &'static str = "retrieveRefundsList";
    const SCOPE: Scope = Scope::Read;
    const KIND: OperationKind = OperationKind::Other;
    type Request = RetrieveRefundsList;
    type Response = RefundsPage;

    fn bind(params: &impl Params) -> Result<RetrieveRefundsList, RefundError> {
        let word = required_text(params, "sourceType")?;
        let page = optional_u32(params, "resultsPage")?.unwrap_or(0);
        let limit = optional_u32(params, "resultsLimit")?.unwrap_or(MAX_RESULTS_LIMIT);
        let filter = match word.as_str() {
            "all" => Ok(SourceFilter::All),
            word => SourceType::parse(word)
                .map(SourceFilter::Only)
                .ok_or_else(|| RefundError::UnknownSourceType {
                    given: quote(word),
                    expected: "order, return, rma or all",
                }),
        };
        // A limit out of range is judged before the word, like every malformed field (see
        // `source`): the page is made first, with a placeholder filter.
        let list = RetrieveRefundsList::new(SourceFilter::All, page, limit)?;
        Ok(list.with_filter(filter?))
    }

    async fn run(
        service: &RefundService,
        _caller: &Caller,
        request: RetrieveRefundsList,
        _claim: Option<IdempotencyClaim<RefundsPage>>,
    ) -> Answer<RefundsPage> {
        Answer::Fresh(service.retrieve_refunds_list(request).await)
    }
}

fn missing(field: &str) -> RefundError {
    RefundError::InvalidParameters(format!("params.{field} is required"))
}

fn nested_field(parent: &str, error: RefundError) -> RefundError {
    match error {
        RefundError::InvalidParameters(message) => RefundError::InvalidParameters(
            message.replacen("params.", &format!("params.{parent}."), 1),
        ),
        other => other,
    }
}

/// A field's text; `numbers` says whether a JSON number is acceptable too.
fn scalar_text(
    params: &impl Params,
    field: &str,
    numbers: bool,
) -> Result<Option<String>, RefundError> {
    let text = match params.scalar(field) {
        Ok(None) => return Ok(None),
        Ok(Some(Scalar::Text(text))) => text.trim().to_owned(),
        Ok(Some(Scalar::Number(number))) if numbers => number,
        Ok(Some(Scalar::Number(_))) => {
            return Err(RefundError::InvalidParameters(format!(
                "params.{field} must be a string, got a number"
            )));
        }
        Ok(Some(Scalar::Bool(_))) => {
            return Err(RefundError::InvalidParameters(format!(
                "params.{field} must not be a boolean"
            )));
        }
        Err(found) => {
            return Err(RefundError::InvalidParameters(format!(
                "params.{field} must be a single value, got {found}"
            )));
        }
    };
    Ok(Some(text).filter(|text| !text.is_empty()))
}

fn optional_text(params: &impl Params, field: &str) -> Result<Option<String>, RefundError> {
    scalar_text(params, field, false)
}

fn required_text(params: &impl Params, field: &str) -> Result<String, RefundError> {
    optional_text(params, field)?.ok_or_else(|| missing(field))
}

/// A positive integer id; numeric strings are accepted as the public API's clients send them.
pub fn optional_id(params: &impl Params, field: &str) -> Result<Option<i64>, RefundError> {
    let Some(text) = scalar_text(params, field, true)? else {
        return Ok(None);
    };
    match text.parse::<i64>() {
        Ok(id) if id > 0 => Ok(Some(id)),
        _ => Err(RefundError::InvalidParameters(format!(
            "params.{field} must be a positive integer, got '{}'",
            quote(&text)
        ))),
    }
}

pub fn required_id(params: &impl Params, field: &str) -> Result<i64, RefundError> {
    optional_id(params, field)?.ok_or_else(|| missing(field))
}

fn optional_u32(params: &impl Params, field: &str) -> Result<Option<u32>, RefundError> {
    let Some(text) = scalar_text(params, field, true)? else {
        return Ok(None);
    };
    text.parse::<u32>().map(Some).map_err(|_| {
        RefundError::InvalidParameters(format!(
            "params.{field} must be a non-negative integer, got '{}'",
            quote(&text)
        ))
    })
}

fn source_type(word: &str) -> Result<SourceType, RefundError> {
    SourceType::parse(word).ok_or_else(|| RefundError::UnknownSourceType {
        given: quote(word),
        expected: "order, return or rma",
    })
}

/// The source. The `sourceType` word is judged last: a request with malformed fields is
/// "invalid call parameters" (2) whatever its word, and only a well-formed one can be a
/// business error (4005).
fn source(params: &impl Params) -> Result<SourceRef, RefundError> {
    let word = required_text(params, "sourceType")?;
    let id = required_id(params, "sourceId")?;
    Ok(SourceRef {
        source_type: source_type(&word)?,
        id,
    })
}

fn refund_at(params: &impl Params) -> Result<RefundAt, RefundError> {
    let word = required_text(params, "sourceType")?;
    let source_id = required_id(params, "sourceId")?;
    let refund_id = required_id(params, "paymentId")?;
    Ok(RefundAt {
        source: SourceRef {
            source_type: source_type(&word)?,
            id: source_id,
        },
        refund_id,
    })
}

/// `refundValue` and `refundCurrency`. The value is read exactly (plain or scientific
/// notation, never through a float, never rounded) and must be well formed for the currency
/// named: no more decimals than its minor unit (two for a code this service does not know),
/// and below 10^12. A JSON number is the one exception to "never rounded": clients compute
/// amounts in binary floating point, and one that is only a float's rounding away from a whole
/// minor unit (`10.299999999999999`) means that unit (see `money::float_artefact_amount`);
/// a decimal string is always exact. Whether the currency is the right one is the
/// operation's business (4004).
fn amount(params: &impl Params) -> Result<RequestedAmount, RefundError> {
    let (text, json_number) = match params.scalar("refundValue") {
        Ok(Some(Scalar::Number(number))) => (number, true),
        _ => (
            scalar_text(params, "refundValue", true)?.ok_or_else(|| missing("refundValue"))?,
            false,
        ),
    };
    let currency = required_text(params, "refundCurrency")?;
    let invalid = |why: &str| {
        RefundError::InvalidParameters(format!("params.refundValue {why}, got '{}'", quote(&text)))
    };
    let mut value = parse_exact(&text).ok_or_else(|| invalid("must be a decimal number"))?;
    let exponent = Currency::parse(&currency).map_or(2, |currency| currency.exponent());
    if value.normalize().scale() > exponent {
        match float_artefact_amount(value, exponent).filter(|_| json_number) {
            Some(whole) => value = whole,
            None => {
                return Err(invalid(&format!(
                    "has more decimal places than {} allows ({exponent})",
                    quote(&currency)
                )));
            }
        }
    }
    if value.abs() >= Decimal::from(1_000_000_000_000i64) {
        return Err(invalid("must be below 1000000000000"));
    }
    Ok(RequestedAmount { value, currency })
}
