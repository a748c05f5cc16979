//! The wasmtime component host: loads plugin components (checked, compiled or taken from the
//! host's compiled-code cache, linked once) and runs them against the broker, one fresh
//! `Store` per run.
//!
//! What it refuses: loading a file that is not a `warden:plugin@0.1` component or that imports
//! anything this host does not link (see `inspect`); starting a guest before the broker has
//! begun its run under a grant pinned to the component's sha256; and letting a guest outlive
//! its limits. A busy loop is stopped at its CPU budget (epoch ticks compare guest CPU time
//! with the grant's); memory at `min(grant, host)` bytes for the whole run — every linear
//! memory and table of every core instance summed — with the counts of instances, memories
//! and tables, table sizes, live handles, open host resources, random bytes and data per host
//! call capped by `RunCaps` (the pooling allocator reserves exactly that per run, so one
//! guest cannot starve the others); the whole run (host calls included) at the grant's wall
//! clock; and output at the host's output cap. A stop names the limit that was reached.
//!
//! A component is compiled (or taken from the cache) only once the broker has found a grant
//! for it ([`PluginHost::check`], then [`PluginHost::run_checked`]): a component the
//! policy refuses is never compiled or cached. Its signature (embedded, or detached in
//! `<file>.sig` beside it) is checked against the policy's trusted keys before the grant is
//! looked up, so a grant with `signed_by` never compiles an unverified component; the key id it
//! verified under is part of its principal (and so of every audit line of the run).
//!
//! For tests and investigations a host can be built to inspect guest memory
//! ([`PluginHostBuilder::inspect_guest_memory`]): the observer then gets every linear memory of
//! the guest after its run, however it ended.

mod cache;
mod host;
mod inspect;
mod output;

pub use inspect::{MANIFEST_SECTION, PluginInfo};

use crate::supervisor::Supervisor;
use crate::{
    GuestMemory, GuestOutput, HostLimit, RunObserver, RunOutcome, RunReport, RunRequest,
    RuntimeError, RuntimeLimits, StopReason,
};
use cache::CodeCache;
use host::{PluginPre, RunState};
use inspect::load_error;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use warden_broker::Broker;
use warden_policy::{Declaration, PluginSignature, Principal, SignatureVerdict};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

/// Component instances the pooling allocator keeps slots for: the most runs at once.
const POOL_INSTANCES: u32 = 32;

/// What one run may make the host create or hold for it, besides its memory budget (which
/// also covers its tables). A Rust guest built with warden-sdk needs 1 memory, about 4 core
/// instances and 4 tables, and a few dozen handles. An interpreter guest links its runtime as
/// many small core modules: a componentize-py 0.25 plugin instantiates 38 (still 1 memory and
/// 2 tables), so the instance count leaves room for that; an instance without a memory or
/// table costs the host only its small instance record, while memories and tables stay few and
/// every byte of them counts against the run's memory budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunCaps {
    /// Core instances per run (and per component in the pool).
    pub(crate) core_instances: usize,
    /// Linear memories per run.
    pub(crate) memories: usize,
    /// Tables per run.
    pub(crate) tables: usize,
    /// Elements of any one table.
    pub(crate) table_elements: usize,
    /// Live component-model handles (wasmtime's store-wide count).
    pub(crate) resource_handles: usize,
    /// Entries of the host's resource table: result streams, WASI streams and pollables.
    pub(crate) host_resources: usize,
    /// Bytes one `get-random-bytes` call may ask the host to make.
    pub(crate) random_bytes: u64,
}

pub(crate) const RUN_CAPS: RunCaps = RunCaps {
    core_instances: 64,
    memories: 2,
    tables: 8,
    table_elements: 20_000,
    resource_handles: 4096,
    host_resources: 1024,
    random_bytes: 1024 * 1024,
};

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Loads and runs plugin components. One per process; share it through an `Arc`.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<RunState>,
    limits: RuntimeLimits,
    cache: Option<CodeCache>,
    pooling: bool,
    /// Guest-debug instrumentation is on and runs hand their memories to the observer.
    inspect_memory: bool,
    /// With the pooling allocator, runs past its instance slots wait here for a free one
    /// (before their run begins) instead of failing.
    slots: Option<Arc<tokio::sync::Semaphore>>,
    ticker: Option<Ticker>,
}

