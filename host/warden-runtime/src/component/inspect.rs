//! Reading a component without compiling or running it: its hash, its top-level imports and
//! exports, the `warden:plugin` version it was built against, and the plugin manifest the SDK
//! embeds as a `warden:manifest` custom section (TOML) in the guest's core module.
//!
//! What it refuses: bytes that are not WebAssembly, a core module where a component is needed,
//! a binary that does not parse, a name (the manifest's, else the file stem) that is not 1 to 64
//! ASCII letters, digits, `-`, `_` or `.`, and a manifest that is not valid TOML of the expected
//! shape or that declares cmdlet, parameter or property names the policy would never accept. It only reads: it
//! never decides whether the host can link what a component imports (see [`check_imports`]).

use crate::RuntimeError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use warden_policy::Declaration;
use wasmparser::{Encoding, Parser, Payload};

/// The custom section the SDK writes the manifest into.
pub const MANIFEST_SECTION: &str = "warden:manifest";

/// The `warden:plugin` package version this host links.
pub const WIT_PACKAGE: &str = "warden:plugin";
/// Its version (any 0.1.x import resolves to it through wasmtime's semver matching).
pub const WIT_VERSION: (u64, u64, u64) = (0, 1, 0);

/// A manifest larger than this is not a manifest.
const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// The WASI preview 2 interfaces linked for plugins: what `std` needs, nothing that reaches
/// outside the sandbox (no sockets, name lookup or HTTP; filesystem without preopens).
pub const LINKED_WASI: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// The `warden:plugin` interfaces linked.
const LINKED_WARDEN: &[&str] = &["exchange", "log"];

/// What a component is, read without compiling it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginInfo {
    /// The manifest's `name`, or the file stem when there is no manifest. Grants name it.
    pub name: String,
    /// Whether `name` comes from the manifest (inside the component, so covered by its
    /// signature) rather than the file name: only then can a `signed_by` grant apply.
    pub name_from_manifest: bool,
    /// SHA-256 of the component bytes, lowercase hex. Grants pin it.
    pub sha256: String,
    /// Size of the component.
    pub size_bytes: u64,
    /// The `warden:plugin` package it imports, with its version (`warden:plugin@0.1.0`).
    pub wit_package: Option<String>,
    /// Its top-level imports (`wasi:cli/stdout@0.2.6`, `warden:plugin/exchange@0.1.0`, …).
    pub imports: Vec<String>,
    /// Its top-level exports (`run`).
    pub exports: Vec<String>,
    /// The manifest's description.
    pub description: Option<String>,
    /// The manifest's version.
    pub version: Option<String>,
    /// The declared cmdlets and, for each, the parameter names it will pass. `None` when it
    /// declares nothing (its runs get the whole grant).
    pub declared: Option<BTreeMap<String, Vec<String>>>,
    /// The result properties it reads, per cmdlet (the manifest's `[reads]`): what `inspect`
    /// checks against the grant's output shaping. Empty when it says nothing.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reads: BTreeMap<String, Vec<String>>,
}

impl PluginInfo {
    /// The declaration the broker intersects with the grant, if the plugin has one.
    pub fn declaration(&self) -> Option<Declaration> {
        let declared = self.declared.as_ref()?;
        // Validated when the info was read; a failure here would be a bug, so it declares
        // nothing rather than everything.
        Some(declaration_of(declared).unwrap_or_default())
    }
}

fn declaration_of(
    declared: &BTreeMap<String, Vec<String>>,
) -> Result<Declaration, warden_policy::DeclarationError> {
    let json = serde_json::json!({ "cmdlets": declared });
    Declaration::from_json_str(&json.to_string())
}

/// The manifest's shape. Unknown keys are ignored so a newer SDK's manifest still loads.
#[derive(Debug, Deserialize)]
struct Manifest {
    name: Option<String>,
    version: Option<String>,
    description: Option<String>,
    cmdlets: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    reads: BTreeMap<String, Vec<String>>,
}

