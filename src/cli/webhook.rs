//! `refunds-gateway webhook …`: the shop's webhook endpoints and their deliveries.

use anyhow::Context as _;
use chrono_tz::Tz;
use clap::Subcommand;

use super::{DatabaseArg, TimezoneArg};
use crate::clock::{format_local_datetime, system_millis};
use crate::refunds::events::EventType;
use crate::store;

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Subscribe an endpoint; prints its id, and the generated secret once if none is given.
    Add {
        #[command(flatten)]
        database: DatabaseArg,
        /// Where events are POSTed (https; http and private addresses only with
        /// `serve --allow-private-webhooks`).
        #[arg(long)]
        url: String,
        /// Comma-separated: refund.created, refund.updated, refund.confirmed, refund.completed,
        /// refund.failed, refund.canceled.
        #[arg(long)]
        events: String,
        /// Read the signing secret from this environment variable instead of generating one.
        #[arg(long)]
        secret_env: Option<String>,
    },
    /// List endpoints: id, URL, events, enabled or why not, last success, pending deliveries.
    List {
        #[command(flatten)]
        database: DatabaseArg,
        #[command(flatten)]
        timezone: TimezoneArg,
    },
    /// Remove an endpoint and its deliveries.
    Remove {
        #[command(flatten)]
        database: DatabaseArg,
        id: i64,
    },
    /// List deliveries, newest first.
    Deliveries {
        #[command(flatten)]
        database: DatabaseArg,
        /// Only this endpoint's.
        #[arg(long)]
        endpoint: Option<i64>,
        /// Only deliveries that failed (given up, or with a failed attempt).
        #[arg(long)]
        failed: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        timezone: TimezoneArg,
    },
    /// Deliver an event again to every endpoint it went to.
    Redeliver {
        #[command(flatten)]
        database: DatabaseArg,
        event_id: String,
    },
}

pub fn run(command: WebhookCommand) -> anyhow::Result<()> {
    match command {
        WebhookCommand::Add {
            database,
            url,
            events,
            secret_env,
        } => add(&database, &url, &events, secret_env.as_deref()),
        WebhookCommand::List { database, timezone } => list(&database, timezone.timezone),
        WebhookCommand::Remove { database, id } => {
            if !store::maintenance(&database.db)?.remove_webhook(id)? {
                anyhow::bail!("there is no webhook endpoint {id}");
            }
            println!("removed webhook endpoint {id}");
            Ok(())
        }
        WebhookCommand::Deliveries {
            database,
            endpoint,
            failed,
            limit,
            timezone,
        } => deliveries(&database, endpoint, failed, limit, timezone.timezone),
        WebhookCommand::Redeliver { database, event_id } => {
            let queued = store::maintenance(&database.db)?.redeliver(&event_id, system_millis())?;
            if queued == 0 {
                anyhow::bail!("no delivery of event '{event_id}' is known");
            }
            println!(
                "queued {queued} deliver{} of {event_id}",
                plural(queued, "y", "ies")
            );
            Ok(())
        }
    }
}

fn plural(count: usize, one: &'static str, many: &'static str) -> &'static str {
    if count == 1 { one } else { many }
}

/// Parses `--events`: known names, at least one, each once.
pub fn parse_events(list: &str) -> anyhow::Result<Vec<EventType>> {
    let mut events = Vec::new();
    for name in list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let kind = EventType::parse(name).with_context(|| {
            let known: Vec<&str> = EventType::ALL.iter().map(|kind| kind.as_str()).collect();
            format!(
                "unknown event '{name}': expected one of {}",
                known.join(", ")
            )
        })?;
        if !events.contains(&kind) {
            events.push(kind);
        }
    }
    anyhow::ensure!(!events.is_empty(), "--events names no event");
    Ok(events)
}

fn add(
    database: &DatabaseArg,
    url: &str,
    events: &str,
    secret_env: Option<&str>,
) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("'{url}' is not a URL"))?;
    anyhow::ensure!(
        matches!(parsed.scheme(), "https" | "http") && parsed.host_str().is_some(),
        "'{url}' is not an http(s) URL with a host"
    );
    let events = parse_events(events)?;
    let (secret, generated) = match secret_env {
        Some(variable) => {
            let secret = std::env::var(variable)
                .with_context(|| format!("the environment variable {variable} is not set"))?;
            anyhow::ensure!(
                secret.len() >= 16,
                "the secret in {variable} is shorter than 16 characters"
            );
            (secret, false)
        }
        None => (new_secret()?, true),
    };
    let id =
        store::maintenance(&database.db)?.add_webhook(url, &events, &secret, system_millis())?;
    println!("{id}");
    if generated {
        println!("{secret}");
        eprintln!("webhook endpoint {id} added; its signing secret (above) is shown only now");
    } else {
        eprintln!("webhook endpoint {id} added");
    }
    if parsed.scheme() == "http" {
        eprintln!("note: http targets are used only by `serve --allow-private-webhooks`");
    }
    Ok(())
}

/// `whsec_` and 256 random bits in hex.
fn new_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("no randomness: {error}"))?;
    Ok(format!("whsec_{}", hex::encode(bytes)))
}

fn local_ms(at_ms: Option<i64>, timezone: Tz) -> String {
    at_ms.map_or_else(
        || "-".to_owned(),
        |ms| format_local_datetime(ms.div_euclid(1000), timezone),
    )
}

fn list(database: &DatabaseArg, timezone: Tz) -> anyhow::Result<()> {
    let endpoints = store::maintenance(&database.db)?.webhooks()?;
    for endpoint in &endpoints {
        let state = match (&endpoint.enabled, &endpoint.disabled_reason) {
            (true, _) => "enabled".to_owned(),
            (false, Some(reason)) => format!("DISABLED ({reason})"),
            (false, None) => "DISABLED".to_owned(),
        };
        println!(
            "{}\t{}\t{}\t{}\tlast success {}\t{} pending",
            endpoint.id,
            endpoint.url,
            endpoint.events,
            state,
            local_ms(endpoint.last_success_ms, timezone),
            endpoint.pending
        );
    }
    eprintln!("{} endpoint(s)", endpoints.len());
    Ok(())
}

fn deliveries(
    database: &DatabaseArg,
    endpoint: Option<i64>,
    failed: bool,
    limit: u32,
    timezone: Tz,
) -> anyhow::Result<()> {
    let deliveries =
        store::maintenance(&database.db)?.webhook_deliveries(endpoint, failed, limit)?;
    for delivery in &deliveries {
        println!(
            "{}\tendpoint {}\t{}\t{}\trefund {}\t{}\t{} attempt(s)\tnext {}\tdelivered {}\t{}",
            delivery.id,
            delivery.endpoint_id,
            delivery.event_id,
            delivery.event_type,
            delivery.refund_id,
            delivery.state,
            delivery.attempts,
            local_ms(Some(delivery.next_attempt_ms), timezone),
            local_ms(delivery.delivered_ms, timezone),
            match (&delivery.last_status, &delivery.last_error) {
                (_, Some(error)) => error.replace(['\n', '\t'], " "),
                (Some(status), None) => format!("HTTP {status}"),
                (None, None) => "-".to_owned(),
            }
        );
    }
    eprintln!(
        "{} deliver{}",
        deliveries.len(),
        plural(deliveries.len(), "y", "ies")
    );
    Ok(())
}