impl fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginHost")
            .field("limits", &self.limits)
            .field("cache", &self.cache)
            .field("pooling", &self.pooling)
            .field("inspect_memory", &self.inspect_memory)
            .finish_non_exhaustive()
    }
}

/// The thread that advances the engine's epoch every `tick`; it stops when its sender drops.
#[derive(Debug)]
struct Ticker {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Ticker {
    fn start(engine: Engine, tick: std::time::Duration) -> Result<Self, RuntimeError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("warden-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })
            .map_err(|e| RuntimeError::Setup(format!("cannot start the epoch thread: {e}")))?;
        Ok(Self { stop, thread })
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        if let Some(Ticker { stop, thread }) = self.ticker.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

/// A component that passed the checks that need no compiling (a `warden:plugin@0.1`
/// component importing only what this host links), not yet compiled: what
/// [`PluginHost::run_checked`] compiles once the broker has found a grant for it.
#[derive(Clone)]
pub struct CheckedPlugin {
    what: String,
    bytes: Arc<Vec<u8>>,
    /// Its detached signature (`<file>.sig`), if there is one.
    detached_signature: Option<Arc<Vec<u8>>>,
    info: PluginInfo,
}

impl fmt::Debug for CheckedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedPlugin")
            .field("what", &self.what)
            .field("name", &self.info.name)
            .field("sha256", &self.info.sha256)
            .finish_non_exhaustive()
    }
}

impl CheckedPlugin {
    /// What the component is.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Its principal under `policy`: with its signature checked against the policy's trusted
    /// keys when the policy trusts any (the check hashes the bytes; nothing is compiled).
    pub fn principal_under(&self, policy: &warden_policy::Policy) -> Principal {
        plugin_principal(
            &self.info,
            &self.bytes,
            self.detached_signature.as_deref().map(Vec::as_slice),
            policy,
        )
    }

    /// The detached signature read beside it, if any.
    pub fn detached_signature(&self) -> Option<&[u8]> {
        self.detached_signature.as_deref().map(Vec::as_slice)
    }
}

/// A plugin's principal under `policy` (what its grants are matched against), from what
/// inspecting it found and its bytes: its signature checked against the policy's trusted
/// keys when the policy trusts any, with the key the policy counts first (the signer the
/// audit names). Every command that asks the policy about a plugin builds it here.
pub fn plugin_principal(
    info: &PluginInfo,
    component: &[u8],
    detached: Option<&[u8]>,
    policy: &warden_policy::Policy,
) -> Principal {
    let keys = policy.trusted_keys();
    let signature = (!keys.is_empty()).then(|| {
        let mut verdict = check_signature(component, detached, &keys);
        if let SignatureVerdict::Verified { key_ids } = &mut verdict
            && let Some(counted) = policy.signer_for(&info.name, key_ids).cloned()
        {
            key_ids.retain(|id| *id != counted);
            key_ids.insert(0, counted);
        }
        PluginSignature {
            verdict,
            version: info.version.clone(),
            name_signed: info.name_from_manifest,
        }
    });
    Principal::Plugin {
        name: info.name.clone(),
        sha256: info.sha256.clone(),
        signature,
    }
}

/// What `keys` make of a component's signature (embedded, or `detached`).
pub fn check_signature(
    component: &[u8],
    detached: Option<&[u8]>,
    keys: &[warden_signature::PublicKey],
) -> SignatureVerdict {
    use warden_signature::Verdict;
    match warden_signature::verify(component, detached, keys) {
        Ok(Verdict::Unsigned) => SignatureVerdict::Unsigned,
        Ok(Verdict::Verified(ids)) => SignatureVerdict::Verified {
            key_ids: ids.iter().map(ToString::to_string).collect(),
        },
        Ok(Verdict::OtherKey(ids)) => SignatureVerdict::OtherKey {
            key_ids: ids.iter().map(ToString::to_string).collect(),
        },
        Ok(Verdict::Tampered(id)) => SignatureVerdict::Tampered {
            key_id: id.to_string(),
        },
        Err(e) => SignatureVerdict::Invalid {
            reason: e.to_string(),
        },
    }
}

/// Reads the detached signature of the component at `path` (`<path>.sig`): `None` only when
/// there is no such file; any other failure is an error, not "unsigned". It must be a regular
/// file (opened without blocking, so a FIFO planted there cannot stall the load), and it is
/// read bounded: a signature is about 120 bytes, anything past the bound is refused as too
/// large when it is checked.
pub fn read_detached_signature(path: &Path) -> Result<Option<Vec<u8>>, RuntimeError> {
    use std::io::Read;
    let sig_path = detached_signature_path(path);
    let what = sig_path.display().to_string();
    let cannot = |e: std::io::Error| {
        load_error(
            &what,
            format!("cannot read the detached signature: {e}"),
            "check its permissions, or delete it",
        )
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        rustix::fs::OFlags::NONBLOCK.bits() as i32,
    );
    let file = match options.open(&sig_path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cannot(e)),
    };
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(load_error(
            &what,
            "the detached signature is not a regular file".to_owned(),
            "replace it with the .sig file `warden plugin sign --detached` wrote, or delete it",
        ));
    }
    let mut signature = Vec::new();
    file.take(warden_signature::MAX_SIGNATURE_BYTES as u64 + 1)
        .read_to_end(&mut signature)
        .map_err(cannot)?;
    Ok(Some(signature))
}

