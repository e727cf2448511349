//! The admin panel's side of the domain: its users, sign-in with throttling, sessions, and the
//! reads its pages show beyond the nine operations. No HTML here: `crate::admin` renders it.
//!
//! A panel user's actions are not run here: the panel calls the nine operations through the
//! operation registry like every face, presenting its session as [`Credentials::PanelSession`],
//! so the rules, fault codes, scopes, maker-checker and idempotency are the API's.

use argon2::{PasswordHash, PasswordHasher as _, PasswordVerifier as _};
use chrono::{DateTime, Days, NaiveDate, TimeZone as _};
use sha2::Digest as _;

use super::audit::{self, AuditEntry, GENESIS};
use super::types::{
    AdminSession, AdminUser, Payment, Refund, RefundJob, RefundMethod, RefundStatus, Scopes,
    Source, SourceRef, SourceType,
};
use super::{Caller, Channel, RefundError, RefundService, StoredResponse};
use crate::refunds::ledger::Ledger;

/// A session ends after this long without a request.
pub const SESSION_IDLE_SECONDS: i64 = 30 * 60;
/// A session ends this long after sign-in, however busy.
pub const SESSION_ABSOLUTE_SECONDS: i64 = 8 * 3600;
/// A session's last use is written at most this often (one write per minute, not per page); the
/// idle timeout is therefore exact to within a minute.
const SESSION_TOUCH_SECONDS: i64 = 60;
/// Failed sign-ins are counted over this window.
pub const THROTTLE_WINDOW_SECONDS: i64 = 15 * 60;
/// Failed sign-ins for one login within the window before it is refused without a check.
pub const MAX_FAILURES_PER_LOGIN: u32 = 5;
/// Failed sign-ins from one address within the window (guessing across many logins).
pub const MAX_FAILURES_PER_ADDRESS: u32 = 20;

/// The caller login of a panel user (what the audit trail and idempotency keys record): `panel:{login}`, so a panel user is
/// never taken for a legacy API user of the same name (by maker-checker, say).
pub fn panel_caller_login(login: &str) -> String {
    format!("panel:{login}")
}

/// An argon2id hash (the crate's default parameters: 19 MiB, 2 passes) in PHC string form.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let hash: PasswordHash = argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|error| anyhow::anyhow!("hashing the password: {error}"))?;
    Ok(hash.to_string())
}

fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Verified against when the login does not exist, so that a wrong login takes as long as a
/// wrong password and does not reveal which logins exist.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("no such user").unwrap_or_default())
}

fn random_hex_128() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("no randomness: {error}"))?;
    Ok(hex::encode(bytes))
}

/// A fresh form token: the idempotency key of one action, so a double click runs it once.
pub fn new_form_token() -> Result<String, RefundError> {
    Ok(random_hex_128()?)
}

fn session_digest(session_id: &str) -> String {
    hex::encode(sha2::Sha256::digest(session_id.as_bytes()))
}

/// A new session: the id for the browser's cookie (kept only hashed) and its CSRF token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub session_id: String,
    pub csrf_token: String,
}

#[derive(Debug)]
pub enum SignInError {
    /// The login or the password is wrong (which one is not said).
    WrongCredentials,
    /// Too many failed sign-ins for this login or from this address lately.
    Throttled,
    Failed(RefundError),
}

impl From<RefundError> for SignInError {
    fn from(error: RefundError) -> SignInError {
        SignInError::Failed(error)
    }
}

/// A signed-in panel user, as one request sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelSession {
    pub caller: Caller,
    /// The panel user's own login (the caller's is `panel:{login}`).
    pub login: String,
    pub csrf_token: String,
}

/// One payment of a source page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentOverview {
    pub payment: Payment,
    /// Automatic refunds confirmed from it (`Processing` or `Completed`).
    pub refunded_minor: i64,
    /// Automatic refunds added and waiting for approval (`New`).
    pub reserved_minor: i64,
    pub refundable_minor: i64,
}

/// An order, return or claim with its payments and refunds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOverview {
    pub source: Source,
    pub payments: Vec<PaymentOverview>,
    /// The refunds of this source (for an order: all refunds of the order), oldest first.
    pub refunds: Vec<Refund>,
}

/// A refund with its audit history and outbox job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundHistory {
    pub refund: Refund,
    pub entries: Vec<AuditEntry>,
    /// Each of the refund's entries matches its hash and links to the entry before it.
    pub chain_verifies: bool,
    pub job: Option<RefundJob>,
}

