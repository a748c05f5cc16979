//! `shared-mailbox`: provisions a shared mailbox and its delegates.
//!
//! Arguments: `--name "Sales Team"`, `--address sales@contoso.onmicrosoft.com`, and any number
//! of `--full-access user@domain` and `--send-as user@domain`. Steps, each reported in the log
//! and in the output:
//!
//! 1. `Get-Mailbox -Identity <address>`; when it does not exist, `New-Mailbox -Shared`.
//! 2. `Get-MailboxPermission`, then `Add-MailboxPermission -AccessRights FullAccess` for each
//!    delegate who does not have it yet.
//! 3. `Get-RecipientPermission`, then `Add-RecipientPermission -AccessRights SendAs
//!    -Confirm:$false` for each who cannot send as it yet (the cmdlet asks for confirmation
//!    otherwise, and a plugin cannot answer a prompt).
//!
//! Running it twice is safe: what exists is left alone. It refuses to touch an address that
//! belongs to a mailbox that is not shared. It never repeats a write: when the host reports that
//! a write's outcome is unknown, it stops and says which step to check.

use serde::Serialize;
use serde_json::json;
use warden_sdk::args::Args;
use warden_sdk::{
    CallError, Mailbox, MailboxPermission, Plugin, RecipientPermission, exchange, log,
};

warden_sdk::manifest! {
    name = "shared-mailbox",
    description = "Creates a shared mailbox and grants FullAccess and SendAs to its delegates",
    cmdlets = {
        "Get-Mailbox" = ["Identity"],
        "New-Mailbox" = ["Name", "PrimarySmtpAddress", "Shared"],
        "Get-MailboxPermission" = ["Identity"],
        "Add-MailboxPermission" = ["Identity", "User", "AccessRights"],
        "Get-RecipientPermission" = ["Identity"],
        "Add-RecipientPermission" = ["Identity", "Trustee", "AccessRights", "Confirm"],
    },
}

struct SharedMailbox;

warden_sdk::plugin!(SharedMailbox);

/// One step as the output reports it.
#[derive(Debug, Serialize)]
struct Step {
    step: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// `created`, `exists`, `added` or `present`.
    status: &'static str,
}

/// The output: the mailbox and what each step found or did, in order.
#[derive(Debug, Serialize)]
struct Report<'a> {
    mailbox: &'a str,
    steps: &'a [Step],
}

struct Request {
    name: String,
    address: String,
    full_access: Vec<String>,
    send_as: Vec<String>,
}

impl Plugin for SharedMailbox {
    fn run(args: Vec<String>) -> Result<String, String> {
        let request = parse(args)?;
        check_grants(&request)?;
        let mut steps = Vec::new();
        let result = provision(&request, &mut steps);
        let done = steps
            .iter()
            .map(|s| match &s.user {
                Some(u) => format!("{} {u}: {}", s.step, s.status),
                None => format!("{}: {}", s.step, s.status),
            })
            .collect::<Vec<_>>();
        match result {
            Ok(()) => serde_json::to_string(&Report {
                mailbox: &request.address,
                steps: &steps,
            })
            .map_err(|e| e.to_string()),
            Err(e) if done.is_empty() => Err(e),
            Err(e) => Err(format!("{e}\ncompleted before that: {}", done.join("; "))),
        }
    }
}

fn parse(args: Vec<String>) -> Result<Request, String> {
    let mut args = Args::new(args);
    let name = args
        .value("name")?
        .ok_or("--name is required (the mailbox's name)")?;
    let address = args
        .value("address")?
        .ok_or("--address is required (the mailbox's primary SMTP address)")?;
    let full_access = dedup(args.values("full-access")?);
    let send_as = dedup(args.values("send-as")?);
    args.finish()?;
    if name.trim().is_empty() {
        return Err("--name must not be empty".into());
    }
    for a in std::iter::once(&address)
        .chain(&full_access)
        .chain(&send_as)
    {
        if !looks_like_address(a) {
            return Err(format!("{a:?} is not an address of the form user@domain"));
        }
    }
    Ok(Request {
        name: name.trim().to_owned(),
        address,
        full_access,
        send_as,
    })
}

fn looks_like_address(a: &str) -> bool {
    a.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !a.contains(char::is_whitespace)
    })
}

/// Keeps the first of each address (compared ignoring case).
fn dedup(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in list {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&a)) {
            out.push(a);
        }
    }
    out
}

