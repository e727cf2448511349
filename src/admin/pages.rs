//! The panel's pages: view models filled from domain values, rendered by askama templates
//! (`templates/admin/`), which escape every value they print.

use askama::Template;
use bytes::Bytes;
use chrono_tz::Tz;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use super::{ActionOutcome, LIST_PAGE_SIZE, Reply};
use crate::clock::format_local_datetime;
use crate::money::{Currency, Money, minor_to_decimal};
use crate::operations::{AddAutomaticRefundForOrderOp, AddAutomaticRefundOp, Operation as _};
use crate::refunds::panel::{
    CHART_STATUSES, DayCounts, Found, PanelSession, RefundHistory, SourceOverview, new_form_token,
};
use crate::refunds::types::{Refund, RefundMethod, SourceRef, SourceType};
use crate::refunds::{RefundError, RefundsPage};

pub const STYLE_SHEET: &str = include_str!("../../templates/admin/panel.css");

/// What every page shows around its content.
pub struct Chrome {
    pub title: String,
    /// The signed-in user; `None` on the sign-in page.
    pub login: Option<String>,
    pub csrf: String,
    pub notice: Option<String>,
    pub problem: Option<String>,
}

impl Chrome {
    fn for_session(session: &PanelSession, title: String) -> Chrome {
        Chrome {
            title,
            login: Some(session.login.clone()),
            csrf: session.csrf_token.clone(),
            notice: None,
            problem: None,
        }
    }

    /// Shows an action's answer at the top of the page.
    fn with_outcome(mut self, outcome: Option<&ActionOutcome>) -> Chrome {
        if let Some(outcome) = outcome {
            if outcome.ok {
                self.notice = Some(outcome.message.clone());
            } else {
                self.problem = Some(outcome.message.clone());
            }
        }
        self
    }
}

type Hidden = Vec<(&'static str, String)>;

fn html(status: StatusCode, rendered: Result<String, askama::Error>) -> Reply {
    match rendered {
        Ok(body) => {
            let mut reply = Response::new(Full::new(Bytes::from(body)));
            *reply.status_mut() = status;
            reply.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            reply
        }
        Err(error) => super::failed(&RefundError::Internal(anyhow::anyhow!(
            "rendering a panel page: {error}"
        ))),
    }
}

fn amount(money: &Money) -> String {
    format!("{} {}", money.to_decimal(), money.currency.code())
}

fn minor_amount(minor: i64, currency: Currency) -> String {
    format!("{} {}", minor_to_decimal(minor, currency), currency.code())
}

pub fn source_label(source: SourceRef) -> String {
    let kind = match source.source_type {
        SourceType::Order => "Order",
        SourceType::Return => "Return",
        SourceType::Rma => "Claim",
    };
    format!("{kind} {}", source.id)
}

pub fn source_href(source: SourceRef) -> String {
    let kind = match source.source_type {
        SourceType::Order => "orders",
        SourceType::Return => "returns",
        SourceType::Rma => "rmas",
    };
    format!("/admin/{kind}/{}", source.id)
}

pub fn found_href(found: Found) -> String {
    match found {
        Found::Refund(id) => format!("/admin/refunds/{id}"),
        Found::Source(source) => source_href(source),
    }
}

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage<'a> {
    chrome: Chrome,
    login: &'a str,
}

pub fn login(login: &str, problem: Option<&str>, status: StatusCode) -> Reply {
    let page = LoginPage {
        chrome: Chrome {
            title: "Sign in".to_owned(),
            login: None,
            csrf: String::new(),
            notice: None,
            problem: problem.map(str::to_owned),
        },
        login,
    };
    html(status, page.render())
}

#[derive(Template)]
#[template(path = "admin/message.html")]
struct MessagePage<'a> {
    chrome: Chrome,
    text: &'a str,
    back: &'a str,
}

pub fn message(
    session: &PanelSession,
    status: StatusCode,
    title: &str,
    text: &str,
    back: &str,
) -> Reply {
    let page = MessagePage {
        chrome: Chrome::for_session(session, title.to_owned()),
        text,
        back,
    };
    html(status, page.render())
}

/// What the list page was asked for.
pub struct ListView {
    pub source_type: String,
    /// From 1.
    pub page: u32,
    /// The refund whose cancel button was pressed: its row asks "Yes, cancel refund {id}".
    pub asking_cancel: Option<i64>,
    /// The refund whose amount is being edited.
    pub editing: Option<i64>,
    pub outcome: Option<ActionOutcome>,
}

struct Row {
    id: i64,
    source_href: String,
    source_label: String,
    amount: String,
    amount_value: String,
    currency: String,
    added: String,
    caller: String,
    asking_cancel: bool,
    editing: bool,
    problem: Option<String>,
    hidden: Hidden,
}

