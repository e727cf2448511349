//! The command line: `serve`, `import`, `user add`, `admin add`, `key`, `audit`, `backup`, `outbox`.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono_tz::Tz;
use clap::{Args, Parser, Subcommand};

use crate::clock::Clock;
use crate::clock::format_local_datetime;
use crate::log_output::{LogOutput, LogOutputGuard};
use crate::operators::OperatorsConfig;
use crate::proof_format;
use crate::refunds::RefundError;
use crate::refunds::ledger::Ledger;
use crate::refunds::panel::admin_user;
use crate::refunds::proof;
use crate::refunds::types::{ApiUser, Scopes};
use crate::refunds::{api_key_digest, new_api_key, password_sha1_hex};
use crate::server::Config;
use crate::shop::ShopData;
use crate::store::{self, Database};

mod webhook;

/// The demo shop `serve --demo` loads into an empty database.
pub const DEMO_SHOP: &str = include_str!("../fixtures/demo-shop.json");

#[derive(Debug, Parser)]
#[command(
    name = "refunds-gateway",
    version,
    about = "Refunds gateway: IdoSell-compatible refunds over SOAP"
)]
struct Cli {
    /// Log lines as text for people or JSON for machines.
    #[arg(
        long,
        global = true,
        env = "REFUNDS_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Load a shop document (orders, payments, returns, claims) in one transaction.
    Import(ImportArgs),
    /// Manage legacy API users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage users of the admin panel (`/admin`).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// List outbox jobs that have not finished: confirmed automatic refunds on their way to the
    /// payment operator, with their attempts and last error.
    Outbox {
        #[command(flatten)]
        database: DatabaseArg,
        /// Also list finished jobs.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        timezone: TimezoneArg,
    },
    /// The audit trail: verify its hash chain, or show a refund's history.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Copy the database consistently (safe while the service runs).
    Backup {
        #[command(flatten)]
        database: DatabaseArg,
        /// Where to write the copy; must not exist.
        out: PathBuf,
    },
    /// Manage API keys (REST; also accepted by the SOAP and JSON gates).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// The shop's webhooks: signed refund events POSTed to its endpoints.
    Webhook {
        #[command(subcommand)]
        command: webhook::WebhookCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; report the first broken entry.
    Verify {
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Show the audit entries of one refund.
    Show {
        #[command(flatten)]
        database: DatabaseArg,
        #[arg(long)]
        refund: i64,
        #[command(flatten)]
        timezone: TimezoneArg,
    },
    /// Prove one payment's refunds against the audit chain, or check a saved proof offline.
    Prove {
        #[command(flatten)]
        database: DatabaseArg,
        /// The payment to prove.
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        payment: Option<i64>,
        /// Also carry the chain from this position (a head published earlier) to the head.
        #[arg(long, conflicts_with = "file")]
        anchor: Option<i64>,
        /// Print the proof document (JSON) instead of a summary.
        #[arg(long)]
        json: bool,
        /// Check a saved proof document without the database.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Print the chain's head (position and hash), for publishing elsewhere.
    Head {
        #[command(flatten)]
        database: DatabaseArg,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a key and print it once; only its hash is stored.
    Create {
        #[command(flatten)]
        database: DatabaseArg,
        #[arg(long)]
        name: String,
        /// Comma-separated: read, write, confirm.
        #[arg(long, default_value = "read,write,confirm")]
        scope: String,
    },
    /// List keys: name, scopes, created, revoked.
    List {
        #[command(flatten)]
        database: DatabaseArg,
        #[command(flatten)]
        timezone: TimezoneArg,
    },
    /// Revoke the key named NAME.
    Revoke {
        #[command(flatten)]
        database: DatabaseArg,
        name: String,
    },
}

#[derive(Debug, Args)]
struct DatabaseArg {
    /// The ledger: an SQLite database file (created and migrated when missing), or a
    /// `postgres://` / `postgresql://` URL (migrated when behind).
    #[arg(long = "db", env = "REFUNDS_DB", default_value = "refunds.db", value_parser = parse_database)]
    db: Database,
}

fn parse_database(value: &str) -> Result<Database, String> {
    if value.is_empty() {
        return Err("the database is empty: give a file path or a postgres:// URL".to_owned());
    }
    Ok(Database::parse(value))
}

#[derive(Debug, Args)]
struct TimezoneArg {
    /// The shop's time zone: dates on the wire and the legacy key's date are in it.
    #[arg(
        long = "timezone",
        env = "REFUNDS_TIMEZONE",
        default_value = "Europe/Warsaw"
    )]
    timezone: Tz,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[arg(long, env = "REFUNDS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    database: DatabaseArg,
    /// Load the demo shop and the user demo/demo into an empty database.
    #[arg(long)]
    demo: bool,
    /// Base URL clients reach the service at (for the WSDL's soap:address).
    #[arg(long)]
    public_url: Option<String>,
    /// Maker-checker: refuse to confirm a refund by the user or key that added it (faultCode 4021).
    #[arg(long)]
    require_second_approver: bool,
    /// How long idempotency keys are kept, in hours.
    #[arg(long, default_value_t = 24)]
    idempotency_ttl_hours: u64,
    /// How long checked credentials are trusted without a ledger read, in milliseconds: the
    /// longest a revoked key or a changed password keeps working. 0 checks every call.
    #[arg(long, default_value_t = 1000)]
    credentials_ttl_ms: u64,
    /// Serve /metrics to requests with `Authorization: Bearer TOKEN`; without a token /metrics
    /// is off. Best given through the environment, so that it is not in the process list.
    #[arg(long, env = "REFUNDS_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Payment operators file (TOML); without it every refund goes to the sandbox.
    #[arg(long, env = "REFUNDS_OPERATORS")]
    operators: Option<PathBuf>,
    /// Deliver webhooks also over plain http and to private, loopback and link-local
    /// addresses (development and tests; never in production).
    #[arg(long)]
    allow_private_webhooks: bool,
    /// First wait before a failed webhook delivery is tried again, in milliseconds; it doubles
    /// each time up to an hour (±20% jitter), for up to three days.
    #[arg(long, default_value_t = 5000)]
    webhook_retry_base_ms: u64,
    /// How long a webhook receiver has to answer, in milliseconds (a delivery in flight when
    /// the service stops is tried again this long plus five seconds later).
    #[arg(long, default_value_t = 10000)]
    webhook_timeout_ms: u64,
    #[command(flatten)]
    timezone: TimezoneArg,
}

#[derive(Debug, Args)]
struct ImportArgs {
    #[command(flatten)]
    database: DatabaseArg,
    #[command(flatten)]
    timezone: TimezoneArg,
    /// The shop document (JSON).
    file: PathBuf,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a legacy API user, or replace its password and scopes.
    Add {
        #[command(flatten)]
        database: DatabaseArg,
        login: String,
        #[arg(long)]
        password: String,
        /// Comma-separated: read, write, confirm.
        #[arg(long, default_value = "read,write,confirm")]
        scope: String,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Add an admin panel user, or replace its password and scopes (ending its sessions). The
    /// password is kept as an argon2id hash.
    Add {
        #[command(flatten)]
        database: DatabaseArg,
        login: String,
        #[arg(long)]
        password: String,
        /// Comma-separated: read, write, confirm.
        #[arg(long, default_value = "read,write,confirm")]
        scope: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_output = init_tracing(cli.log_format);
    let outcome = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Import(args) => import(&args.database.db, &args.file, args.timezone.timezone),
        Command::User {
            command:
                UserCommand::Add {
                    database,
                    login,
                    password,
                    scope,
                },
        } => add_user(&database.db, &login, &password, &scope),
        Command::Admin {
            command:
                AdminCommand::Add {
                    database,
                    login,
                    password,
                    scope,
                },
        } => add_admin_user(&database.db, &login, &password, &scope),
        Command::Key { command } => key(command),
        Command::Webhook { command } => webhook::run(command),
        Command::Audit { command } => audit(command),
        Command::Backup { database, out } => backup(&database.db, &out),
        Command::Outbox {
            database,
            all,
            timezone,
        } => outbox(&database.db, all, timezone.timezone),
    };
    // Every line logged so far is written before the error and before the process ends.
    drop(log_output);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr through a writing thread of its own (see [`crate::log_output`]); the guard
/// writes out what is left when dropped.
fn init_tracing(format: LogFormat) -> LogOutputGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (output, guard) = LogOutput::start();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(output);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
    guard
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    crate::server::tune_allocator();
    crate::fatal_signal::report_sigbus();
    let timezone = args.timezone.timezone;
    // Open (creating and migrating) before saying "listening": a database that cannot be
    // opened for writing stops the start with its cause, not after a claim to serve.
    if args.demo {
        load_demo(&args.database.db, timezone)?;
    }
    let store = store::open(&args.database.db)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                // Nothing was served: close the ledger cleanly.
                store.close();
                return Err(error).with_context(|| format!("binding {}", args.listen));
            }
        };
        let address = listener.local_addr()?;
        let base = args.public_url.clone().unwrap_or_else(|| format!("http://{address}"));
        tracing::info!(%address, database = %args.database.db, %timezone, "refunds gateway listening");
        tracing::info!("WSDL: {base}/soap/refunds?wsdl — SOAP endpoint: POST {base}/soap/refunds");
        tracing::info!("admin panel: {base}/admin");
        if args.demo {
            tracing::info!(
                "demo data loaded: legacy user 'demo', password 'demo'; README.md, 'A first call', shows a curl call"
            );
            tracing::info!("admin panel: sign in at {base}/admin as 'demo', password 'demo'");
        }
        let mut config = Config::new(args.database.db.clone());
        config.require_second_approver = args.require_second_approver;
        config.idempotency_ttl = std::time::Duration::from_secs(args.idempotency_ttl_hours.saturating_mul(3600));
        config.credentials_ttl = std::time::Duration::from_millis(args.credentials_ttl_ms);
        if let Some(path) = &args.operators {
            config.operators = OperatorsConfig::load(path)?;
        }
        config.webhooks.allow_private = args.allow_private_webhooks;
        config.webhooks.policy.base_ms = i64::try_from(args.webhook_retry_base_ms.max(1)).unwrap_or(i64::MAX);
        config.webhooks = config
            .webhooks
            .with_timeout(std::time::Duration::from_millis(args.webhook_timeout_ms.max(1)));
        config.public_url = args.public_url;
        config.metrics_token = args
            .metrics_token
            .filter(|token| !token.trim().is_empty())
            .map(|token| crate::server::MetricsToken(token.trim().to_owned()));
        config.timezone = timezone;
        config.clock = Clock::System;
        crate::server::run_on(listener, config, store, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn load_demo(database: &Database, timezone: Tz) -> anyhow::Result<()> {
    let mut maintenance = store::maintenance(database)?;
    // The panel user is (re)made at every demo start, also in a database made before the panel.
    maintenance.put_admin_user(
        &admin_user("demo", "demo", Scopes::ALL)?,
        Clock::System.now(),
    )?;
    if !maintenance.is_empty()? {
        tracing::info!("the database already holds a shop; demo data not loaded");
        return Ok(());
    }
    let shop = ShopData::parse(DEMO_SHOP, timezone).context("the bundled demo shop")?;
    let summary = maintenance.import_shop(&shop)?;
    let user = ApiUser {
        login: "demo".to_owned(),
        password_sha1_hex: password_sha1_hex("demo"),
        scopes: Scopes::ALL,
    };
    maintenance.put_api_user(&user, Clock::System.now())?;
    tracing::info!(
        ?summary,
        "demo shop loaded; legacy user 'demo' with password 'demo'"
    );
    Ok(())
}

fn import(database: &Database, file: &Path, timezone: Tz) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let shop = ShopData::parse(&text, timezone)
        .with_context(|| format!("{} was not imported", file.display()))?;
    let summary = store::maintenance(database)?
        .import_shop(&shop)
        .with_context(|| format!("{} was not imported; nothing was written", file.display()))?;
    println!(
        "imported {}: {} orders, {} payments, {} returns, {} claims, {} payment forms",
        file.display(),
        summary.orders,
        summary.payments,
        summary.returns,
        summary.rmas,
        summary.payment_forms
    );
    Ok(())
}

fn add_user(database: &Database, login: &str, password: &str, scope: &str) -> anyhow::Result<()> {
    let scopes = parse_scopes(scope)?;
    anyhow::ensure!(!login.trim().is_empty(), "the login must not be empty");
    anyhow::ensure!(
        !login.contains(crate::refunds::LEGACY_LOGIN_FORBIDDEN),
        "the login must not contain '{}': that names API keys (key:NAME) and the service's own callers",
        crate::refunds::LEGACY_LOGIN_FORBIDDEN
    );
    anyhow::ensure!(!password.is_empty(), "the password must not be empty");
    let user = ApiUser {
        login: login.to_owned(),
        password_sha1_hex: password_sha1_hex(password),
        scopes,
    };
    store::maintenance(database)?.put_api_user(&user, Clock::System.now())?;
    println!("user {login} saved with scopes {}", scopes.to_list());
    Ok(())
}

fn add_admin_user(
    database: &Database,
    login: &str,
    password: &str,
    scope: &str,
) -> anyhow::Result<()> {
    let scopes = parse_scopes(scope)?;
    let user = admin_user(login, password, scopes)?;
    store::maintenance(database)?.put_admin_user(&user, Clock::System.now())?;
    println!("panel user {login} saved with scopes {}", scopes.to_list());
    Ok(())
}

fn parse_scopes(scope: &str) -> anyhow::Result<Scopes> {
    Scopes::parse(scope).with_context(|| format!("--scope '{scope}': use read, write, confirm"))
}

fn key(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create {
            database,
            name,
            scope,
        } => {
            let scopes = parse_scopes(&scope)?;
            anyhow::ensure!(!name.trim().is_empty(), "the key name must not be empty");
            let key = new_api_key()?;
            store::maintenance(&database.db)?.create_api_key(
                &name,
                &api_key_digest(&key),
                scopes,
                Clock::System.now(),
            )?;
            eprintln!(
                "key '{name}' created with scopes {}; it is shown only this once:",
                scopes.to_list()
            );
            println!("{key}");
        }
        KeyCommand::List { database, timezone } => {
            let keys = store::maintenance(&database.db)?.api_keys()?;
            let timezone = timezone.timezone;
            println!("{:<24} {:<20} {:<20} revoked", "name", "scopes", "created");
            for key in keys {
                let revoked = key
                    .revoked_at
                    .map(|at| format_local_datetime(at, timezone))
                    .unwrap_or_default();
                let created = format_local_datetime(key.created_at, timezone);
                println!(
                    "{:<24} {:<20} {:<20} {revoked}",
                    key.name,
                    key.scopes.to_list(),
                    created
                );
            }
        }
        KeyCommand::Revoke { database, name } => {
            let revoked =
                store::maintenance(&database.db)?.revoke_api_key(&name, Clock::System.now())?;
            anyhow::ensure!(revoked, "no live key named '{name}'");
            println!("key '{name}' revoked");
        }
    }
    Ok(())
}

fn outbox(database: &Database, include_done: bool, timezone: Tz) -> anyhow::Result<()> {
    let jobs = store::maintenance(database)?.jobs(include_done)?;
    println!(
        "{:<10} {:<12} {:<6} {:<8} {:<24} last error",
        "refund", "operator", "state", "attempts", "next attempt"
    );
    for job in &jobs {
        let next = format_local_datetime(job.next_attempt_ms.div_euclid(1000), timezone);
        println!(
            "{:<10} {:<12} {:<6} {:<8} {:<24} {}",
            job.refund_id,
            job.operator,
            job.state.as_str(),
            job.attempts,
            next,
            job.last_error.as_deref().unwrap_or("")
        );
    }
    eprintln!("{} job(s)", jobs.len());
    Ok(())
}

fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { database } => {
            let (entries, pending) = store::maintenance(&database.db)?.audit_entries(None)?;
            match crate::refunds::audit::verify(entries) {
                Ok(count) if pending == 0 => println!("audit chain intact: {count} entries"),
                Ok(count) => println!(
                    "audit chain intact: {count} entries, and {pending} newer not chained yet \
                     (the sealer chains them within moments)"
                ),
                Err(broken) => anyhow::bail!(
                    "audit chain broken at entry {}: {}",
                    broken.seq,
                    broken.reason
                ),
            }
        }
        AuditCommand::Prove {
            database,
            payment,
            anchor,
            json,
            file,
        } => prove(&database.db, payment, anchor, json, file.as_deref())?,
        AuditCommand::Head { database } => {
            let head = read_ledger(&database.db, |ledger| ledger.audit_head())?;
            println!("{} {}", head.seq, head.hash);
        }
        AuditCommand::Show {
            database,
            refund,
            timezone,
        } => {
            let (entries, _) = store::maintenance(&database.db)?.audit_entries(Some(refund))?;
            let timezone = timezone.timezone;
            for chained in &entries {
                let entry = &chained.entry;
                println!(
                    "#{} {} {} via {} {}: {} {} -> {} {} {} (request {})",
                    chained.seq,
                    format_local_datetime(entry.at, timezone),
                    entry.caller,
                    entry.channel,
                    entry.operation,
                    entry.status_before.as_deref().unwrap_or("-"),
                    entry
                        .amount_before
                        .map_or_else(|| "-".to_owned(), |amount| amount.to_string()),
                    entry.status_after,
                    entry.amount_after,
                    entry.currency,
                    entry.request_id.as_deref().unwrap_or("-"),
                );
            }
            eprintln!(
                "{} entr{} for refund {refund} (amounts in minor units)",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" }
            );
        }
    }
    Ok(())
}

/// Runs `work` in one read transaction of the ledger at `database`.
fn read_ledger<T: Send + 'static>(
    database: &Database,
    work: impl FnMut(&mut dyn Ledger) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let store = store::open(database)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(store.scan(work));
    store.close();
    result
}

