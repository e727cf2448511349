//! The shop document: orders, their payments, returns and claims, as `import` and `--demo` load
//! them. Parsing checks every entry and names the entry and field of the first problem.

use anyhow::{Context as _, bail};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use crate::clock::parse_local_datetime;
use crate::money::{AmountError, Currency, Money, parse_exact};
use crate::refunds::types::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopData {
    pub payment_forms: Vec<PaymentFormEntry>,
    pub orders: Vec<ShopOrder>,
    pub returns: Vec<ShopClaim>,
    pub rmas: Vec<ShopClaim>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFormEntry {
    pub payment_form_id: i64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopOrder {
    pub order_id: i64,
    pub currency: Currency,
    pub fulfilled: bool,
    pub payments: Vec<ShopPayment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopPayment {
    pub payment_id: i64,
    pub amount: Money,
    pub payment_form_id: i64,
    pub payment_system: Option<i64>,
    pub auto_refund: bool,
    pub external_transaction_id: Option<String>,
    pub paid_at: Timestamp,
}

/// A merchandise return or a claim (RMA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopClaim {
    pub id: i64,
    pub order_id: i64,
    pub value: Money,
}

impl ShopData {
    /// Parses and checks a shop document; `timezone` reads `paidAt`.
    pub fn parse(text: &str, timezone: Tz) -> anyhow::Result<ShopData> {
        let document: Value =
            serde_json::from_str(text).context("the shop document is not valid JSON")?;
        let root = document
            .as_object()
            .context("the shop document must be a JSON object")?;
        for key in root.keys() {
            if !["paymentForms", "orders", "returns", "rmas"].contains(&key.as_str()) {
                bail!("unknown top-level field '{key}'");
            }
        }
        let payment_forms = entries(root, "paymentForms", |at, entry| {
            Ok(PaymentFormEntry {
                payment_form_id: positive_id(at, entry, "paymentFormId")?,
                name: required_string(at, entry, "name")?,
            })
        })?;
        let orders = entries(root, "orders", |at, entry| parse_order(at, entry, timezone))?;
        let returns = entries(root, "returns", |at, entry| {
            parse_claim(at, entry, "returnId")
        })?;
        let rmas = entries(root, "rmas", |at, entry| parse_claim(at, entry, "rmaId"))?;
        let shop = ShopData {
            payment_forms,
            orders,
            returns,
            rmas,
        };
        shop.check_ids_unique()?;
        Ok(shop)
    }

    fn check_ids_unique(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (index, order) in self.orders.iter().enumerate() {
            if !seen.insert(("order", order.order_id)) {
                bail!("orders[{index}].orderId: {} appears twice", order.order_id);
            }
            for (payment_index, payment) in order.payments.iter().enumerate() {
                if !seen.insert(("payment", payment.payment_id)) {
                    bail!(
                        "orders[{index}].payments[{payment_index}].paymentId: {} appears twice",
                        payment.payment_id
                    );
                }
            }
        }
        for (field, claims) in [("returns", &self.returns), ("rmas", &self.rmas)] {
            for (index, claim) in claims.iter().enumerate() {
                if !seen.insert((field, claim.id)) {
                    bail!("{field}[{index}]: id {} appears twice", claim.id);
                }
            }
        }
        Ok(())
    }
}

fn parse_order(at: &str, entry: &Map<String, Value>, timezone: Tz) -> anyhow::Result<ShopOrder> {
    let order_id = positive_id(at, entry, "orderId")?;
    let currency = required_currency(at, entry, "currency")?;
    let fulfilled = optional_bool(at, entry, "fulfilled")?.unwrap_or(false);
    let payments = entries(entry, "payments", |payment_at, payment| {
        let payment_at = format!("{at}.{payment_at}");
        let payment_currency = required_currency(&payment_at, payment, "currency")?;
        if payment_currency != currency {
            bail!(
                "{payment_at}.currency: {payment_currency} differs from the order's currency {currency}"
            );
        }
        let paid_at = required_string(&payment_at, payment, "paidAt")?;
        let paid_at = parse_local_datetime(&paid_at, timezone).with_context(|| {
            format!("{payment_at}.paidAt: '{paid_at}' is not a YYYY-MM-DD HH:MM:SS time")
        })?;
        Ok(ShopPayment {
            payment_id: positive_id(&payment_at, payment, "paymentId")?,
            amount: required_money(&payment_at, payment, "amount", payment_currency)?,
            payment_form_id: positive_id(&payment_at, payment, "paymentFormId")?,
            payment_system: optional_id(&payment_at, payment, "paymentSystem")?,
            auto_refund: optional_bool(&payment_at, payment, "autoRefund")?.unwrap_or(false),
            external_transaction_id: optional_string(
                &payment_at,
                payment,
                "externalTransactionId",
            )?,
            paid_at,
        })
    })?;
    Ok(ShopOrder {
        order_id,
        currency,
        fulfilled,
        payments,
    })
}

fn parse_claim(at: &str, entry: &Map<String, Value>, id_field: &str) -> anyhow::Result<ShopClaim> {
    let currency = required_currency(at, entry, "currency")?;
    Ok(ShopClaim {
        id: positive_id(at, entry, id_field)?,
        order_id: positive_id(at, entry, "orderId")?,
        value: required_money(at, entry, "value", currency)?,
    })
}

/// Parses each object of the optional array `object[field]`, naming entries `field[i]`.
fn entries<T>(
    object: &Map<String, Value>,
    field: &str,
    parse: impl Fn(&str, &Map<String, Value>) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    let Some(value) = object.get(field) else {
        return Ok(Vec::new());
    };
    let list = value
        .as_array()
        .with_context(|| format!("{field}: expected an array"))?;
    list.iter()
        .enumerate()
        .map(|(index, entry)| {
            let at = format!("{field}[{index}]");
            let entry = entry
                .as_object()
                .with_context(|| format!("{at}: expected an object"))?;
            parse(&at, entry)
        })
        .collect()
}

fn positive_id(at: &str, entry: &Map<String, Value>, field: &str) -> anyhow::Result<i64> {
    optional_id(at, entry, field)?.with_context(|| format!("{at}.{field}: required"))
}

fn optional_id(at: &str, entry: &Map<String, Value>, field: &str) -> anyhow::Result<Option<i64>> {
    match entry.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_i64() {
            Some(id) if id > 0 => Ok(Some(id)),
            _ => bail!("{at}.{field}: expected a positive integer, got {value}"),
        },
    }
}

fn optional_bool(
    at: &str,
    entry: &Map<String, Value>,
    field: &str,
) -> anyhow::Result<Option<bool>> {
    match entry.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(other) => bail!("{at}.{field}: expected true or false, got {other}"),
    }
}

