//! `warden plugin keygen|sign|verify`: Ed25519 keys and tool-conventions signatures (see
//! warden-signature), and how `plugin inspect` shows a signature and what a policy makes of it.

use crate::guest_args::load_policy;
use crate::output::{Layout, escape};
use anyhow::Context;
use clap::Args;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use warden_policy::{Policy, Principal, SignatureVerdict};
use warden_runtime::{check_signature, detached_signature_path};
use warden_signature::{PublicKey, SecretKey};

/// Largest component `sign` and `verify` read (the runtime's own bound is checked at run).
const MAX_COMPONENT_BYTES: u64 = 256 * 1024 * 1024;

/// Arguments of `warden plugin keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to write `plugin-signing.key` (secret, 0600) and `plugin-signing.pub` into.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// File name stem of the two files.
    #[arg(long, default_value = "plugin-signing")]
    name: String,
}

/// Arguments of `warden plugin sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The plugin (.wasm component); signed in place.
    plugin: PathBuf,
    /// The secret key file (`warden plugin keygen` wrote it).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Leave the component unchanged and write the signature to PLUGIN.sig beside it.
    #[arg(long)]
    detached: bool,
}

/// Arguments of `warden plugin verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The plugin (.wasm component); a detached signature is read from PLUGIN.sig.
    plugin: PathBuf,
    /// A public key file to verify against.
    #[arg(long, value_name = "PUB", conflicts_with = "policy")]
    key: Option<PathBuf>,
    /// A policy whose [trust.*] keys to verify against (and whose grant to judge it by).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

fn show(path: &Path) -> String {
    escape(&path.display().to_string(), Layout::Line).into_owned()
}

fn read_bounded(path: &Path, max: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "{}: cannot read the {what}\n  fix: check the path and its permissions",
            show(path)
        )
    })?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: cannot read the {what}", show(path)))?;
    anyhow::ensure!(
        bytes.len() as u64 <= max,
        "{}: the {what} is larger than {max} bytes",
        show(path)
    );
    Ok(bytes)
}

/// The detached signature beside `plugin` (`PLUGIN.sig`), if there is one; bounded (a larger
/// file is read one byte past the bound, and the check refuses it as too large).
pub fn read_detached(plugin: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    warden_runtime::read_detached_signature(plugin).map_err(crate::guest_args::runtime_error)
}

/// Writes `bytes` to a new file `path` with `mode`, never replacing an existing file.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).with_context(|| {
        format!(
            "{}: cannot create it (it is never overwritten)\n  fix: move the old file away, or use --out/--name",
            show(path)
        )
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("{}: cannot write it", show(path)))
}

/// `warden plugin keygen`: the secret key never reaches the terminal.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.name.is_empty()
            && args
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "--name {:?}: use ASCII letters, digits, '-' and '_'",
        args.name
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the directory", show(&args.out)))?;
    let key = SecretKey::generate();
    let public = key.public_key();
    let secret_path = args.out.join(format!("{}.key", args.name));
    let public_path = args.out.join(format!("{}.pub", args.name));
    anyhow::ensure!(
        !secret_path.exists() && !public_path.exists(),
        "{} or {} exists already; a key is never overwritten\n  fix: choose another --out or --name",
        show(&secret_path),
        show(&public_path)
    );
    write_new(&secret_path, key.to_pem().as_bytes(), 0o600)?;
    write_new(&public_path, public.to_pem().as_bytes(), 0o644)?;
    println!("key id       {}", public.key_id());
    println!(
        "secret key   {} (0600: keep it off shared disks; anyone holding it signs as you)",
        show(&secret_path)
    );
    println!("public key   {}", show(&public_path));
    println!(
        "To trust it, put the public key file's text in a policy:\n  [trust.NAME]\n  public_key = \"\"\"\n  <contents of {}>\"\"\"",
        show(&public_path)
    );
    Ok(ExitCode::SUCCESS)
}