/// The detached signature file of the component at `path`: `<path>.sig`.
pub fn detached_signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// A checked, compiled, linked plugin, ready to run any number of times. Cheap to clone.
#[derive(Clone)]
pub struct LoadedPlugin {
    inner: Arc<Loaded>,
}

struct Loaded {
    info: PluginInfo,
    declaration: Option<Declaration>,
    /// What it was compiled from: each run checks its signature under the broker's policy.
    checked: CheckedPlugin,
    pre: PluginPre<RunState>,
    from_cache: bool,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.inner.info.name)
            .field("sha256", &self.inner.info.sha256)
            .field("from_cache", &self.inner.from_cache)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// What the component is.
    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }
    /// Its name (manifest or file stem), as grants name it.
    pub fn name(&self) -> &str {
        &self.inner.info.name
    }
    /// SHA-256 of its bytes, as grants pin it.
    pub fn sha256(&self) -> &str {
        &self.inner.info.sha256
    }
    /// True when its compiled code came from the cache directory.
    pub fn loaded_from_cache(&self) -> bool {
        self.inner.from_cache
    }
}

fn engine_config(limits: &RuntimeLimits, pooling: bool, inspect_memory: bool) -> Config {
    let mut config = Config::new();
    config
        // Instrumented code lets the host reach every memory of an instance, exported or not.
        // It is part of the engine's compatibility hash, so the code cache keeps the two kinds
        // of compiled code under different names (and wasmtime refuses to mix them).
        .guest_debug(inspect_memory)
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        // The component-model async ABI is not part of our WIT; without it instantiation and
        // host calls are measurably cheaper.
        .concurrency_support(false);
    if inspect_memory {
        // Inspection (tests, investigations) reads what a guest put in its memories, which no
        // optimisation changes. Unoptimised, the instrumented JavaScript interpreter compiles
        // with a quarter less CPU (its canary test: 140 s of CPU before, 103 s after).
        config.cranelift_opt_level(wasmtime::OptLevel::None);
    }
    if pooling {
        // Every slot can hold the most one run may use, so a run that gets a slot gets its
        // whole allowance whatever the others do; a component needing more per run is refused
        // when it is compiled.
        let caps = RUN_CAPS;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .max_core_instances_per_component(to_u32(caps.core_instances))
            .max_memories_per_component(to_u32(caps.memories))
            .max_tables_per_component(to_u32(caps.tables))
            .table_elements(caps.table_elements)
            .total_core_instances(POOL_INSTANCES * to_u32(caps.core_instances))
            .total_memories(POOL_INSTANCES * to_u32(caps.memories))
            .total_tables(POOL_INSTANCES * to_u32(caps.tables))
            .total_stacks(POOL_INSTANCES)
            .max_memory_size(usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Builds a [`PluginHost`]: its limits, its compiled-code cache, and whether it inspects guest
/// memory.
#[derive(Debug, Clone)]
pub struct PluginHostBuilder {
    limits: RuntimeLimits,
    cache_dir: Option<PathBuf>,
    cache_key: Option<PathBuf>,
    inspect_memory: bool,
}

impl PluginHostBuilder {
    /// The on-disk compiled-code cache directory (created 0700 if missing); none by default.
    /// Refused when someone else owns it or group or others can write it.
    pub fn cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache_dir = dir;
        self
    }

    /// The file holding the per-install key that binds each cached file to its component
    /// (created 0600 if missing; refused when someone else owns it or others can read or
    /// write it). Keep it out of the cache directory, beside the audit key. Default:
    /// `<cache dir>.key` beside the cache directory (never inside it: whoever can write
    /// cached files must not also be handed the key that tags them).
    pub fn cache_key(mut self, path: Option<PathBuf>) -> Self {
        self.cache_key = path;
        self
    }

    /// Off by default. On, guests are compiled with wasmtime's guest-debug instrumentation and
    /// every run hands all linear memories of the guest to [`RunObserver::guest_memory`] after
    /// it ends (completed, failed, trapped, or stopped at a limit), before its store is
    /// dropped. For tests and investigations: the code is instrumented and unoptimised, so it
    /// runs slower (a tight CPU budget is reached sooner), and its cache entries never mix with
    /// normal ones (the engine hash in their names differs).
    pub fn inspect_guest_memory(mut self, on: bool) -> Self {
        self.inspect_memory = on;
        self
    }

    /// Engine (pooling allocator, epoch interruption, component model), one linker, the epoch
    /// ticker thread (stops when the host is dropped), and the cache.
    pub fn build(self) -> Result<PluginHost, RuntimeError> {
        let Self {
            limits,
            cache_dir,
            cache_key,
            inspect_memory,
        } = self;
        let (engine, pooling) = match Engine::new(&engine_config(&limits, true, inspect_memory)) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(error = %e, "the pooling allocator is unavailable; instantiating on demand (slower)");
                let engine = Engine::new(&engine_config(&limits, false, inspect_memory))
                    .map_err(|e| RuntimeError::Setup(format!("wasmtime engine: {e}")))?;
                (engine, false)
            }
        };
        let linker = host::linker(&engine)
            .map_err(|e| RuntimeError::Setup(format!("linking the plugin API: {e}")))?;
        let cache = cache_dir
            .map(|dir| {
                let key = match cache_key {
                    Some(key) => key,
                    None => default_cache_key(&dir)?,
                };
                CodeCache::open(dir, &key, &engine)
            })
            .transpose()?;
        let ticker = Some(Ticker::start(engine.clone(), limits.tick)?);
        let slots = pooling.then(|| Arc::new(tokio::sync::Semaphore::new(POOL_INSTANCES as usize)));
        Ok(PluginHost {
            engine,
            linker,
            limits,
            cache,
            pooling,
            inspect_memory,
            slots,
            ticker,
        })
    }
}

