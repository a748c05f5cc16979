//! exosim as a separate process (`exosim serve`), so the emulator's CPU is not charged to the
//! client under test and every contender (warden in-process, `warden run`, the plain reqwest
//! client, Python) talks to the same server the same way.

use anyhow::{Context, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `exosim serve` child; killed when dropped.
pub struct ExosimProcess {
    /// None when attached to an exosim another process started.
    child: Option<Child>,
    pub ready: Value,
    pub ready_file: PathBuf,
    control: reqwest::Client,
}

impl ExosimProcess {
    /// Starts exosim with `mailboxes` per tenant, state under `dir`, and waits for its ready file.
    pub async fn start(bin: &Path, dir: &Path, mailboxes: usize) -> anyhow::Result<Self> {
        Self::start_with(bin, dir, mailboxes, None).await
    }

    /// [`start`](Self::start) with the tenants of `config` (`exosim serve --config`) instead of
    /// the demo tenant.
    pub async fn start_with(
        bin: &Path,
        dir: &Path,
        mailboxes: usize,
        config: Option<&Path>,
    ) -> anyhow::Result<Self> {
        Self::start_with_args(bin, dir, mailboxes, config, &[]).await
    }

    /// [`start_with`](Self::start_with) with more `exosim serve` flags (`--tenants N`,
    /// `--exchange-latency-ms MS`, …).
    pub async fn start_with_args(
        bin: &Path,
        dir: &Path,
        mailboxes: usize,
        config: Option<&Path>,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ready_file = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready_file);
        let child = Command::new(bin)
            .args(["serve", "--bind", "127.0.0.1:0", "--ready-file"])
            .arg(&ready_file)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--mailboxes", &mailboxes.to_string()])
            .args(
                config
                    .map(|c| [std::ffi::OsStr::new("--config"), c.as_os_str()])
                    .into_iter()
                    .flatten(),
            )
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let started = Instant::now();
        let mut child = Some(child);
        let ready = loop {
            if let Ok(text) = std::fs::read_to_string(&ready_file)
                && let Ok(value) = serde_json::from_str::<Value>(&text)
            {
                break value;
            }
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("exosim exited before it was ready: {status}");
            }
            if started.elapsed() > Duration::from_secs(300) {
                if let Some(mut c) = child.take() {
                    let _ = c.kill();
                }
                bail!("exosim was not ready within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let ca = std::fs::read(ready["ca_file"].as_str().context("ready: ca_file")?)?;
        let control = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .build()?;
        Ok(Self {
            child,
            ready,
            ready_file,
            control,
        })
    }

    /// Uses an exosim another process started, from its ready file.
    pub fn attach(ready_file: &Path) -> anyhow::Result<Self> {
        let ready: Value = serde_json::from_str(&std::fs::read_to_string(ready_file)?)?;
        let ca = std::fs::read(ready["ca_file"].as_str().context("ready: ca_file")?)?;
        let control = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .build()?;
        Ok(Self {
            child: None,
            ready,
            ready_file: ready_file.to_owned(),
            control,
        })
    }

    pub fn url(&self) -> String {
        self.ready["url"].as_str().unwrap_or_default().to_owned()
    }
    pub fn exchange_url(&self) -> String {
        self.ready["exchange_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
    /// The Exchange URL under another host name than the identity endpoint's (`127.0.0.1`
    /// for `localhost` and the other way round; exosim's certificate names both): a client
    /// keeps one connection per host, so the Exchange call opens its own TLS connection, as it
    /// does in production (login.microsoftonline.com vs outlook.office365.com), instead of
    /// reusing the token's.
    pub fn exchange_url_own_host(&self) -> String {
        let url = self.exchange_url();
        if url.contains("://localhost:") {
            url.replacen("://localhost:", "://127.0.0.1:", 1)
        } else {
            url.replacen("://127.0.0.1:", "://localhost:", 1)
        }
    }
    pub fn ca_file(&self) -> PathBuf {
        PathBuf::from(self.ready["ca_file"].as_str().unwrap_or_default())
    }
    pub fn tenant_id(&self) -> String {
        self.ready["tenants"][0]["tenant_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
    /// The demo tenant's full-admin app (app 0).
    pub fn client_id(&self) -> String {
        self.ready["tenants"][0]["apps"][0]["client_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
    pub fn client_secret(&self) -> String {
        self.ready["tenants"][0]["apps"][0]["client_secret"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The environment a user sets for the admin app with its client secret.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_TENANT_ID".into(), self.tenant_id()),
            ("AZURE_CLIENT_ID".into(), self.client_id()),
            ("AZURE_CLIENT_SECRET".into(), self.client_secret()),
            ("AZURE_AUTHORITY_HOST".into(), self.url()),
            (
                "WARDEN_CA_FILE".into(),
                self.ca_file().display().to_string(),
            ),
            ("WARDEN_EXCHANGE_URL".into(), self.exchange_url()),
        ]
    }

    /// `GET /_exosim/counters`.
    pub async fn counters(&self) -> anyhow::Result<Value> {
        Ok(self
            .control
            .get(format!("{}/_exosim/counters", self.url()))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn token_requests(&self) -> anyhow::Result<u64> {
        Ok(self.counters().await?["token_requests"]
            .as_u64()
            .unwrap_or(0))
    }

    /// `POST /_exosim/faults` (token endpoint latency, token lifetime).
    pub async fn token_faults(&self, update: Value) -> anyhow::Result<()> {
        self.control
            .post(format!("{}/_exosim/faults", self.url()))
            .json(&update)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// The process id of the exosim this harness started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `GET /_exosim/requests`: the request log (token requests, with the tenant each named).
    pub async fn requests(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .control
            .get(format!("{}/_exosim/requests", self.url()))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// `DELETE /_exosim/exchange-requests`: keeps exosim's request log from growing over a run.
    pub async fn clear_logs(&self) -> anyhow::Result<()> {
        for path in ["exchange-requests", "requests"] {
            self.control
                .delete(format!("{}/_exosim/{path}", self.url()))
                .send()
                .await?
                .error_for_status()?;
        }
        Ok(())
    }
}

impl Drop for ExosimProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
