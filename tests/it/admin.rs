//! The admin panel over HTTP: sign-in and sessions, actions through the operation registry
//! (audit actor, channel, maker-checker, scopes, double submits), security headers, CSRF and
//! cross-site refusals, throttled sign-ins, and escaping of ledger values.

use refunds_gateway::refunds::panel::admin_user;
use refunds_gateway::refunds::types::Scopes;
use refunds_gateway::store;

use crate::support::{
    Backend, LedgerAt, TestLedger, TestServer, fixed_now, off_runtime, on_both_backends,
    verify_once_chained,
};

const COOKIE: &str = "__Host-refunds-panel";

pub fn add_panel_user(
    ledger: &(impl LedgerAt + ?Sized),
    login: &str,
    password: &str,
    scopes: Scopes,
) {
    let user = admin_user(login, password, scopes).expect("panel user");
    let database = ledger.database();
    off_runtime(|| {
        store::maintenance(&database)
            .expect("open database")
            .put_admin_user(&user, fixed_now())
            .expect("save panel user")
    });
}

/// A client that shows redirects instead of following them and keeps no cookies of its own.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the first field named `name` (values printed by the panel are escaped;
    /// the tokens read with this are hex).
    fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker).unwrap_or_else(|| {
            panic!("no field {name} in:\n{}", self.body);
        }) + marker.len();
        let end = self.body[start..].find('"').expect("closing quote") + start;
        self.body[start..end].to_owned()
    }

    /// The fields of the form whose submit button is named `button`.
    fn form_of(&self, button: &str) -> Vec<(String, String)> {
        let at = self
            .body
            .find(&format!(">{button}</button>"))
            .unwrap_or_else(|| panic!("no button {button:?} in:\n{}", self.body));
        let start = self.body[..at].rfind("<form").expect("form start");
        let form = &self.body[start..at];
        let mut fields = Vec::new();
        let mut rest = form;
        while let Some(index) = rest.find("type=\"hidden\" name=\"") {
            rest = &rest[index + "type=\"hidden\" name=\"".len()..];
            let name_end = rest.find('"').expect("name end");
            let name = rest[..name_end].to_owned();
            let value_start = rest.find("value=\"").expect("value") + "value=\"".len();
            let value_end = rest[value_start..].find('"').expect("value end") + value_start;
            fields.push((name, rest[value_start..value_end].replace("&#38;", "&")));
        }
        fields
    }
}

struct Panel {
    base: String,
    http: reqwest::Client,
    session: String,
}

impl Panel {
    async fn sign_in(base: &str, login: &str, password: &str) -> Panel {
        let http = browser();
        let page = post(
            &http,
            base,
            None,
            "/admin/login",
            &[("login", login), ("password", password)],
            &[],
        )
        .await;
        assert_eq!(page.status, 303, "{}", page.body);
        assert_eq!(page.location(), "/admin");
        let cookie = page
            .headers
            .get("set-cookie")
            .and_then(|value| value.to_str().ok())
            .expect("a session cookie")
            .to_owned();
        assert!(
            cookie.ends_with("; Secure; HttpOnly; SameSite=Strict; Path=/"),
            "{cookie}"
        );
        let session = cookie
            .strip_prefix(&format!("{COOKIE}="))
            .and_then(|rest| rest.split(';').next())
            .expect("cookie value")
            .to_owned();
        assert_eq!(session.len(), 32, "128 random bits in hex");
        Panel {
            base: base.to_owned(),
            http,
            session,
        }
    }

    async fn get(&self, path: &str) -> Page {
        get(&self.http, &self.base, Some(&self.session), path).await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        post(
            &self.http,
            &self.base,
            Some(&self.session),
            path,
            fields,
            &[("sec-fetch-site", "same-origin")],
        )
        .await
    }