/// Refunds added on one local day, by their status now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCounts {
    pub date: NaiveDate,
    /// In the order of [`CHART_STATUSES`].
    pub counts: [u64; 5],
}

pub const CHART_STATUSES: [RefundStatus; 5] = [
    RefundStatus::New,
    RefundStatus::Processing,
    RefundStatus::Completed,
    RefundStatus::Failed,
    RefundStatus::Canceled,
];

/// What an id typed into the search box names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Refund(i64),
    Source(SourceRef),
}

impl RefundService {
    /// Checks a panel user's password and opens a new session (always a new id, so a session id
    /// planted before sign-in is worth nothing). Throttled per login and per address.
    pub async fn sign_in(
        &self,
        login: &str,
        password: &str,
        address: &str,
    ) -> Result<SignedIn, SignInError> {
        let now = self.clock.now();
        let login_subject = format!("login:{login}");
        let address_subject = format!("address:{address}");
        let since = now - THROTTLE_WINDOW_SECONDS;
        let (subjects, wanted) = (
            (login_subject.clone(), address_subject.clone()),
            login.to_owned(),
        );
        let (throttled, user) = self
            .store
            .read(move |ledger| {
                let throttled = ledger.sign_in_failures(&subjects.0, since)?
                    >= MAX_FAILURES_PER_LOGIN
                    || ledger.sign_in_failures(&subjects.1, since)? >= MAX_FAILURES_PER_ADDRESS;
                Ok::<_, RefundError>((throttled, ledger.admin_user(&wanted)?))
            })
            .await?;
        if throttled {
            return Err(SignInError::Throttled);
        }
        let hash = user.as_ref().map_or_else(
            || dummy_hash().to_owned(),
            |user| user.password_hash.clone(),
        );
        let password = password.to_owned();
        // argon2 takes tens of milliseconds of CPU: off the async threads.
        let matches = tokio::task::spawn_blocking(move || password_matches(&hash, &password))
            .await
            .map_err(|error| RefundError::Internal(anyhow::anyhow!("password check: {error}")))?;
        let Some(user) = user.filter(|_| matches) else {
            self.store
                .write(move |ledger| {
                    ledger.record_sign_in_failure(&login_subject, now)?;
                    ledger.record_sign_in_failure(&address_subject, now)?;
                    Ok::<_, RefundError>(())
                })
                .await?;
            return Err(SignInError::WrongCredentials);
        };
        let signed_in = SignedIn {
            session_id: random_hex_128().map_err(RefundError::from)?,
            csrf_token: random_hex_128().map_err(RefundError::from)?,
        };
        let session = AdminSession {
            id_sha256: session_digest(&signed_in.session_id),
            login: user.login,
            csrf_token: signed_in.csrf_token.clone(),
            created_at: now,
            last_seen_at: now,
        };
        self.store
            .write(move |ledger| {
                ledger.clear_sign_in_failures(&login_subject)?;
                ledger.create_session(&session)?;
                Ok::<_, RefundError>(())
            })
            .await?;
        Ok(signed_in)
    }

    /// The signed-in user of a session id from a cookie; `Unauthenticated` for an unknown,
    /// signed-out or expired session (an expired one is ended).
    pub async fn panel_session(
        &self,
        session_id: &str,
        request_id: Option<String>,
    ) -> Result<PanelSession, RefundError> {
        let now = self.clock.now();
        let digest = session_digest(session_id);
        let wanted = digest.clone();
        let found = self
            .store
            .read(move |ledger| {
                let Some(session) = ledger.session(&wanted)? else {
                    return Ok::<_, RefundError>(None);
                };
                let user = ledger.admin_user(&session.login)?;
                Ok(user.map(|user| (session, user)))
            })
            .await?;
        let Some((session, user)) = found else {
            return Err(RefundError::Unauthenticated);
        };
        let expired = now - session.last_seen_at > SESSION_IDLE_SECONDS
            || now - session.created_at > SESSION_ABSOLUTE_SECONDS;
        if expired || now - session.last_seen_at >= SESSION_TOUCH_SECONDS {
            self.store
                .write(move |ledger| {
                    if expired {
                        ledger.end_session(&digest)?;
                    } else {
                        ledger.touch_session(&digest, now)?;
                    }
                    Ok::<_, RefundError>(())
                })
                .await?;
        }
        if expired {
            return Err(RefundError::Unauthenticated);
        }
        Ok(PanelSession {
            caller: Caller {
                login: panel_caller_login(&user.login),
                scopes: user.scopes,
                channel: Channel::Admin,
                request_id,
            },
            login: user.login,
            csrf_token: session.csrf_token,
        })
    }