fn prove(
    database: &Database,
    payment: Option<i64>,
    anchor: Option<i64>,
    json: bool,
    file: Option<&Path>,
) -> anyhow::Result<()> {
    let proof = match (file, payment) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let document: serde_json::Value =
                serde_json::from_str(&text).context("the proof is not JSON")?;
            proof_format::from_json(&document).context("the proof document is not valid")?
        }
        (None, Some(payment)) => read_ledger(database, move |ledger| {
            proof::build(ledger, payment, anchor).map_err(|error| match error {
                RefundError::Internal(error) => error,
                business => anyhow::anyhow!("{business}"),
            })
        })?,
        (None, None) => anyhow::bail!("give --payment ID or --file PROOF.json"),
    };
    let verdict = proof::verify(&proof);
    if json {
        println!("{:#}", proof_format::to_json(&proof, &verdict));
    } else {
        println!(
            "payment {}: paid {} {}, live refunds {} (ledger's running total {}), {} refund(s), head #{} {}",
            proof.payment_id,
            proof.paid.minor,
            proof.paid.currency,
            verdict.live_total_minor,
            proof.recorded_refunded_minor,
            proof.refunds.len(),
            proof.head.seq,
            proof.head.hash
        );
    }
    if verdict.holds() {
        eprintln!("proof holds: live refunds within what was paid, every audit entry recomputes");
        Ok(())
    } else {
        anyhow::bail!("proof does not hold: {}", verdict.problems.join("; "))
    }
}

fn backup(database: &Database, out: &Path) -> anyhow::Result<()> {
    store::maintenance(database)?.backup(out)?;
    println!("backed up {database} to {}", out.display());
    Ok(())
}