fn optional_string(
    at: &str,
    entry: &Map<String, Value>,
    field: &str,
) -> anyhow::Result<Option<String>> {
    match entry.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if !text.is_empty() => Ok(Some(text.clone())),
        Some(Value::String(_)) => Ok(None),
        Some(other) => bail!("{at}.{field}: expected a string, got {other}"),
    }
}

fn required_string(at: &str, entry: &Map<String, Value>, field: &str) -> anyhow::Result<String> {
    optional_string(at, entry, field)?.with_context(|| format!("{at}.{field}: required"))
}

fn required_currency(
    at: &str,
    entry: &Map<String, Value>,
    field: &str,
) -> anyhow::Result<Currency> {
    let code = required_string(at, entry, field)?;
    Currency::parse(&code)
        .with_context(|| format!("{at}.{field}: '{code}' is not an ISO 4217 currency"))
}

fn required_money(
    at: &str,
    entry: &Map<String, Value>,
    field: &str,
    currency: Currency,
) -> anyhow::Result<Money> {
    let value = entry
        .get(field)
        .with_context(|| format!("{at}.{field}: required"))?;
    let decimal = json_decimal(value)
        .with_context(|| format!("{at}.{field}: expected a decimal amount, got {value}"))?;
    Money::from_decimal(decimal, currency).map_err(|error| match error {
        AmountError::SubUnit { exponent } => anyhow::anyhow!(
            "{at}.{field}: {decimal} has more than {exponent} decimal places, the minor unit of {currency}"
        ),
        AmountError::NotPositive => anyhow::anyhow!("{at}.{field}: must be positive, got {decimal}"),
        AmountError::TooLarge => anyhow::anyhow!("{at}.{field}: {decimal} is too large"),
    })
}

/// A JSON number or decimal string, read exactly (the number's text, never an `f64`).
pub fn json_decimal(value: &Value) -> Option<Decimal> {
    let text = match value {
        Value::Number(number) => number.to_string(),
        Value::String(text) => text.trim().to_owned(),
        _ => return None,
    };
    parse_exact(&text)
}