/// `<dir>.key` beside the cache directory `dir`.
fn default_cache_key(dir: &Path) -> Result<PathBuf, RuntimeError> {
    let name = dir.file_name().ok_or_else(|| {
        RuntimeError::Setup(format!(
            "compiled-code cache {}: has no name to put its key beside\n  fix: name the cache key file explicitly (--cache-key)",
            dir.display()
        ))
    })?;
    let mut key = name.to_owned();
    key.push(".key");
    Ok(dir.with_file_name(key))
}

impl PluginHost {
    /// A host with these limits and the optional on-disk compiled-code cache in `cache_dir`
    /// (see [`PluginHostBuilder`]).
    pub fn new(limits: RuntimeLimits, cache_dir: Option<PathBuf>) -> Result<Self, RuntimeError> {
        Self::builder(limits).cache_dir(cache_dir).build()
    }

    /// A builder for a host with these limits; nothing else is on until asked for.
    pub fn builder(limits: RuntimeLimits) -> PluginHostBuilder {
        PluginHostBuilder {
            limits,
            cache_dir: None,
            cache_key: None,
            inspect_memory: false,
        }
    }

    /// True when this host uses the pooling allocator (false: instances are allocated on
    /// demand, because the pool could not be reserved).
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// For benchmarks only (their bare wasmtime baseline runs on exactly this engine's
    /// configuration): not part of the API. An embedder holding the engine could cut running
    /// plugins' deadlines short (`increment_epoch`) or take pooling slots outside the host's
    /// limit; a plugin runs only through [`PluginHost::run`] and its siblings.
    #[doc(hidden)]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads what a component is without compiling or running it: name, sha256, size, the
    /// `warden:plugin` version it imports, imports, exports, its manifest's declaration.
    ///
    /// A name taken from the file name (no manifest name) must follow the manifest name rule,
    /// here as in [`PluginHost::check`]: the grant that names it is the same either way.
    pub fn inspect(what: &str, bytes: &[u8]) -> Result<PluginInfo, RuntimeError> {
        inspect::inspect(what, bytes)
    }