/// `warden plugin sign`.
pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let secret_text = read_bounded(&args.key, 16 * 1024, "secret key")?;
    let secret_text = zeroize::Zeroizing::new(secret_text);
    let key = std::str::from_utf8(&secret_text)
        .ok()
        .and_then(|text| SecretKey::parse(text).ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: not an Ed25519 secret key in PEM\n  fix: give the .key file `warden plugin keygen` wrote",
                show(&args.key)
            )
        })?;
    let component = read_bounded(&args.plugin, MAX_COMPONENT_BYTES, "plugin")?;
    let refused = |e: warden_signature::SignatureError| {
        anyhow::anyhow!("{}: cannot sign it: {e}", show(&args.plugin))
    };
    let key_id = key.public_key().key_id().clone();
    if args.detached {
        let signature = key.sign_detached(&component).map_err(refused)?;
        let path = detached_signature_path(&args.plugin);
        let _ = std::fs::remove_file(&path);
        write_new(&path, &signature, 0o644)?;
        println!(
            "signed       {} (detached: {})",
            show(&args.plugin),
            show(&path)
        );
    } else {
        let signed = key.sign(&component).map_err(refused)?;
        // Written beside it and renamed over it, so a failed write leaves the original.
        let dir = args
            .plugin
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("{}: cannot write beside it", show(&args.plugin)))?;
        // The temporary file is created 0600; the signed plugin keeps the original's mode.
        let permissions = std::fs::metadata(&args.plugin)
            .with_context(|| format!("{}: cannot read its permissions", show(&args.plugin)))?
            .permissions();
        temp.write_all(&signed)
            .and_then(|()| temp.as_file().set_permissions(permissions))
            .and_then(|()| temp.as_file().sync_all())
            .with_context(|| format!("{}: cannot write the signed copy", show(&args.plugin)))?;
        temp.persist(&args.plugin)
            .with_context(|| format!("{}: cannot replace it", show(&args.plugin)))?;
        println!("signed       {} (embedded)", show(&args.plugin));
    }
    println!("key id       {key_id}");
    println!(
        "sha256       {}",
        warden_policy::sha256_hex(&std::fs::read(&args.plugin)?)
    );
    Ok(ExitCode::SUCCESS)
}

