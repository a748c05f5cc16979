//! {{name}}: lists the first mailboxes of the tenant (a starting point: change what it calls,
//! then its manifest below and the grant in policy.toml, together).

use serde_json::json;
use warden_sdk::{Mailbox, Plugin, exchange, log};

// What it calls, exactly: warden grants a run only what the manifest declares and the policy
// allows.
warden_sdk::manifest! {
    name = "{{name}}",
    description = "Lists the first mailboxes of the tenant",
    cmdlets = {
        "Get-Mailbox" = ["ResultSize"],
    },
}

struct Scaffold;

impl Plugin for Scaffold {
    fn run(args: Vec<String>) -> Result<String, String> {
        let limit: u64 = match args.as_slice() {
            [] => 5,
            [n] => n.parse().map_err(|_| format!("{n:?} is not a count of mailboxes"))?,
            _ => return Err("usage: [COUNT]".to_owned()),
        };
        let params = json!({ "ResultSize": limit });
        let mut names = Vec::new();
        for mailbox in exchange::stream::<Mailbox>("Get-Mailbox", &params).map_err(|e| e.to_string())? {
            let mailbox = mailbox.map_err(|e| e.to_string())?;
            names.push(mailbox.display_name.unwrap_or_default());
        }
        log::info(format!("{} mailboxes", names.len()));
        Ok(json!({ "mailboxes": names }).to_string())
    }
}

warden_sdk::plugin!(Scaffold);