    /// Loads the component at `path` (see [`PluginHost::load_bytes`]).
    pub fn load(&self, path: &Path) -> Result<LoadedPlugin, RuntimeError> {
        self.compile(&Self::check(path)?)
    }

    /// Checks, compiles (or takes from the cache) and links a component; `what` names it in
    /// errors. This compiles whatever the policy says: a caller holding a broker should use
    /// [`PluginHost::check_bytes`] and [`PluginHost::run_checked`], which compile only a
    /// component the policy grants.
    pub fn load_bytes(&self, what: &str, bytes: Vec<u8>) -> Result<LoadedPlugin, RuntimeError> {
        self.compile(&Self::check_bytes(what, bytes)?)
    }

    /// Reads and checks the component at `path` without compiling it (see
    /// [`PluginHost::check_bytes`]).
    pub fn check(path: &Path) -> Result<CheckedPlugin, RuntimeError> {
        let what = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            load_error(
                &what,
                format!("cannot read it: {e}"),
                "check the path and its permissions",
            )
        })?;
        let mut checked = Self::check_bytes(&what, bytes)?;
        checked.detached_signature = read_detached_signature(path)?.map(Arc::new);
        Ok(checked)
    }

    /// Checks what can be checked without compiling: a `warden:plugin@0.1` component, with a
    /// valid manifest, importing only what this host links and exporting `run`.
    pub fn check_bytes(what: &str, bytes: Vec<u8>) -> Result<CheckedPlugin, RuntimeError> {
        let info = inspect::inspect(what, &bytes)?;
        inspect::check_imports(what, &info)?;
        Ok(CheckedPlugin {
            what: what.to_owned(),
            bytes: Arc::new(bytes),
            detached_signature: None,
            info,
        })
    }

    /// Compiles (or takes from the cache) and links a checked component.
    fn compile(&self, checked: &CheckedPlugin) -> Result<LoadedPlugin, RuntimeError> {
        let CheckedPlugin {
            what, bytes, info, ..
        } = checked;
        let what = what.as_str();
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.get(&self.engine, &info.sha256));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => {
                let component = Component::from_binary(&self.engine, bytes).map_err(|e| {
                    let message = first_line(&e);
                    // The pooling allocator's per-run counts (see `RunCaps`).
                    if message.contains("in the pooling allocator") {
                        load_error(
                            what,
                            format!("it needs more than this warden allows one run: {message}"),
                            "a plugin built with warden-sdk needs far fewer; rebuild it from its \
                             source with warden-sdk",
                        )
                    } else {
                        load_error(
                            what,
                            format!("not a valid component: {message}"),
                            "rebuild the plugin with `cargo build --target wasm32-wasip2`",
                        )
                    }
                })?;
                if let Some(cache) = &self.cache {
                    cache.put(&info.sha256, &component);
                }
                component
            }
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            load_error(
                what,
                format!("its imports do not match what this warden provides: {e:#}"),
                "rebuild it with warden-sdk 0.1 against this warden's wit/plugin.wit",
            )
        })?;
        let pre = PluginPre::new(instance_pre).map_err(|e| {
            load_error(
                what,
                format!(
                    "it does not export `run: func(args: list<string>) -> result<string, string>`: {e:#}"
                ),
                "build it with warden-sdk 0.1 (the warden:plugin world)",
            )
        })?;
        Ok(LoadedPlugin {
            inner: Arc::new(Loaded {
                info: info.clone(),
                declaration: info.declaration(),
                checked: checked.clone(),
                pre,
                from_cache,
            }),
        })
    }

    /// Waits for a free instance slot (pooling allocator only).
    async fn slot(&self) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, RuntimeError> {
        match &self.slots {
            // The semaphore is never closed, so acquiring only waits.
            Some(slots) => Ok(Some(slots.clone().acquire_owned().await.map_err(|_| {
                RuntimeError::Setup("the plugin instance pool is closed".to_owned())
            })?)),
            None => Ok(None),
        }
    }

    /// Runs a checked component once, compiling it (or taking it from the cache) only after the
    /// broker has found a grant for it: a component the policy refuses is never compiled or
    /// cached. `Err` means the run never started (refused), or started but its component could
    /// not be compiled (its run is closed as failed in the trail).
    pub async fn run_checked(
        &self,
        checked: &CheckedPlugin,
        broker: &Broker,
        request: RunRequest,
    ) -> Result<RunReport, RuntimeError> {
        let _slot = self.slot().await?;
        let declaration = checked.info.declaration();
        let supervisor = Supervisor::begin(
            broker,
            checked.principal_under(broker.policy()),
            declaration.as_ref(),
            &self.limits,
            &request,
        )?;
        let plugin = match self.compile(checked) {
            Ok(plugin) => plugin,
            Err(error) => {
                supervisor.abandon(&error.to_string());
                return Err(error);
            }
        };
        Ok(self.run_begun(&plugin, supervisor, request).await)
    }

    /// Runs `plugin` once under the grant the broker finds for it. `Err` means the run never
    /// started (refused); every started run ends in a [`RunReport`] and a closing audit line.
    pub async fn run(
        &self,
        plugin: &LoadedPlugin,
        broker: &Broker,
        request: RunRequest,
    ) -> Result<RunReport, RuntimeError> {
        let loaded = &plugin.inner;
        if !Engine::same(&self.engine, loaded.pre.engine()) {
            return Err(RuntimeError::Setup(format!(
                "plugin {} was loaded by another PluginHost",
                loaded.info.name
            )));
        }
        let _slot = self.slot().await?;
        let supervisor = Supervisor::begin(
            broker,
            loaded.checked.principal_under(broker.policy()),
            loaded.declaration.as_ref(),
            &self.limits,
            &request,
        )?;
        Ok(self.run_begun(plugin, supervisor, request).await)
    }

    /// Runs a compiled plugin under a run its supervisor has begun, and finishes the run.
    async fn run_begun(
        &self,
        plugin: &LoadedPlugin,
        supervisor: Arc<Supervisor>,
        request: RunRequest,
    ) -> RunReport {
        let loaded = &plugin.inner;
        let caps = RUN_CAPS;
        let memory_bytes = supervisor
            .run()
            .grant()
            .budgets()
            .memory_bytes
            .min(self.limits.max_memory_bytes);
        let state = RunState::new(supervisor.clone(), memory_bytes, caps);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_max_component_handles(caps.resource_handles);
        // What the host copies out of the guest in one call is bounded by the run's memory
        // (and by wasmtime's default, whichever is smaller).
        let fuel = usize::try_from(memory_bytes).unwrap_or(usize::MAX);
        store.set_hostcall_fuel(fuel.min(store.hostcall_fuel()));
        let hostcall_bytes = store.hostcall_fuel() as u64;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let supervisor = &ctx.data().supervisor;
            if supervisor.check().is_some() {
                return Ok(UpdateDeadline::Interrupt);
            }
            // Yield every tick so the run's timeout (and other tasks) get their turn even
            // while the guest spins.
            Ok(UpdateDeadline::YieldCustom(1, supervisor.yield_now()))
        });
        let max_output = self.limits.max_output_bytes;
        let pre = loaded.pre.clone();
        let args = request.args;
        // The store stays out here so it outlives a call the wall clock cancels: its memories
        // can still be inspected, and it is dropped (with any stream the guest left open)
        // before the run's closing line either way.
        // The guest's CPU and wall clocks start here, before the race below reads the
        // deadline: compiling it and beginning the run were not its time.
        supervisor.start_guest();
        let call = async {
            let plugin = pre.instantiate_async(&mut store).await?;
            plugin.call_run(&mut store, &args).await
        };
        // Also raced here: a guest waiting in WASI (a sleep) checks no epoch.
        let outcome = match supervisor.guest_call(call).await {
            Ok(result) => outcome_of(result, store.data(), max_output, hostcall_bytes),
            Err(reason) => RunOutcome::Stopped { reason },
        };
        supervisor.end_cpu();
        if self.inspect_memory {
            hand_over_memories(&mut store, request.observer.as_ref());
        }
        drop(store);
        supervisor.finish(outcome)
    }
}

