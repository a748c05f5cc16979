//! `warden serve`'s page, driven over real HTTP like a browser without JavaScript: the whole
//! sign-in redirect flow against exosim (authorization code + PKCE, its login form), the task
//! form derived from the policy, CSRF on every post, a run's page with its status and results,
//! and the headers every answer carries.

use crate::serve_api::{start, user};
use crate::support::Emulator;
use std::collections::BTreeMap;
use std::time::Duration;

/// A browser's cookie jar and a client that does not follow redirects.
struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new(emu: &Emulator) -> Self {
        let ca = std::fs::read(emu.exosim.ca_file()).unwrap();
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    fn keep_cookies(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || text.to_ascii_lowercase().contains("max-age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, url: &str) -> (u16, String, String) {
        let response = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.answer(response).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> (u16, String, String) {
        let response = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.answer(response).await
    }

    /// Status, Location (resolved against the request), body.
    async fn answer(&mut self, response: reqwest::Response) -> (u16, String, String) {
        self.keep_cookies(&response);
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|l| {
                response
                    .url()
                    .join(l.to_str().unwrap())
                    .unwrap()
                    .to_string()
            })
            .unwrap_or_default();
        (status, location, response.text().await.unwrap())
    }
}

/// The value of `name="…" value="…"` inputs in `html`.
pub(crate) fn inputs(html: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for input in html.split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap_or(input.len())];
        let attribute = |name: &str| {
            let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
            let end = tag[start..].find('"')? + start;
            Some(
                tag[start..end]
                    .replace("&amp;", "&")
                    .replace("&quot;", "\"")
                    .replace("&#39;", "'"),
            )
        };
        if let (Some(name), Some(value)) = (attribute("name"), attribute("value")) {
            found.push((name, value));
        }
    }
    found
}

/// The CSRF token of the form in `html` that posts to `action` (each form has its own).
pub(crate) fn form_csrf(html: &str, action: &str) -> String {
    let start = html
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form posts to {action}: {html}"));
    let end = html[start..]
        .find("</form>")
        .map_or(html.len(), |e| start + e);
    inputs(&html[start..end])
        .into_iter()
        .find(|(n, _)| n == "csrf")
        .unwrap_or_else(|| panic!("the form posting to {action} has no csrf field"))
        .1
}

/// The `action` of the first form in `html`.
pub(crate) fn form_action(html: &str) -> String {
    let start = html.find("action=\"").unwrap() + 8;
    html[start..start + html[start..].find('"').unwrap()].replace("&amp;", "&")
}