    /// The caller's login and scopes for a panel session (see [`RefundService::authenticate`]).
    pub(super) async fn panel_session_caller(
        &self,
        session_id: &str,
    ) -> Result<(String, Scopes), RefundError> {
        let session = self.panel_session(session_id, None).await?;
        Ok((session.caller.login, session.caller.scopes))
    }

    /// Ends a session on the server: its cookie no longer works anywhere.
    pub async fn sign_out(&self, session_id: &str) -> Result<(), RefundError> {
        let digest = session_digest(session_id);
        self.store
            .write(move |ledger| Ok(ledger.end_session(&digest)?))
            .await
    }

    /// Forgets expired sessions and failed sign-ins older than the throttling window; returns
    /// how many rows went.
    pub async fn purge_panel_records(&self) -> Result<u64, RefundError> {
        let now = self.clock.now();
        self.store
            .write(move |ledger| {
                Ok(ledger.purge_panel_records(
                    now - SESSION_IDLE_SECONDS,
                    now - SESSION_ABSOLUTE_SECONDS,
                    now - THROTTLE_WINDOW_SECONDS,
                )?)
            })
            .await
    }

    /// The answer a panel action stored under its form token (its idempotency key).
    pub async fn panel_answer(
        &self,
        caller: &Caller,
        form_token: &str,
    ) -> Result<Option<StoredResponse>, RefundError> {
        let (login, key) = (caller.login.clone(), form_token.to_owned());
        self.store
            .read(move |ledger| {
                Ok(ledger
                    .idempotent_answer(&login, &key)?
                    .map(|(_, answer)| answer))
            })
            .await
    }

    /// An order, return or claim with its payments (paid, refunded, reserved, refundable) and
    /// refunds.
    pub async fn source_overview(&self, at: SourceRef) -> Result<SourceOverview, RefundError> {
        self.store
            .read(move |ledger| {
                let source = ledger.source(at)?.ok_or(RefundError::SourceNotFound {
                    source_type: at.source_type.as_str(),
                    id: at.id,
                })?;
                let all_refunds = ledger.order_refunds(source.order.id)?;
                let payments = ledger
                    .order_payments(source.order.id)?
                    .into_iter()
                    .map(|payment| payment_overview(payment, &all_refunds))
                    .collect();
                let refunds = all_refunds
                    .into_iter()
                    .filter(|refund| at.source_type == SourceType::Order || refund.source == at)
                    .collect();
                Ok(SourceOverview {
                    source,
                    payments,
                    refunds,
                })
            })
            .await
    }

    /// A refund with its audit entries, whether they verify, and its outbox job; `None` for an
    /// id that is not a refund.
    pub async fn refund_history(
        &self,
        refund_id: i64,
    ) -> Result<Option<RefundHistory>, RefundError> {
        self.store
            .read(move |ledger| {
                let Some(refund) = ledger.refund(refund_id)? else {
                    return Ok(None);
                };
                let (chained, _pending) = ledger.refund_audit(refund_id)?;
                let chain_verifies = entries_verify(ledger, &chained)?;
                Ok(Some(RefundHistory {
                    refund,
                    entries: chained.into_iter().map(|chained| chained.entry).collect(),
                    chain_verifies,
                    job: ledger.job(refund_id)?,
                }))
            })
            .await
    }