pub(crate) fn load_error(
    what: &str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> RuntimeError {
    RuntimeError::Load {
        what: what.to_owned(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Reads `bytes` as a plugin component; `what` names it in errors (a path, usually).
pub fn inspect(what: &str, bytes: &[u8]) -> Result<PluginInfo, RuntimeError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(load_error(
            what,
            "not a WebAssembly file",
            "give the .wasm component a plugin build produced (`cargo build --target wasm32-wasip2`)",
        ));
    }
    let mut depth = 0usize;
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut manifest: Option<&[u8]> = None;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| {
            load_error(
                what,
                format!("not a valid WebAssembly component (truncated or corrupt): {e}"),
                "rebuild the plugin, or copy it again if it was cut short",
            )
        })?;
        match payload {
            Payload::Version {
                encoding: Encoding::Module,
                ..
            } if depth == 0 => {
                return Err(load_error(
                    what,
                    "this is a core WebAssembly module, not a component: it was built for \
                     wasm32-wasip1 or as a core module",
                    "build with `cargo build --target wasm32-wasip2`",
                ));
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| parse_error(what, &e))?;
                    imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| parse_error(what, &e))?;
                    exports.push(export.name.name.to_owned());
                }
            }
            Payload::CustomSection(reader) if reader.name() == MANIFEST_SECTION => {
                if manifest.is_some() {
                    return Err(load_error(
                        what,
                        format!("it holds more than one `{MANIFEST_SECTION}` section"),
                        "link the plugin against one warden-sdk only",
                    ));
                }
                manifest = Some(reader.data());
            }
            _ => {}
        }
    }
    let wit_package = imports.iter().find_map(|name| {
        let (package, _, version) = split_import(name)?;
        (package == WIT_PACKAGE).then(|| match version {
            Some(v) => format!("{package}@{v}"),
            None => package.to_owned(),
        })
    });
    let stem = Path::new(what)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| what.to_owned());
    let mut info = PluginInfo {
        name: stem,
        name_from_manifest: false,
        sha256: hex(&Sha256::digest(bytes)),
        size_bytes: bytes.len() as u64,
        wit_package,
        imports,
        exports,
        description: None,
        version: None,
        declared: None,
        reads: BTreeMap::new(),
    };
    if let Some(section) = manifest {
        apply_manifest(what, section, &mut info)?;
    }
    // Every reader of a component (`inspect`, `run`, `policy init`) applies the same name
    // rule, so a name one of them accepts is never refused by another.
    check_name(what, &info)?;
    Ok(info)
}

/// Grants name the plugin, and warden prints the name: a name taken from the file name
/// (whoever ships the file chose it) follows the same rule as a manifest's.
fn check_name(what: &str, info: &PluginInfo) -> Result<(), RuntimeError> {
    if !valid_name(&info.name) {
        return Err(load_error(
            what,
            format!(
                "it has no manifest name, and its file name gives {:?}, which is not 1 to 64 \
                 ASCII letters, digits, `-`, `_` or `.`",
                info.name
            ),
            "rename the file (e.g. `my-plugin.wasm`), or give the plugin a manifest name",
        ));
    }
    Ok(())
}

/// A plugin name: 1 to 64 ASCII letters, digits, `-`, `_` or `.`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn parse_error(what: &str, e: &wasmparser::BinaryReaderError) -> RuntimeError {
    load_error(
        what,
        format!("not a valid WebAssembly component: {e}"),
        "rebuild the plugin",
    )
}

fn apply_manifest(what: &str, section: &[u8], info: &mut PluginInfo) -> Result<(), RuntimeError> {
    let fix = "fix the manifest the plugin embeds (warden-sdk's `manifest!`) and rebuild";
    if section.len() > MAX_MANIFEST_BYTES {
        return Err(load_error(
            what,
            format!(
                "its `{MANIFEST_SECTION}` section is {} bytes, over the {MAX_MANIFEST_BYTES}-byte limit",
                section.len()
            ),
            fix,
        ));
    }
    // The SDK may pad the section with NULs (a fixed-size static).
    let text = std::str::from_utf8(section)
        .map_err(|_| load_error(what, "its plugin manifest is not UTF-8 text", fix))?
        .trim_end_matches('\0');
    let manifest: Manifest = toml::from_str(text).map_err(|e| {
        load_error(
            what,
            format!("its plugin manifest is not valid: {}", e.message()),
            fix,
        )
    })?;
    if let Some(name) = manifest.name {
        if !valid_name(&name) {
            return Err(load_error(
                what,
                format!(
                    "its manifest name {name:?} is not 1 to 64 ASCII letters, digits, `-`, `_` or `.`"
                ),
                fix,
            ));
        }
        info.name = name;
        info.name_from_manifest = true;
    }
    info.version = manifest.version;
    info.description = manifest.description;
    if let Some(cmdlets) = manifest.cmdlets {
        declaration_of(&cmdlets)
            .map_err(|e| load_error(what, format!("its plugin manifest is not valid: {e}"), fix))?;
        info.declared = Some(cmdlets);
    }
    for (cmdlet, properties) in &manifest.reads {
        warden_policy::names::validate_cmdlet(cmdlet)
            .map_err(|e| load_error(what, format!("its plugin manifest's [reads]: {e}"), fix))?;
        if let Some(bad) = properties.iter().find(|p| !valid_property(p)) {
            return Err(load_error(
                what,
                format!(
                    "its plugin manifest's [reads] lists {bad:?} for {cmdlet}, which is not a \
                     plain property name (ASCII letters, digits, `_`, `.`, `@`)"
                ),
                fix,
            ));
        }
    }
    info.reads = manifest.reads;
    Ok(())
}

