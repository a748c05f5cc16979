//! `future-wit`: a test guest built against `warden:plugin@0.2.0` (the WIT copy in `wit/`),
//! a version the host does not provide. It really calls `exchange.invoke-batch`, which exists
//! only in 0.2.0, so the component imports `warden:plugin/exchange@0.2.0` with that function.
//! The host must refuse to load it with a message naming both versions; it is never meant to
//! run. If it ran, it would return the batch's results as JSON.

mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "plugin" });
}

use bindings::warden::plugin::exchange;

struct FutureWit;

impl bindings::Guest for FutureWit {
    fn run(args: Vec<String>) -> Result<String, String> {
        let calls = vec![("Get-Mailbox".to_owned(), r#"{"ResultSize": 1}"#.to_owned())];
        let results = exchange::invoke_batch(&calls);
        let single = exchange::invoke("Get-OrganizationConfig", "{}");
        Ok(format!(
            "{} batch results, single ok: {}, args: {}",
            results.len(),
            single.is_ok(),
            args.len()
        ))
    }
}

bindings::export!(FutureWit with_types_in bindings);

// The same manifest a 0.1 plugin would carry, written by hand (this crate does not use the
// SDK), so the host gets as far as the version check rather than stopping at the manifest.
const MANIFEST_TEXT: &[u8] = include_bytes!("../manifest.toml");
#[unsafe(link_section = "warden:manifest")]
#[used]
static MANIFEST: [u8; MANIFEST_TEXT.len()] = *include_bytes!("../manifest.toml");