    /// Refunds added on each of the last `days` local days (today last), by status now.
    pub async fn refunds_per_day(&self, days: u32) -> Result<Vec<DayCounts>, RefundError> {
        let timezone = self.timezone;
        let now = self.clock.now();
        let today = DateTime::from_timestamp(now, 0)
            .ok_or_else(|| anyhow::anyhow!("the clock is out of range"))?
            .with_timezone(&timezone)
            .date_naive();
        let first = today
            .checked_sub_days(Days::new(u64::from(days.saturating_sub(1))))
            .ok_or_else(|| anyhow::anyhow!("the chart's first day is out of range"))?;
        let since = first
            .and_hms_opt(0, 0, 0)
            .and_then(|midnight| timezone.from_local_datetime(&midnight).earliest())
            .map_or(now - i64::from(days) * 86_400, |at| at.timestamp());
        // Hours are counted in SQL, days here: the shop's midnight is not a UTC hour everywhere,
        // but SQL does not know the shop's time zone (half-hour zones land in the later day).
        // It walks every refund added since: a long read, off the async threads.
        let hourly = self
            .store
            .scan(move |ledger| Ok::<_, RefundError>(ledger.hourly_refund_counts(since)?))
            .await?;
        let mut chart: Vec<DayCounts> = (0..days)
            .filter_map(|offset| first.checked_add_days(Days::new(u64::from(offset))))
            .map(|date| DayCounts {
                date,
                counts: [0; 5],
            })
            .collect();
        for hour in hourly {
            let Some(date) = DateTime::from_timestamp(hour.hour_start, 0)
                .map(|at| at.with_timezone(&timezone).date_naive())
            else {
                continue;
            };
            let column = CHART_STATUSES.iter().position(|s| *s == hour.status);
            if let (Some(day), Some(column)) = (chart.iter_mut().find(|d| d.date == date), column) {
                day.counts[column] += hour.count;
            }
        }
        Ok(chart)
    }

    /// What `id` names: a refund, an order, a return, a claim (an id can name several).
    pub async fn find_by_id(&self, id: i64) -> Result<Vec<Found>, RefundError> {
        self.store
            .read(move |ledger| {
                let mut found = Vec::new();
                if ledger.refund(id)?.is_some() {
                    found.push(Found::Refund(id));
                }
                for source_type in SourceType::ALL {
                    let at = SourceRef { source_type, id };
                    if ledger.source(at)?.is_some() {
                        found.push(Found::Source(at));
                    }
                }
                Ok(found)
            })
            .await
    }
}

fn payment_overview(payment: Payment, refunds: &[Refund]) -> PaymentOverview {
    let drawn = |wanted: &dyn Fn(RefundStatus) -> bool| -> i64 {
        refunds
            .iter()
            .filter(|refund| {
                refund.method
                    == RefundMethod::Automatic {
                        payment_id: payment.id,
                    }
                    && wanted(refund.status)
            })
            .map(|refund| refund.amount.minor)
            .sum()
    };
    let refunded_minor =
        drawn(&|status| matches!(status, RefundStatus::Processing | RefundStatus::Completed));
    let reserved_minor = drawn(&|status| status == RefundStatus::New);
    PaymentOverview {
        refundable_minor: payment.refundable_minor(),
        refunded_minor,
        reserved_minor,
        payment,
    }
}