struct Bar {
    x: u32,
    y: u32,
    width: u32,
    height: u32,
    class: &'static str,
}

struct Chart {
    width: u32,
    height: u32,
    baseline: u32,
    label_y: u32,
    title: String,
    bars: Vec<Bar>,
    labels: Vec<(u32, String)>,
    legend: Vec<(&'static str, &'static str)>,
}

const STATUS_CLASSES: [&str; 5] = [
    "s-new",
    "s-processing",
    "s-completed",
    "s-failed",
    "s-canceled",
];

/// Stacked bars, one per day, in the order of [`CHART_STATUSES`] from the bottom.
fn chart(days: &[DayCounts]) -> Chart {
    const SLOT: u32 = 20;
    const BAR: u32 = 14;
    const PLOT: u32 = 180;
    const TOP: u32 = 10;
    let baseline = TOP + PLOT;
    let tallest = days
        .iter()
        .map(|day| day.counts.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut bars = Vec::new();
    let mut labels = Vec::new();
    for (index, day) in days.iter().enumerate() {
        let x = index as u32 * SLOT + (SLOT - BAR) / 2;
        let mut stacked: u64 = 0;
        for (column, count) in day.counts.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            let bottom = (stacked * u64::from(PLOT) / tallest) as u32;
            stacked += count;
            let top = (stacked * u64::from(PLOT) / tallest) as u32;
            bars.push(Bar {
                x,
                y: baseline - top,
                width: BAR,
                height: (top - bottom).max(1),
                class: STATUS_CLASSES[column],
            });
        }
        if index % 7 == 0 {
            labels.push((index as u32 * SLOT, day.date.format("%m-%d").to_string()));
        }
    }
    let total: u64 = days.iter().flat_map(|day| day.counts.iter()).sum();
    Chart {
        width: days.len() as u32 * SLOT,
        height: baseline + 20,
        baseline,
        label_y: baseline + 14,
        title: format!(
            "Refunds added per day over the last {} days, stacked by status: {total} in all; the table beside it gives each number",
            days.len()
        ),
        bars,
        labels,
        legend: CHART_STATUSES
            .iter()
            .zip(STATUS_CLASSES)
            .map(|(status, class)| (class, status.as_str()))
            .collect(),
    }
}

#[derive(Template)]
#[template(path = "admin/list.html")]
struct ListPage {
    chrome: Chrome,
    filter_options: Vec<(&'static str, &'static str, bool)>,
    filter_hidden: Hidden,
    rows: Vec<Row>,
    back: String,
    page_number: u32,
    page_count: u64,
    total: u64,
    previous_href: Option<String>,
    next_href: Option<String>,
    chart: Chart,
    chart_statuses: Vec<&'static str>,
    chart_days: Vec<(String, Vec<u64>)>,
}

fn list_href(source_type: &str, page: u32) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    serializer.append_pair("sourceType", source_type);
    if page > 1 {
        serializer.append_pair("page", &page.to_string());
    }
    format!("/admin?{}", serializer.finish())
}

pub fn list(
    session: &PanelSession,
    view: &ListView,
    refunds: &RefundsPage,
    days: &[DayCounts],
    timezone: Tz,
) -> Result<Reply, RefundError> {
    let back = list_href(&view.source_type, view.page);
    let outcome = view.outcome.as_ref();
    // An error about a refund on this page is shown next to its row; anything else on top.
    let row_problem = outcome
        .filter(|outcome| !outcome.ok)
        .and_then(|outcome| outcome.refund_id.map(|id| (id, outcome.message.clone())))
        .filter(|(id, _)| refunds.refunds.iter().any(|refund| refund.id == *id));
    let top = outcome.filter(|_| row_problem.is_none());
    let mut rows = Vec::with_capacity(refunds.refunds.len());
    for refund in &refunds.refunds {
        rows.push(Row {
            id: refund.id,
            source_href: source_href(refund.source),
            source_label: source_label(refund.source),
            amount: amount(&refund.amount),
            amount_value: refund.amount.to_decimal().to_string(),
            currency: refund.amount.currency.code().to_owned(),
            added: format_local_datetime(refund.created_at, timezone),
            caller: refund.caller.clone(),
            asking_cancel: view.asking_cancel == Some(refund.id),
            editing: view.editing == Some(refund.id),
            problem: row_problem
                .as_ref()
                .filter(|(id, _)| *id == refund.id)
                .map(|(_, message)| message.clone()),
            hidden: action_fields(session, refund, &format!("{back}#refund-{}", refund.id))?,
        });
    }
    let page_count = refunds.total.div_ceil(u64::from(LIST_PAGE_SIZE)).max(1);
    let page = ListPage {
        chrome: Chrome::for_session(session, "Refunds awaiting approval".to_owned())
            .with_outcome(top),
        filter_options: [
            ("all", "All"),
            ("order", "Orders"),
            ("return", "Returns"),
            ("rma", "Claims"),
        ]
        .into_iter()
        .map(|(value, label)| (value, label, value == view.source_type))
        .collect(),
        filter_hidden: vec![
            ("sourceType", view.source_type.clone()),
            ("page", view.page.to_string()),
        ],
        rows,
        back,
        page_number: view.page,
        page_count,
        total: refunds.total,
        previous_href: (view.page > 1).then(|| list_href(&view.source_type, view.page - 1)),
        next_href: (u64::from(view.page) < page_count)
            .then(|| list_href(&view.source_type, view.page + 1)),
        chart: chart(days),
        chart_statuses: CHART_STATUSES
            .iter()
            .map(|status| status.as_str())
            .collect(),
        chart_days: days
            .iter()
            .map(|day| (day.date.format("%Y-%m-%d").to_string(), day.counts.to_vec()))
            .collect(),
    };
    Ok(html(StatusCode::OK, page.render()))
}