/// Gives the observer every linear memory of the store's core instances, each once (an
/// instance that imports another's memory sees the same one).
fn hand_over_memories(store: &mut Store<RunState>, observer: &dyn RunObserver) {
    let mut seen = HashSet::new();
    let mut memories = Vec::new();
    for (instance_index, instance) in store.debug_all_instances().into_iter().enumerate() {
        // `None` past the last index (and for shared memories, which components cannot have).
        for index in 0.. {
            let Some(memory) = instance.debug_memory(&mut *store, index) else {
                break;
            };
            if seen.insert(memory.data_ptr(&*store).addr()) {
                memories.push((instance_index, index, memory));
            }
        }
    }
    let memories: Vec<GuestMemory<'_>> = memories
        .iter()
        .map(|(instance, index, memory)| GuestMemory {
            instance: *instance,
            index: *index,
            data: memory.data(&*store),
        })
        .collect();
    observer.guest_memory(&memories);
}

/// How a guest call ended, in the run's terms.
fn outcome_of(
    result: wasmtime::Result<Result<String, String>>,
    state: &RunState,
    max_output: usize,
    hostcall_bytes: u64,
) -> RunOutcome {
    let stopped = |reason| RunOutcome::Stopped { reason };
    match result {
        Ok(Ok(text)) if text.len() > max_output => stopped(StopReason::Output {
            size_bytes: text.len() as u64,
            limit_bytes: max_output as u64,
        }),
        Ok(Ok(text)) => RunOutcome::Completed {
            output: GuestOutput::Text(text),
        },
        Ok(Err(message)) => RunOutcome::Failed { message },
        Err(error) => {
            if let Some(reason) = state.supervisor.stop_reason().or(state.limiter.hit.clone()) {
                stopped(reason)
            } else if let Some(reason) = host_limit_of(&error, RUN_CAPS, hostcall_bytes) {
                stopped(reason)
            } else if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
                RunOutcome::Failed {
                    message: format!("the plugin exited with status {}", exit.0),
                }
            } else if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
                stopped(StopReason::Trap {
                    message: trap.to_string(),
                })
            } else if error
                .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some()
            {
                stopped(StopReason::Trap {
                    message: "the host has no free plugin instance slot (too many runs at once)"
                        .to_owned(),
                })
            } else {
                // A host-side failure (a bad resource handle, the instance pool exhausted):
                // its first line only, which names no host path.
                tracing::warn!(error = %format!("{error:#}"), "a plugin run failed in the host");
                stopped(StopReason::Trap {
                    message: first_line(&error),
                })
            }
        }
    }
}