/// A result property name as a policy's `output` list may name it.
fn valid_property(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= warden_policy::names::MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@'))
}

/// Splits `ns:pkg/iface@version` into (`ns:pkg`, `iface`, `version`).
fn split_import(name: &str) -> Option<(&str, &str, Option<&str>)> {
    let (path, version) = match name.split_once('@') {
        Some((p, v)) => (p, Some(v)),
        None => (name, None),
    };
    let (package, interface) = path.split_once('/')?;
    Some((package, interface, version))
}

/// `major.minor.patch` (pre-release and build suffixes ignored).
fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

/// True when an import of `version` resolves to what we link at `provided` (semver: same
/// major, and for 0.x the same minor).
fn compatible(version: Option<&str>, provided: (u64, u64, u64)) -> bool {
    match version.and_then(parse_version) {
        Some((0, minor, _)) => provided.0 == 0 && provided.1 == minor,
        Some((major, _, _)) => major == provided.0,
        None => false,
    }
}

/// How to build each guest language without the network interfaces warden refuses. Interpreter
/// toolchains import them by default, whether or not the plugin's code uses them.
const NETWORK_IMPORT_FIX: &str = "build it without them: componentize-py: `componentize-py \
     componentize --stub-wasi` (sdk/python/build.py does); componentize-js: turn off its `http` \
     and `fetch-event` features (`disableFeatures: [\"http\", \"fetch-event\"]`); cargo: remove \
     the dependency that opens sockets or speaks HTTP (reqwest, std::net) and rebuild";

/// Refuses a component whose imports this host does not link: another `warden:plugin`
/// version, any network or HTTP interface, anything unknown. Runs before compiling so the
/// operator gets the reason in words.
pub(crate) fn check_imports(what: &str, info: &PluginInfo) -> Result<(), RuntimeError> {
    let provided = format!(
        "{WIT_PACKAGE}@{}.{}.{}",
        WIT_VERSION.0, WIT_VERSION.1, WIT_VERSION.2
    );
    // The package version first: it explains every other mismatch of an old or new plugin.
    for name in &info.imports {
        if let Some((WIT_PACKAGE, _, version)) = split_import(name)
            && !compatible(version, WIT_VERSION)
        {
            return Err(load_error(
                what,
                format!(
                    "built against {WIT_PACKAGE}@{}; this warden provides {provided}",
                    version.unwrap_or("(no version)")
                ),
                "rebuild it with warden-sdk 0.1 or upgrade warden",
            ));
        }
    }
    for name in &info.imports {
        let linked = match split_import(name) {
            Some((WIT_PACKAGE, interface, _)) => LINKED_WARDEN.contains(&interface),
            Some((package, interface, version)) if package.starts_with("wasi:") => {
                let bare = &name[..package.len() + 1 + interface.len()];
                LINKED_WASI.contains(&bare) && compatible(version, (0, 2, 0))
            }
            _ => false,
        };
        if !linked {
            let network = name.starts_with("wasi:sockets/") || name.starts_with("wasi:http/");
            let (why, fix) = if network {
                (
                    "plugins get no network: they reach Exchange only through warden:plugin/exchange",
                    NETWORK_IMPORT_FIX,
                )
            } else {
                (
                    "plugins get only warden:plugin@0.1 and basic WASI (stdio, clocks, random)",
                    "remove the code or dependency that needs it and rebuild",
                )
            };
            return Err(load_error(
                what,
                format!("it imports `{name}`, which this warden does not provide ({why})"),
                fix,
            ));
        }
    }
    if !info.exports.iter().any(|e| e == "run") {
        return Err(load_error(
            what,
            "it does not export `run` (the warden:plugin world's entry point)",
            "build it with warden-sdk (or wit-bindgen against wit/plugin.wit) and export `run`",
        ));
    }
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_match_like_semver() {
        assert!(compatible(Some("0.1.0"), (0, 1, 0)));
        assert!(compatible(Some("0.1.7"), (0, 1, 0)));
        assert!(!compatible(Some("0.2.0"), (0, 1, 0)));
        assert!(!compatible(Some("1.0.0"), (0, 1, 0)));
        assert!(!compatible(None, (0, 1, 0)));
        assert!(compatible(Some("0.2.6"), (0, 2, 0)));
        assert!(!compatible(Some("0.3.0-rc-2025-09-16"), (0, 2, 0)));
    }

    #[test]
    fn splits_import_names() {
        assert_eq!(
            split_import("wasi:cli/stdout@0.2.6"),
            Some(("wasi:cli", "stdout", Some("0.2.6")))
        );
        assert_eq!(split_import("run"), None);
    }
}