/// The hidden fields of an action on one refund: the CSRF token, a fresh form token (the
/// idempotency key), where to go back to, and the refund as the operations name it.
fn action_fields(
    session: &PanelSession,
    refund: &Refund,
    back: &str,
) -> Result<Hidden, RefundError> {
    Ok(vec![
        ("csrf", session.csrf_token.clone()),
        ("formToken", new_form_token()?),
        ("back", back.to_owned()),
        ("sourceType", refund.source.source_type.as_str().to_owned()),
        ("sourceId", refund.source.id.to_string()),
        ("paymentId", refund.id.to_string()),
    ])
}

struct PaymentRow {
    id: i64,
    paid_at: String,
    form: i64,
    system: String,
    transaction: String,
    paid: String,
    refunded: String,
    reserved: String,
    refundable: String,
}

struct RefundRow {
    id: i64,
    source_label: String,
    method: String,
    amount: String,
    status: &'static str,
    added: String,
}

#[derive(Template)]
#[template(path = "admin/source.html")]
struct SourcePage {
    chrome: Chrome,
    kind: &'static str,
    is_order: bool,
    order_id: i64,
    currency: String,
    fulfilled: &'static str,
    outstanding: String,
    payments: Vec<PaymentRow>,
    automatic_operation: &'static str,
    automatic_hidden: Hidden,
    manual_hidden: Hidden,
    refunds: Vec<RefundRow>,
}

pub fn source(
    session: &PanelSession,
    overview: &SourceOverview,
    outcome: Option<ActionOutcome>,
    timezone: Tz,
) -> Result<Reply, RefundError> {
    let at = overview.source.source;
    let order = &overview.source.order;
    let currency = order.currency;
    let back = source_href(at);
    let base = |session: &PanelSession| -> Result<Hidden, RefundError> {
        Ok(vec![
            ("csrf", session.csrf_token.clone()),
            ("formToken", new_form_token()?),
            ("back", back.clone()),
            ("sourceType", at.source_type.as_str().to_owned()),
            ("sourceId", at.id.to_string()),
        ])
    };
    let page = SourcePage {
        chrome: Chrome::for_session(session, source_label(at)).with_outcome(outcome.as_ref()),
        kind: match at.source_type {
            SourceType::Order => "order",
            SourceType::Return => "return",
            SourceType::Rma => "claim",
        },
        is_order: at.source_type == SourceType::Order,
        order_id: order.id,
        currency: currency.code().to_owned(),
        fulfilled: if order.fulfilled { "yes" } else { "no" },
        outstanding: minor_amount(overview.source.outstanding_minor, currency),
        payments: overview
            .payments
            .iter()
            .map(|row| PaymentRow {
                id: row.payment.id,
                paid_at: format_local_datetime(row.payment.paid_at, timezone),
                form: row.payment.payment_form_id,
                system: row
                    .payment
                    .payment_system
                    .map_or_else(|| "-".to_owned(), |system| system.to_string()),
                transaction: row
                    .payment
                    .external_transaction_id
                    .clone()
                    .unwrap_or_else(|| "-".to_owned()),
                paid: amount(&row.payment.amount),
                refunded: minor_amount(row.refunded_minor, currency),
                reserved: minor_amount(row.reserved_minor, currency),
                refundable: minor_amount(row.refundable_minor, currency),
            })
            .collect(),
        automatic_operation: if at.source_type == SourceType::Order {
            AddAutomaticRefundForOrderOp::NAME
        } else {
            AddAutomaticRefundOp::NAME
        },
        automatic_hidden: base(session)?,
        manual_hidden: base(session)?,
        refunds: overview
            .refunds
            .iter()
            .map(|refund| RefundRow {
                id: refund.id,
                source_label: source_label(refund.source),
                method: match refund.method {
                    RefundMethod::Automatic { payment_id } => {
                        format!("automatic, payment {payment_id}")
                    }
                    RefundMethod::Manual => "manual".to_owned(),
                },
                amount: amount(&refund.amount),
                status: refund.status.as_str(),
                added: format_local_datetime(refund.created_at, timezone),
            })
            .collect(),
    };
    Ok(html(StatusCode::OK, page.render()))
}