/// Checks one refund's entries without walking the whole chain: each matches its own hash and
/// names as its predecessor the entry really at the position before it.
fn entries_verify(
    ledger: &mut dyn Ledger,
    chained: &[audit::ChainedEntry],
) -> anyhow::Result<bool> {
    for entry in chained {
        if audit::entry_hash(&entry.prev_hash, &entry.entry) != entry.hash {
            return Ok(false);
        }
        let before = if entry.seq <= 1 {
            Some(GENESIS.to_owned())
        } else {
            ledger
                .audit_chain_from(entry.seq - 1, 1)?
                .into_iter()
                .find(|before| before.seq == entry.seq - 1)
                .map(|before| before.hash)
        };
        if before.as_deref() != Some(entry.prev_hash.as_str()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A panel user with a freshly hashed password.
pub fn admin_user(login: &str, password: &str, scopes: Scopes) -> anyhow::Result<AdminUser> {
    anyhow::ensure!(!login.trim().is_empty(), "the login must not be empty");
    anyhow::ensure!(!password.is_empty(), "the password must not be empty");
    Ok(AdminUser {
        login: login.to_owned(),
        password_hash: hash_password(password)?,
        scopes,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::Clock;
    use crate::refunds::Policy;
    use crate::refunds::ledger::{AuditSealing, LedgerStore};
    use crate::refunds::outbox::OperatorRouting;
    use crate::refunds::testutil::{MemoryLedger, MemoryStore};

    const T0: i64 = 1_700_000_000;

    fn store_with_user() -> Arc<MemoryStore> {
        let mut ledger = MemoryLedger::default();
        ledger.admin_users.insert(
            "clerk".to_owned(),
            admin_user("clerk", "clerk-pw", Scopes::ALL).expect("user"),
        );
        Arc::new(MemoryStore::new(ledger, AuditSealing::InTransaction))
    }

    /// The service over `store` with its clock at `at`.
    fn at(store: &Arc<MemoryStore>, at: i64) -> RefundService {
        let store: Arc<dyn LedgerStore> = store.clone();
        RefundService::new(
            store,
            Clock::Fixed(at),
            chrono_tz::Europe::Warsaw,
            Policy::new(OperatorRouting::single("sandbox")),
        )
    }

    #[tokio::test]
    async fn a_session_ends_after_30_idle_minutes() {
        let store = store_with_user();
        let signed_in = at(&store, T0)
            .sign_in("clerk", "clerk-pw", "127.0.0.1")
            .await
            .expect("signed in");
        assert_eq!(signed_in.session_id.len(), 32);
        assert!(
            !store
                .snapshot()
                .sessions
                .contains_key(&signed_in.session_id),
            "only the id's hash is stored"
        );
        // Used at 29 minutes: still valid, and the idle clock starts again.
        let session = at(&store, T0 + 29 * 60)
            .panel_session(&signed_in.session_id, None)
            .await
            .expect("valid at 29 minutes");
        assert_eq!(session.caller.login, "panel:clerk");
        assert_eq!(session.caller.channel, Channel::Admin);
        assert!(
            at(&store, T0 + 58 * 60)
                .panel_session(&signed_in.session_id, None)
                .await
                .is_ok()
        );
        // 31 minutes after its last use: gone, and ended on the server.
        let late = at(&store, T0 + 58 * 60 + 31 * 60)
            .panel_session(&signed_in.session_id, None)
            .await;
        assert!(matches!(late, Err(RefundError::Unauthenticated)));
        assert!(store.snapshot().sessions.is_empty());
    }

    #[tokio::test]
    async fn a_busy_session_still_ends_8_hours_after_sign_in() {
        let store = store_with_user();
        let signed_in = at(&store, T0)
            .sign_in("clerk", "clerk-pw", "127.0.0.1")
            .await
            .expect("signed in");
        let mut now = T0;
        while now + 20 * 60 <= T0 + 8 * 3600 {
            now += 20 * 60;
            assert!(
                at(&store, now)
                    .panel_session(&signed_in.session_id, None)
                    .await
                    .is_ok()
            );
        }
        let after = at(&store, T0 + 8 * 3600 + 60)
            .panel_session(&signed_in.session_id, None)
            .await;
        assert!(matches!(after, Err(RefundError::Unauthenticated)));
    }

    #[tokio::test]
    async fn sign_ins_are_throttled_per_address_across_logins() {
        let store = store_with_user();
        let service = at(&store, T0);
        for attempt in 0..MAX_FAILURES_PER_ADDRESS {
            let login = format!("guess-{attempt}");
            assert!(matches!(
                service.sign_in(&login, "x", "10.0.0.9").await,
                Err(SignInError::WrongCredentials)
            ));
        }
        assert!(matches!(
            service.sign_in("clerk", "clerk-pw", "10.0.0.9").await,
            Err(SignInError::Throttled)
        ));
        // Another address is not held up, and the window passes.
        assert!(
            service
                .sign_in("clerk", "clerk-pw", "10.0.0.10")
                .await
                .is_ok()
        );
        let later = at(&store, T0 + THROTTLE_WINDOW_SECONDS + 1);
        assert!(later.sign_in("clerk", "clerk-pw", "10.0.0.9").await.is_ok());
        // Housekeeping forgets the old failures.
        assert!(
            later.purge_panel_records().await.expect("purged")
                >= u64::from(MAX_FAILURES_PER_ADDRESS)
        );
        assert!(store.snapshot().sign_in_failures.is_empty());
    }

    #[tokio::test]
    async fn a_wrong_password_and_an_unknown_login_look_alike() {
        let store = store_with_user();
        let service = at(&store, T0);
        assert!(matches!(
            service.sign_in("clerk", "wrong", "127.0.0.1").await,
            Err(SignInError::WrongCredentials)
        ));
        assert!(matches!(
            service.sign_in("nobody", "clerk-pw", "127.0.0.1").await,
            Err(SignInError::WrongCredentials)
        ));
        assert!(store.snapshot().sessions.is_empty());
    }

    #[test]
    fn passwords_are_argon2id_hashes() {
        let user = admin_user("clerk", "clerk-pw", Scopes::ALL).expect("user");
        assert!(
            user.password_hash.starts_with("$argon2id$"),
            "{}",
            user.password_hash
        );
        assert!(password_matches(&user.password_hash, "clerk-pw"));
        assert!(!password_matches(&user.password_hash, "clerk-pw "));
    }
}