/// The host-side limit a host error stands for, when it is one. wasmtime and wasmtime-wasi
/// report these as errors, most only in words, so this matches their messages; the tests in
/// tests/component.rs that hit each limit notice when an upgrade rewords one. (Instance,
/// memory and table counts are refused at load by the pool; these words only matter on the
/// on-demand allocator.)
fn host_limit_of(
    error: &wasmtime::Error,
    caps: RunCaps,
    hostcall_bytes: u64,
) -> Option<StopReason> {
    let limit = |which, max: u64| Some(StopReason::HostLimit { which, max });
    if let Some(wasmtime::component::ResourceTableError::Full) =
        error.downcast_ref::<wasmtime::component::ResourceTableError>()
    {
        return limit(HostLimit::HostResources, caps.host_resources as u64);
    }
    let message = format!("{error:#}");
    if message.contains("resource limit exceeded: instance count") {
        limit(HostLimit::CoreInstances, caps.core_instances as u64)
    } else if message.contains("resource limit exceeded: memory count") {
        limit(HostLimit::Memories, caps.memories as u64)
    } else if message.contains("resource limit exceeded: table count") {
        limit(HostLimit::Tables, caps.tables as u64)
    } else if message.contains("store handle limit exceeded") {
        limit(HostLimit::ResourceHandles, caps.resource_handles as u64)
    } else if message.contains("requested len") && message.contains("exceeds limit") {
        limit(HostLimit::RandomBytes, caps.random_bytes)
    } else if message.contains("fuel allocated for hostcalls has been exhausted") {
        limit(HostLimit::HostCallBytes, hostcall_bytes)
    } else {
        None
    }
}

fn first_line(error: &wasmtime::Error) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}