struct HistoryRow {
    at: String,
    caller: String,
    channel: String,
    operation: String,
    status: String,
    amount: String,
    request_id: String,
}

#[derive(Template)]
#[template(path = "admin/refund.html")]
struct RefundPage {
    chrome: Chrome,
    facts: Vec<(&'static str, String)>,
    source_href: String,
    source_label: String,
    chain: &'static str,
    history: Vec<HistoryRow>,
    job: Option<Vec<(&'static str, String)>>,
}

pub fn refund(session: &PanelSession, history: &RefundHistory, timezone: Tz) -> Reply {
    let refund = &history.refund;
    let currency = refund.amount.currency;
    let when = |at: Option<i64>| {
        at.map_or_else(|| "-".to_owned(), |at| format_local_datetime(at, timezone))
    };
    let mut facts = vec![
        ("Status", refund.status.as_str().to_owned()),
        ("Amount", amount(&refund.amount)),
        (
            "Method",
            match refund.method {
                RefundMethod::Automatic { payment_id } => {
                    format!("automatic, from payment {payment_id}")
                }
                RefundMethod::Manual => "manual".to_owned(),
            },
        ),
        ("Added", when(Some(refund.created_at))),
        ("Added by", refund.caller.clone()),
        ("Confirmed", when(refund.confirmed_at)),
        (
            "Operator's refund id",
            refund.external_id.clone().unwrap_or_else(|| "-".to_owned()),
        ),
    ];
    if let Some(details) = &refund.details {
        facts.push(("Payment form", details.payment_form_id.to_string()));
        facts.push((
            "Payment system",
            details
                .payment_system
                .map_or_else(|| "-".to_owned(), |system| system.to_string()),
        ));
        facts.push((
            "Account",
            details.account.clone().unwrap_or_else(|| "-".to_owned()),
        ));
        facts.push((
            "Client account",
            details
                .client_account
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
        ));
    }
    let page = RefundPage {
        chrome: Chrome::for_session(session, format!("Refund {}", refund.id)),
        facts,
        source_href: source_href(refund.source),
        source_label: source_label(refund.source),
        chain: if history.chain_verifies {
            "verifies: every entry matches its hash and follows the one before it"
        } else {
            "DOES NOT VERIFY: an entry was edited, removed or reordered; run `audit verify`"
        },
        history: history
            .entries
            .iter()
            .map(|entry| HistoryRow {
                at: format_local_datetime(entry.at, timezone),
                caller: entry.caller.clone(),
                channel: entry.channel.clone(),
                operation: entry.operation.clone(),
                status: format!(
                    "{} → {}",
                    entry.status_before.as_deref().unwrap_or("-"),
                    entry.status_after
                ),
                amount: match entry.amount_before {
                    Some(before) if before != entry.amount_after => format!(
                        "{} → {}",
                        minor_amount(before, currency),
                        minor_amount(entry.amount_after, currency)
                    ),
                    _ => minor_amount(entry.amount_after, currency),
                },
                request_id: entry.request_id.clone().unwrap_or_else(|| "-".to_owned()),
            })
            .collect(),
        job: history.job.as_ref().map(|job| {
            vec![
                ("Operator", job.operator.clone()),
                ("State", job.state.as_str().to_owned()),
                ("Attempts", job.attempts.to_string()),
                ("Next attempt", when(Some(job.next_attempt_ms / 1000))),
                (
                    "Last error",
                    job.last_error.clone().unwrap_or_else(|| "-".to_owned()),
                ),
            ]
        }),
    };
    html(StatusCode::OK, page.render())
}

#[derive(Template)]
#[template(path = "admin/search.html")]
struct SearchPage {
    chrome: Chrome,
    found: Vec<(String, String)>,
}

pub fn search(session: &PanelSession, id: i64, found: &[Found]) -> Reply {
    let page = SearchPage {
        chrome: Chrome::for_session(session, format!("Search for {id}")),
        found: found
            .iter()
            .map(|found| {
                let label = match found {
                    Found::Refund(id) => format!("Refund {id}"),
                    Found::Source(source) => source_label(*source),
                };
                (found_href(*found), label)
            })
            .collect(),
    };
    html(StatusCode::OK, page.render())
}