/// Signs `name` in through the page, starting at `path`; ends on that page.
async fn sign_in(
    browser: &mut Browser,
    emu: &Emulator,
    base: &str,
    name: &str,
    path: &str,
) -> String {
    let (status, location, body) = browser.get(&format!("{base}{path}")).await;
    let location = if path == "/" {
        // The home page greets an anonymous visitor with a "Sign in" link (page contract).
        assert_eq!(status, 200, "the home page answers an anonymous visitor");
        assert!(
            body.contains("href=\"/signin\"") && body.contains(">Sign in<"),
            "{body}"
        );
        format!("{base}/signin")
    } else {
        assert_eq!(status, 303, "an anonymous page request is sent to sign in");
        assert!(
            location.starts_with(&format!("{base}/signin?")),
            "{location}"
        );
        location
    };
    let (status, authorize, _) = browser.get(&location).await;
    assert!(matches!(status, 302 | 303), "{status}");
    assert!(authorize.starts_with(&emu.exosim.url()), "{authorize}");
    assert!(
        authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );
    let (status, _, form) = browser.get(&authorize).await;
    assert_eq!(status, 200);
    let user = user(emu, name);
    let mut fields = inputs(&form);
    fields.retain(|(n, _)| n != "login" && n != "passwd");
    fields.push(("login".into(), user["upn"].as_str().unwrap().into()));
    fields.push(("passwd".into(), user["password"].as_str().unwrap().into()));
    let action = reqwest::Url::parse(&authorize)
        .unwrap()
        .join(&form_action(&form))
        .unwrap();
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, callback, _) = browser.post(action.as_str(), &fields).await;
    assert_eq!(status, 302, "exosim answers the login with the code");
    assert!(
        callback.starts_with(&format!("{base}/auth/callback?")),
        "{callback}"
    );
    let (status, back, _) = browser.get(&callback).await;
    assert!(matches!(status, 302 | 303), "{status}");
    assert_eq!(
        back,
        format!("{base}{path}"),
        "back where the person started"
    );
    let (status, _, page) = browser.get(&back).await;
    assert_eq!(status, 200, "{page}");
    page
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_page_sign_in_run_and_approve() {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("serve.db").display());
    let service = start(&emu, dir.path(), &db, 1).await;
    let base = service.url.clone();

    // Anonymous: the front page offers "Sign in", with the strict headers.
    let mut browser = Browser::new(&emu);
    let front = browser.http.get(format!("{base}/")).send().await.unwrap();
    let csp = front.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(front.text().await.unwrap().contains(">Sign in</a>"));

    // The delegate signs in on the task's page and sees its form, derived from the policy.
    let form = sign_in(
        &mut browser,
        &emu,
        &base,
        "helpdesk",
        "/tasks/list-mailboxes",
    )
    .await;
    assert!(
        form.contains("<label for=\"field-kind\">Kind of mailbox</label>"),
        "{form}"
    );
    assert!(form.contains("<option value=\"SharedMailbox\">"), "{form}");
    assert!(
        form.contains(">Run</button>") && form.contains(">Sign out</button>"),
        "{form}"
    );
    assert!(
        !form.contains("<script>") && !form.contains("style=\""),
        "no inline code"
    );
    let csrf = form_csrf(&form, "/tasks/list-mailboxes");
    let signout_csrf = form_csrf(&form, "/signout");

    // Without the CSRF token the form is refused.
    let (status, _, _) = browser
        .post(
            &format!("{base}/tasks/list-mailboxes"),
            &[("kind", "UserMailbox")],
        )
        .await;
    assert_eq!(status, 403);
    // A value outside the policy: the form again, the error next to the field.
    let (status, _, page) = browser
        .post(
            &format!("{base}/tasks/list-mailboxes"),
            &[("csrf", &csrf), ("kind", "EquipmentMailbox")],
        )
        .await;
    assert_eq!(status, 422);
    assert!(page.contains("id=\"kind-error\""), "{page}");
    // With it, the run starts and the browser is sent to its page.
    let (status, run_url, _) = browser
        .post(
            &format!("{base}/tasks/list-mailboxes"),
            &[("csrf", &csrf), ("kind", "UserMailbox")],
        )
        .await;
    assert_eq!(status, 303);
    let mut page = String::new();
    for _ in 0..300 {
        page = browser.get(&run_url).await.2;
        if page.contains("data-status=\"completed\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        page.contains("data-status=\"completed\"") && page.contains("<table>"),
        "{page}"
    );
    let (status, _, csv) = browser.get(&format!("{run_url}/results.csv")).await;
    assert_eq!(status, 200);
    assert!(
        csv.starts_with("DisplayName,PrimarySmtpAddress,RecipientTypeDetails\n"),
        "{csv}"
    );

    // The outsider, signed in, has no tasks and cannot open the helpdesk's run.
    let mut outsider = Browser::new(&emu);
    let home = sign_in(&mut outsider, &emu, &base, "outsider", "/").await;
    assert!(home.contains("No tasks are delegated to you."), "{home}");
    assert_eq!(outsider.get(&run_url).await.0, 403);
    assert_eq!(
        outsider
            .get(&format!("{base}/tasks/list-mailboxes"))
            .await
            .0,
        403
    );

    // A write asked for on the page waits for the lead, who approves it there.
    let form = browser.get(&format!("{base}/tasks/rename-mailbox")).await.2;
    assert!(form.contains(">Request approval</button>"), "{form}");
    let mailbox = crate::serve_api::a_mailbox(&emu).await;
    let (status, pending_url, _) = browser
        .post(
            &format!("{base}/tasks/rename-mailbox"),
            &[
                ("csrf", &form_csrf(&form, "/tasks/rename-mailbox")),
                ("identity", &mailbox),
                ("display_name", "Renamed on the page"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    assert!(
        browser
            .get(&pending_url)
            .await
            .2
            .contains("data-status=\"pending-approval\"")
    );
    let mut lead = Browser::new(&emu);
    let approvals = sign_in(&mut lead, &emu, &base, "lead", "/approvals").await;
    assert!(
        approvals.contains(pending_url.trim_start_matches(&base)),
        "{approvals}"
    );
    let run_page = lead.get(&pending_url).await.2;
    assert!(
        run_page.contains(">Approve</button>") && run_page.contains("name=\"comment\""),
        "{run_page}"
    );
    let lead_csrf = form_csrf(
        &run_page,
        &format!("{}/decide", pending_url.trim_start_matches(&base)),
    );
    let (status, _, _) = lead
        .post(
            &format!("{pending_url}/decide"),
            &[
                ("csrf", &lead_csrf),
                ("decision", "approve"),
                ("comment", "fine"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    for _ in 0..300 {
        page = browser.get(&pending_url).await.2;
        if page.contains("data-status=\"completed\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(page.contains("data-status=\"completed\""), "{page}");

    // Sign out ends the session.
    let (status, _, _) = browser
        .post(&format!("{base}/signout"), &[("csrf", &signout_csrf)])
        .await;
    assert!(matches!(status, 302 | 303), "{status}");
    assert_eq!(browser.get(&format!("{base}/runs")).await.0, 303);
    service.shutdown().await;
}