    /// Presses `button` on the page at `path` and follows the redirect.
    async fn press(&self, path: &str, button: &str, extra: &[(&str, &str)]) -> (Page, Page) {
        let page = self.get(path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let action = form_action(&page.body, button);
        let mut fields = page.form_of(button);
        for (name, value) in extra {
            fields.retain(|(field, _)| field != name);
            fields.push(((*name).to_owned(), (*value).to_owned()));
        }
        let borrowed: Vec<(&str, &str)> = fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let posted = self.post(&action, &borrowed).await;
        let shown = if posted.status == 303 {
            self.get(posted.location()).await
        } else {
            get(&self.http, &self.base, Some(&self.session), "/admin").await
        };
        (posted, shown)
    }
}

fn form_action(body: &str, button: &str) -> String {
    let at = body
        .find(&format!(">{button}</button>"))
        .unwrap_or_else(|| panic!("no button {button:?}"));
    let start = body[..at].rfind("<form").expect("form start");
    let form = &body[start..at];
    let index = form.find("action=\"").expect("action") + "action=\"".len();
    let end = form[index..].find('"').expect("action end") + index;
    form[index..end].to_owned()
}

async fn get(http: &reqwest::Client, base: &str, session: Option<&str>, path: &str) -> Page {
    let mut request = http.get(format!("{base}{path}"));
    if let Some(session) = session {
        request = request.header("cookie", format!("{COOKIE}={session}"));
    }
    page(request.send().await.expect("sent")).await
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    session: Option<&str>,
    path: &str,
    fields: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Page {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut request = http
        .post(format!("{base}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(session) = session {
        request = request.header("cookie", format!("{COOKIE}={session}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    page(request.send().await.expect("sent")).await
}

async fn page(response: reqwest::Response) -> Page {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("body");
    Page {
        status,
        headers,
        body,
    }
}

/// Adds a manual refund of `amount` PLN to order 2001 through the panel's source page.
async fn add_manual_refund(panel: &Panel, amount: &str, account: &str) -> Page {
    let (posted, shown) = panel
        .press(
            "/admin/orders/2001",
            "Add manual refund",
            &[
                ("refundValue", amount),
                ("refundDetails.paymentFormId", "5"),
                ("refundDetails.account", account),
                (
                    "refundDetails.clientAccount",
                    "\"quoted\" 'single' javascript:alert(2)",
                ),
            ],
        )
        .await;
    assert_eq!(posted.status, 303, "{}", posted.body);
    shown
}

fn newest_refund(ledger: &TestLedger) -> i64 {
    ledger.count("SELECT max(id) FROM refunds")
}

on_both_backends!(panel_actions_are_the_registry_operations_with_the_panel_user_as_caller);
async fn panel_actions_are_the_registry_operations_with_the_panel_user_as_caller(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    add_panel_user(&ledger, "clerk", "clerk-pw", Scopes::ALL);
    let server = TestServer::start_with(ledger.config()).await;
    let panel = Panel::sign_in(&server.base, "clerk", "clerk-pw").await;

    let shown = add_manual_refund(&panel, "12.50", "PL61 1090").await;
    let refund = newest_refund(&ledger);
    assert!(
        shown.body.contains(&format!("Refund {refund} added.")),
        "{}",
        shown.body
    );
    assert!(shown.body.contains("role=\"status\""));

    // The list is retrieveRefundsList; editing, then confirming, go through the registry.
    let list = panel.get("/admin").await;
    assert!(
        list.body
            .contains("<caption>Refunds awaiting approval</caption>")
    );
    assert!(
        list.body
            .contains(&format!(">Confirm refund {refund}</button>"))
    );
    let (_, shown) = panel
        .press(
            &format!("/admin?edit={refund}"),
            &format!("Save amount of refund {refund}"),
            &[("refundValue", "10.00")],
        )
        .await;
    assert!(
        shown
            .body
            .contains(&format!("Amount of refund {refund} changed.")),
        "{}",
        shown.body
    );
    let (_, shown) = panel
        .press("/admin", &format!("Confirm refund {refund}"), &[])
        .await;
    assert!(
        shown.body.contains(&format!("Refund {refund} confirmed.")),
        "{}",
        shown.body
    );
    assert!(
        !shown
            .body
            .contains(&format!(">Confirm refund {refund}</button>"))
    );

    verify_once_chained(&ledger).await;
    let shown = crate::support::gateway()
        .args(["audit", "show", "--db"])
        .arg(ledger.db_arg())
        .args(["--refund", &refund.to_string()])
        .output()
        .expect("audit show");
    let trail: Vec<String> = String::from_utf8_lossy(&shown.stdout)
        .lines()
        .map(|line| {
            let at = line
                .find("panel:")
                .unwrap_or_else(|| panic!("no caller in {line}"));
            // "{caller} via {face} {operation}: {before} -> {after} …"
            line[at..].split(": ").next().unwrap_or_default().to_owned()
        })
        .collect();
    let expected = ["addManualRefund", "updateRefund", "confirmRefund"]
        .map(|operation| format!("panel:clerk via admin {operation}"));
    assert_eq!(trail, expected);

    // The refund page shows the history with who and through which face, and the chain.
    let page = panel.get(&format!("/admin/refunds/{refund}")).await;
    assert!(
        page.body
            .contains("<td>panel:clerk</td><td>admin</td><td>confirmRefund</td>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("verifies"));
    server.stop().await;
}

on_both_backends!(a_double_submitted_form_runs_its_operation_once);
async fn a_double_submitted_form_runs_its_operation_once(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    add_panel_user(&ledger, "clerk", "clerk-pw", Scopes::ALL);
    let server = TestServer::start_with(ledger.config()).await;
    let panel = Panel::sign_in(&server.base, "clerk", "clerk-pw").await;
    let page = panel.get("/admin/orders/2001").await;
    let mut fields = page.form_of("Add manual refund");
    fields.extend(
        [
            ("refundValue", "3.00"),
            ("refundDetails.paymentFormId", "5"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned())),
    );
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let before = ledger.count("SELECT count(*) FROM refunds");
    let first = panel.post("/admin/actions/addManualRefund", &fields).await;
    let second = panel.post("/admin/actions/addManualRefund", &fields).await;
    assert_eq!((first.status, second.status), (303, 303));
    assert_eq!(first.location(), second.location());
    assert_eq!(ledger.count("SELECT count(*) FROM refunds"), before + 1);
    server.stop().await;
}

on_both_backends!(business_errors_show_the_api_message_next_to_the_row);
async fn business_errors_show_the_api_message_next_to_the_row(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    add_panel_user(&ledger, "clerk", "clerk-pw", Scopes::ALL);
    let mut config = ledger.config();
    config.require_second_approver = true;
    let server = TestServer::start_with(config).await;
    let panel = Panel::sign_in(&server.base, "clerk", "clerk-pw").await;
    add_manual_refund(&panel, "20.00", "-").await;
    let refund = newest_refund(&ledger);

    // Maker-checker: the panel user who added it may not confirm it (4021).
    let (_, shown) = panel
        .press("/admin", &format!("Confirm refund {refund}"), &[])
        .await;
    let row_start = shown
        .body
        .find(&format!("<tr id=\"refund-{refund}\">"))
        .expect("row");
    let row =
        &shown.body[row_start..row_start + shown.body[row_start..].find("</tr>").expect("row end")];
    assert!(
        row.contains(&format!(
            "role=\"alert\" id=\"problem-{refund}\">refund {refund} must be confirmed by someone other than who added it (faultCode 4021)"
        )),
        "{row}"
    );

    // More than is left: the API's 4003 message, next to the row; nothing changed.
    let (_, shown) = panel
        .press(
            &format!("/admin?edit={refund}"),
            &format!("Save amount of refund {refund}"),
            &[("refundValue", "9999.00")],
        )
        .await;
    assert!(
        shown
            .body
            .contains("amount greater than what can be refunded: at most"),
        "{}",
        shown.body
    );
    assert!(shown.body.contains("(faultCode 4003)"));
    assert_eq!(
        ledger.count(&format!(
            "SELECT amount_minor FROM refunds WHERE id = {refund}"
        )),
        2000
    );

    // Cancel asks first; the second step cancels.
    let asked = panel.get(&format!("/admin?cancel={refund}")).await;
    assert!(
        asked
            .body
            .contains(&format!(">Yes, cancel refund {refund}</button>"))
    );
    assert_eq!(
        ledger.count(&format!(
            "SELECT count(*) FROM refunds WHERE id = {refund} AND status = 'New'"
        )),
        1,
        "asking changes nothing"
    );
    let (_, shown) = panel
        .press(
            &format!("/admin?cancel={refund}"),
            &format!("Yes, cancel refund {refund}"),
            &[],
        )
        .await;
    assert!(
        shown.body.contains(&format!("Refund {refund} canceled.")),
        "{}",
        shown.body
    );
    server.stop().await;
}

on_both_backends!(a_panel_user_without_the_scope_is_refused);
async fn a_panel_user_without_the_scope_is_refused(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    add_panel_user(&ledger, "clerk", "clerk-pw", Scopes::ALL);
    let writer = Scopes {
        read: true,
        write: true,
        confirm: false,
    };
    add_panel_user(&ledger, "junior", "junior-pw", writer);
    let server = TestServer::start_with(ledger.config()).await;
    let clerk = Panel::sign_in(&server.base, "clerk", "clerk-pw").await;
    add_manual_refund(&clerk, "5.00", "-").await;
    let refund = newest_refund(&ledger);
    let junior = Panel::sign_in(&server.base, "junior", "junior-pw").await;
    let (posted, _) = junior
        .press("/admin", &format!("Confirm refund {refund}"), &[])
        .await;
    assert_eq!(posted.status, 403);
    assert!(
        posted.body.contains("needs scope &#39;confirm&#39;"),
        "{}",
        posted.body
    );
    assert_eq!(
        ledger.count(&format!(
            "SELECT count(*) FROM refunds WHERE id = {refund} AND status = 'New'"
        )),
        1
    );
    server.stop().await;
}

on_both_backends!(every_panel_answer_carries_the_security_headers);
async fn every_panel_answer_carries_the_security_headers(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    add_panel_user(&ledger, "clerk", "clerk-pw", Scopes::ALL);
    let server = TestServer::start_with(ledger.config()).await;
    let panel = Panel::sign_in(&server.base, "clerk", "clerk-pw").await;
    let anonymous = get(&panel.http, &server.base, None, "/admin/login").await;
    for page in [
        anonymous,
        panel.get("/admin").await,
        panel.get("/admin/orders/2001").await,
        panel.get("/admin/static/panel.css").await,
        panel.get("/admin/nothing-here").await,
    ] {
        let header = |name: &str| {
            page.headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let policy = header("content-security-policy");
        assert!(
            policy.starts_with("default-src 'none'; style-src 'self';"),
            "{policy}"
        );
        for directive in ["frame-ancestors 'none'", "form-action 'self'"] {
            assert!(policy.contains(directive), "{policy}");
        }
        assert!(!policy.contains("unsafe-inline") && !policy.contains("script-src"));
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "no-referrer");
        assert_eq!(header("cache-control"), "no-store");
        // No inline style or script anywhere.
        assert!(!page.body.contains("<script") && !page.body.contains("style="));
        assert!(!page.body.contains(" onclick") && !page.body.contains("<style"));
    }
    server.stop().await;
}

on_both_backends!(forged_and_cross_site_posts_change_nothing);
async fn forged_and_cross_site_posts_change_nothing(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    add_panel_user(&ledger, "clerk", "clerk-pw", Scopes::ALL);
    let server = TestServer::start_with(ledger.config()).await;
    let panel = Panel::sign_in(&server.base, "clerk", "clerk-pw").await;
    add_manual_refund(&panel, "5.00", "-").await;
    let refund = newest_refund(&ledger);
    let list = panel.get("/admin").await;
    let fields = list.form_of(&format!("Confirm refund {refund}"));
    let without_csrf: Vec<(&str, &str)> = fields
        .iter()
        .filter(|(name, _)| name != "csrf")
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let all: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let session = Some(panel.session.as_str());
    let other_origin = server.base.replace("127.0.0.1", "127.0.0.2");
    for (fields, headers, why) in [
        (
            &without_csrf,
            vec![("sec-fetch-site", "same-origin")],
            "no CSRF token",
        ),
        (
            &all,
            vec![("sec-fetch-site", "cross-site")],
            "a cross-site form",
        ),
        (
            &all,
            vec![("sec-fetch-site", "same-site")],
            "a same-site form",
        ),
        (
            &all,
            vec![("origin", other_origin.as_str())],
            "another origin",
        ),
    ] {
        let page = post(
            &panel.http,
            &server.base,
            session,
            "/admin/actions/confirmRefund",
            fields,
            &headers,
        )
        .await;
        assert_eq!(page.status, 403, "{why}: {}", page.body);
    }
    assert_eq!(
        ledger.count(&format!(
            "SELECT count(*) FROM refunds WHERE id = {refund} AND status = 'New'"
        )),
        1
    );
    let login = post(
        &panel.http,
        &server.base,
        None,
        "/admin/login",
        &[("login", "clerk"), ("password", "clerk-pw")],
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(login.status, 403, "a sign-in form on another site");
    server.stop().await;
}

on_both_backends!(a_signed_out_session_no_longer_works);
async fn a_signed_out_session_no_longer_works(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    add_panel_user(&ledger, "clerk", "clerk-pw", Scopes::ALL);
    let server = TestServer::start_with(ledger.config()).await;
    let panel = Panel::sign_in(&server.base, "clerk", "clerk-pw").await;
    add_manual_refund(&panel, "5.00", "-").await;
    let refund = newest_refund(&ledger);
    let list = panel.get("/admin").await;
    let confirm = list.form_of(&format!("Confirm refund {refund}"));
    let csrf = list.field("csrf");
    let signed_out = panel.post("/admin/logout", &[("csrf", &csrf)]).await;
    assert_eq!(signed_out.status, 303);
    assert_eq!(signed_out.location(), "/admin/login");
    assert_eq!(ledger.count("SELECT count(*) FROM admin_sessions"), 0);

    let again = panel.get("/admin").await;
    assert_eq!((again.status, again.location()), (303, "/admin/login"));
    let fields: Vec<(&str, &str)> = confirm
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let posted = panel.post("/admin/actions/confirmRefund", &fields).await;
    assert_eq!((posted.status, posted.location()), (303, "/admin/login"));
    assert_eq!(
        ledger.count(&format!(
            "SELECT count(*) FROM refunds WHERE id = {refund} AND status = 'New'"
        )),
        1
    );
    server.stop().await;
}

on_both_backends!(failed_sign_ins_are_throttled_per_login);
async fn failed_sign_ins_are_throttled_per_login(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    add_panel_user(&ledger, "clerk", "clerk-pw", Scopes::ALL);
    let server = TestServer::start_with(ledger.config()).await;
    let http = browser();
    for _ in 0..5 {
        let page = post(
            &http,
            &server.base,
            None,
            "/admin/login",
            &[("login", "clerk"), ("password", "guess")],
            &[],
        )
        .await;
        assert_eq!(page.status, 401);
        assert!(
            page.body
                .contains("role=\"alert\">The login or the password is wrong.")
        );
    }
    // Even the right password is not checked now.
    let page = post(
        &http,
        &server.base,
        None,
        "/admin/login",
        &[("login", "clerk"), ("password", "clerk-pw")],
        &[],
    )
    .await;
    assert_eq!(page.status, 429, "{}", page.body);
    assert!(page.headers.get("set-cookie").is_none());
    server.stop().await;
}

on_both_backends!(ledger_values_are_escaped_in_every_page);
async fn ledger_values_are_escaped_in_every_page(backend: Backend) {
    let shop = std::fs::read_to_string(crate::support::fixtures_dir().join("test-shop.json"))
        .expect("test shop")
        .replace(
            "\"PAYU-11\"",
            "\"<script>alert('tx')</script>\\\" javascript:alert(1)\"",
        );
    let ledger = TestLedger::with_shop(backend, &shop);
    add_panel_user(&ledger, "<b>clerk</b>", "clerk-pw", Scopes::ALL);
    let server = TestServer::start_with(ledger.config()).await;
    let panel = Panel::sign_in(&server.base, "<b>clerk</b>", "clerk-pw").await;
    add_manual_refund(&panel, "5.00", "<script>alert('account')</script>").await;
    let refund = newest_refund(&ledger);
    for path in [
        "/admin".to_owned(),
        "/admin/orders/2001".to_owned(),
        format!("/admin/refunds/{refund}"),
    ] {
        let page = panel.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(!page.body.contains("<script"), "{path}: {}", page.body);
        assert!(!page.body.contains("<b>clerk"), "{path}");
        assert!(page.body.contains("&#60;b&#62;clerk&#60;/b&#62;"), "{path}");
        assert!(!page.body.contains("href=\"javascript:"), "{path}");
    }
    let order = panel.get("/admin/orders/2001").await;
    assert!(
        order.body.contains(
            "&#60;script&#62;alert(&#39;tx&#39;)&#60;/script&#62;&#34; javascript:alert(1)"
        ),
        "{}",
        order.body
    );
    let page = panel.get(&format!("/admin/refunds/{refund}")).await;
    assert!(
        page.body
            .contains("&#60;script&#62;alert(&#39;account&#39;)&#60;/script&#62;")
    );
    assert!(
        page.body
            .contains("&#34;quoted&#34; &#39;single&#39; javascript:alert(2)"),
        "{}",
        page.body
    );
    server.stop().await;
}

on_both_backends!(automatic_refunds_are_added_from_an_order_and_a_return);
async fn automatic_refunds_are_added_from_an_order_and_a_return(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    add_panel_user(&ledger, "clerk", "clerk-pw", Scopes::ALL);
    let server = TestServer::start_with(ledger.config()).await;
    let panel = Panel::sign_in(&server.base, "clerk", "clerk-pw").await;

    // Order 2001: payment 11 (200.00 PLN, refundable by its operator).
    let (posted, shown) = panel
        .press(
            "/admin/orders/2001",
            "Add automatic refund",
            &[("paymentId", "11"), ("refundValue", "30.00")],
        )
        .await;
    assert_eq!(posted.status, 303, "{}", posted.body);
    let refund = newest_refund(&ledger);
    assert!(
        shown.body.contains(&format!("Refund {refund} added.")),
        "{}",
        shown.body
    );
    // The payment's row: paid 200.00, refunded 0.00, reserved 30.00, refundable 170.00.
    assert!(
        shown.body.contains("<td class=\"number\">200.00 PLN</td><td class=\"number\">0.00 PLN</td><td class=\"number\">30.00 PLN</td><td class=\"number\">170.00 PLN</td>"),
        "{}",
        shown.body
    );

    // Return 601 (40.00 PLN of order 2002): addAutomaticRefund refunds what it can still refund.
    let (posted, shown) = panel
        .press("/admin/returns/601", "Add automatic refund", &[])
        .await;
    assert!(posted.location().starts_with("/admin/returns/601?result="));
    let refund = newest_refund(&ledger);
    assert!(
        shown
            .body
            .contains(&format!("role=\"status\">Refund {refund} added.")),
        "{}",
        shown.body
    );
    assert_eq!(
        ledger.count(&format!(
            "SELECT count(*) FROM refunds WHERE id = {refund} AND source_type = 'return'
                 AND source_id = 601 AND method = 'automatic' AND amount_minor = 4000
                 AND created_by = 'panel:clerk'"
        ),),
        1
    );
    server.stop().await;
}