/// `warden plugin verify`: exit 0 only when it verifies (and, with a policy that has a
/// `signed_by` grant for it, when that grant accepts the signature).
pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let component = read_bounded(&args.plugin, MAX_COMPONENT_BYTES, "plugin")?;
    let detached = read_detached(&args.plugin)?;
    let (keys, policy) = match (&args.key, &args.policy) {
        (Some(path), _) => {
            let text = read_bounded(path, 16 * 1024, "public key")?;
            let key = std::str::from_utf8(&text)
                .ok()
                .and_then(|t| PublicKey::parse(t).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: not an Ed25519 public key\n  fix: give the .pub file `warden plugin keygen` wrote",
                        show(path)
                    )
                })?;
            (vec![key], None)
        }
        (None, Some(path)) => {
            let policy = load_policy(path, false)?;
            (policy.trusted_keys(), Some(policy))
        }
        (None, None) => anyhow::bail!(
            "verify against what? give --key PUB (a public key file) or --policy FILE (its [trust.*] keys)"
        ),
    };
    anyhow::ensure!(
        !keys.is_empty(),
        "the policy trusts no key: add a [trust.NAME] entry with the publisher's public key"
    );
    // With a policy, the principal a run would present (name, version, every verifying key,
    // the counted one first); with a key, the bare verdict.
    let info = warden_runtime::PluginHost::inspect(&args.plugin.display().to_string(), &component);
    let principal = match (&policy, &info) {
        (Some(policy), Ok(info)) => Some(warden_runtime::plugin_principal(
            info,
            &component,
            detached.as_deref(),
            policy,
        )),
        _ => None,
    };
    let verdict = match &principal {
        Some(Principal::Plugin {
            signature: Some(signature),
            ..
        }) => signature.verdict.clone(),
        _ => check_signature(&component, detached.as_deref(), &keys),
    };
    let mut ok = matches!(verdict, SignatureVerdict::Verified { .. });
    println!("plugin       {}", show(&args.plugin));
    println!(
        "signature    {}",
        if detached.is_some() {
            "detached (.sig)"
        } else {
            "embedded"
        }
    );
    println!("verdict      {}", describe(&verdict));
    if let (Some(policy), SignatureVerdict::Verified { key_ids }) = (&policy, &verdict) {
        // A key the policy revokes verifies (it is still the key), but it is not trusted.
        let revoked: Vec<&str> = key_ids
            .iter()
            .filter(|id| policy.is_revoked(id))
            .map(String::as_str)
            .collect();
        if !revoked.is_empty() {
            println!(
                "revoked      key {} revoked by the policy",
                revoked.join(", ")
            );
        }
        if revoked.len() == key_ids.len() {
            ok = false;
        }
    }
    if let (Some(policy), Some(principal)) = (&policy, &principal)
        && let Some((text, accepted)) = judge(policy, principal)
    {
        println!("policy       {}", escape(&text, Layout::Line));
        ok &= accepted;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line for a verdict.
fn describe(verdict: &SignatureVerdict) -> String {
    match verdict {
        SignatureVerdict::Unsigned => "unsigned".to_owned(),
        SignatureVerdict::Verified { key_ids } => {
            format!("verified: signed by key {}", key_ids.join(", "))
        }
        SignatureVerdict::OtherKey { key_ids } => format!(
            "not verified: signed by another key ({})",
            if key_ids.is_empty() {
                "no key id".to_owned()
            } else {
                key_ids.join(", ")
            }
        ),
        SignatureVerdict::Tampered { key_id } => format!(
            "not verified: changed after key {key_id} signed it (the signature does not match its bytes)"
        ),
        SignatureVerdict::Invalid { reason } => format!("refused: {reason}"),
    }
}

/// What the plugin's `signed_by` grant makes of its signature: the text, and whether it
/// accepts it. `None` when no grant of the policy asks for a signature from it.
fn judge(policy: &Policy, principal: &Principal) -> Option<(String, bool)> {
    let Principal::Plugin { name, .. } = principal else {
        return None;
    };
    let (publisher, min) = policy.signature_requirement(name)?;
    let needs = match &min {
        Some(min) => format!("signed by {publisher}, version >= {min}"),
        None => format!("signed by {publisher}"),
    };
    Some(match policy.grant_for_any_tenant(principal, None) {
        Ok(grant) => (format!("grant {} accepts it ({needs})", grant.id()), true),
        Err(denial) => (
            format!("refused ({}): {}", denial.rule, denial.reason),
            false,
        ),
    })
}

/// A plugin's signature as `plugin inspect` shows it: the key ids it names (read without
/// any key), and, given a policy, what its trusted keys make of it.
#[derive(Debug, serde::Serialize)]
pub struct SignatureView {
    /// `embedded`, `detached` or `none`.
    form: &'static str,
    /// Key ids its signature names.
    key_ids: Vec<String>,
    /// Why it cannot be read, if it cannot.
    error: Option<String>,
    /// What the policy's trusted keys make of it (none without a policy that trusts keys).
    verdict: Option<SignatureVerdict>,
    /// What the plugin's `signed_by` grant makes of it.
    policy: Option<String>,
}

impl SignatureView {
    /// The view of `component` (with its detached signature) under `policy`, given its
    /// principal under that policy ([`warden_runtime::plugin_principal`]).
    pub fn of(
        component: &[u8],
        detached: Option<&[u8]>,
        policy: Option<&Policy>,
        principal: &Principal,
    ) -> SignatureView {
        let (key_ids, error) = match warden_signature::signers(component, detached) {
            Ok(ids) => (
                ids.unwrap_or_default()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                None,
            ),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let form = match (detached, warden_signature::signers(component, None)) {
            (Some(_), _) => "detached",
            (None, Ok(Some(_))) => "embedded",
            (None, Err(_)) => "embedded",
            (None, Ok(None)) => "none",
        };
        let verdict = match principal {
            Principal::Plugin {
                signature: Some(signature),
                ..
            } => Some(signature.verdict.clone()),
            _ => None,
        };
        let judgement = policy.and_then(|policy| judge(policy, principal).map(|(text, _)| text));
        SignatureView {
            form,
            key_ids,
            error,
            verdict,
            policy: judgement,
        }
    }

    /// Prints the view as `plugin inspect`'s text lines.
    pub fn print(&self) {
        let line = |text: &str| escape(text, Layout::Line).into_owned();
        match (&self.error, self.form) {
            (Some(error), _) => println!("signature    refused: {}", line(error)),
            (None, "none") => println!("signature    none"),
            (None, form) => println!(
                "signature    {form}, by key {}",
                if self.key_ids.is_empty() {
                    "(no key id)".to_owned()
                } else {
                    self.key_ids.join(", ")
                }
            ),
        }
        if let Some(verdict) = &self.verdict {
            println!("  trusted keys: {}", line(&describe(verdict)));
        }
        if let Some(policy) = &self.policy {
            println!("  its grant:    {}", line(policy));
        }
    }
}