/// Fails before the first call when the grant lacks something this request needs.
fn check_grants(r: &Request) -> Result<(), String> {
    let mut needs: Vec<(&str, &[&str])> = vec![
        ("Get-Mailbox", &["Identity"]),
        ("New-Mailbox", &["Name", "PrimarySmtpAddress", "Shared"]),
    ];
    if !r.full_access.is_empty() {
        needs.push(("Get-MailboxPermission", &["Identity"]));
        needs.push((
            "Add-MailboxPermission",
            &["Identity", "User", "AccessRights"],
        ));
    }
    if !r.send_as.is_empty() {
        needs.push(("Get-RecipientPermission", &["Identity"]));
        needs.push((
            "Add-RecipientPermission",
            &["Identity", "Trustee", "AccessRights", "Confirm"],
        ));
    }
    exchange::require(&needs).map(|_| ())
}

fn provision(r: &Request, steps: &mut Vec<Step>) -> Result<(), String> {
    let total = 1 + r.full_access.len() + r.send_as.len();
    let mut done = 0;
    let mut tick = |label: &str| {
        done += 1;
        log::progress(done as u64, Some(total as u64), label);
    };

    // 1. The mailbox.
    let status = match find_mailbox(&r.address)? {
        Some(existing) => {
            let kind = existing.recipient_type_details.unwrap_or_default();
            if !kind.is_empty() && kind != "SharedMailbox" {
                return Err(format!(
                    "{} already belongs to a {kind}, not a shared mailbox; nothing was changed",
                    r.address
                ));
            }
            log::info(format!("{} exists; not creating it", r.address));
            "exists"
        }
        None => {
            write(
                "New-Mailbox",
                &format!("creating {}", r.address),
                &json!({"Name": r.name, "PrimarySmtpAddress": r.address, "Shared": true}),
            )?;
            log::info(format!("created shared mailbox {} ({})", r.name, r.address));
            "created"
        }
    };
    steps.push(Step {
        step: "mailbox",
        user: None,
        status,
    });
    tick("mailbox");

    // 2. FullAccess.
    if !r.full_access.is_empty() {
        let present: Vec<MailboxPermission> =
            read("Get-MailboxPermission", &json!({"Identity": r.address}))?;
        for user in &r.full_access {
            let has = present.iter().any(|p| {
                p.grants("FullAccess")
                    && p.user
                        .as_deref()
                        .is_some_and(|u| u.eq_ignore_ascii_case(user))
            });
            let status = if has {
                "present"
            } else {
                write(
                    "Add-MailboxPermission",
                    &format!("granting FullAccess on {} to {user}", r.address),
                    &json!({"Identity": r.address, "User": user, "AccessRights": "FullAccess"}),
                )?;
                "added"
            };
            log::info(format!("FullAccess for {user}: {status}"));
            steps.push(Step {
                step: "full-access",
                user: Some(user.clone()),
                status,
            });
            tick("full-access");
        }
    }

    // 3. SendAs.
    if !r.send_as.is_empty() {
        let present: Vec<RecipientPermission> =
            read("Get-RecipientPermission", &json!({"Identity": r.address}))?;
        for user in &r.send_as {
            let has = present.iter().any(|p| {
                p.grants("SendAs")
                    && p.trustee
                        .as_deref()
                        .is_some_and(|t| t.eq_ignore_ascii_case(user))
            });
            let status = if has {
                "present"
            } else {
                write(
                    "Add-RecipientPermission",
                    &format!("granting SendAs on {} to {user}", r.address),
                    // Add-RecipientPermission asks for confirmation unless told not to.
                    &json!({"Identity": r.address, "Trustee": user, "AccessRights": "SendAs", "Confirm": false}),
                )?;
                "added"
            };
            log::info(format!("SendAs for {user}: {status}"));
            steps.push(Step {
                step: "send-as",
                user: Some(user.clone()),
                status,
            });
            tick("send-as");
        }
    }
    Ok(())
}

/// The mailbox at `address`, or `None` when Exchange says there is none.
fn find_mailbox(address: &str) -> Result<Option<Mailbox>, String> {
    match exchange::invoke::<Mailbox>("Get-Mailbox", &json!({"Identity": address})) {
        Ok(mut found) => Ok(found.pop()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(format!("looking up {address} (Get-Mailbox): {e}")),
    }
}

fn read<T: serde::de::DeserializeOwned>(
    cmdlet: &str,
    parameters: &serde_json::Value,
) -> Result<Vec<T>, String> {
    exchange::invoke(cmdlet, parameters).map_err(|e| format!("{cmdlet}: {e}"))
}

/// Runs a write once. It is never repeated here: an unknown outcome stops the plugin.
fn write(cmdlet: &str, what: &str, parameters: &serde_json::Value) -> Result<(), String> {
    match exchange::invoke::<serde_json::Value>(cmdlet, parameters) {
        Ok(_) => Ok(()),
        Err(CallError::OutcomeUnknown { message }) => Err(format!(
            "{what} ({cmdlet}): the outcome is unknown ({message}). It was not retried. Check the \
             mailbox's state before running again; this plugin skips what is already done."
        )),
        Err(e) => Err(format!("{what} ({cmdlet}): {e}")),
    }
}
