//! What a running plugin can reach: the `warden:plugin` imports (every cmdlet call goes to the
//! broker with the run's grant), the `log` import, and a deny-by-default slice of WASI
//! preview 2. One [`RunState`] per run lives in the run's fresh `Store`.
//!
//! What it refuses: linking any WASI interface that reaches outside the sandbox (sockets,
//! name lookup, HTTP; the filesystem is linked with no preopened directory), giving the guest
//! environment variables, arguments, stdin or a terminal, and putting anything but the
//! broker's typed, guest-safe values into what the guest receives. Its clocks, stop reason and
//! log sink are the run's [`Supervisor`], which every broker call goes through (booked as host
//! time, cut short at the deadline or the interrupt).

use super::RunCaps;
use super::output::CapturedOutput;
use crate::supervisor::{HostCall, Supervisor};
use crate::{HostLimit, LogLevel, LogSource, StopReason};
use std::sync::Arc;
use warden_broker::{BrokeredStream, GuestError};
use wasmtime::ResourceLimiter;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "warden:plugin/plugin",
        // Host calls await the broker (and the network behind it): async, so the run's
        // wall-clock timeout can cancel a guest blocked in one.
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "warden:plugin/exchange.results": warden_broker::BrokeredStream,
        },
    });
}

pub(crate) use bindings::PluginPre;
use bindings::warden::plugin::{exchange, log};

/// What one table element costs the host: elements are pointer-sized in wasmtime.
const TABLE_ELEMENT_BYTES: u64 = std::mem::size_of::<usize>() as u64;

/// The store's limiter: one memory budget for the whole run — every linear memory and every
/// table of every core instance, summed as they are created and grown — plus the counts of
/// instances, memories and tables and the size of any one table. It remembers which limit
/// stopped the guest, so the run's end can name it.
#[derive(Debug)]
pub(crate) struct RunLimiter {
    limit_bytes: u64,
    used_bytes: u64,
    caps: RunCaps,
    /// The limit that refused a creation or growth, if one did.
    pub(crate) hit: Option<StopReason>,
}

impl RunLimiter {
    pub(crate) fn new(limit_bytes: u64, caps: RunCaps) -> Self {
        Self {
            limit_bytes,
            used_bytes: 0,
            caps,
            hit: None,
        }
    }

    /// Books `delta` bytes against the run's budget, or refuses (a trap) past it.
    fn grow_by(&mut self, delta: u64) -> wasmtime::Result<bool> {
        let total = self.used_bytes.saturating_add(delta);
        if total > self.limit_bytes {
            self.hit.get_or_insert(StopReason::Memory {
                limit_bytes: self.limit_bytes,
            });
            wasmtime::bail!(
                "the run's memory limit of {} bytes is reached (memories and tables of all its instances)",
                self.limit_bytes
            );
        }
        self.used_bytes = total;
        Ok(true)
    }
}

impl ResourceLimiter for RunLimiter {
    /// Called for a new memory too (from 0 to its initial size), so the sum covers them all.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow_by(desired.saturating_sub(current) as u64)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.caps.table_elements {
            self.hit.get_or_insert(StopReason::HostLimit {
                which: HostLimit::TableElements,
                max: self.caps.table_elements as u64,
            });
            wasmtime::bail!(
                "a table may hold at most {} elements",
                self.caps.table_elements
            );
        }
        self.grow_by((desired.saturating_sub(current) as u64).saturating_mul(TABLE_ELEMENT_BYTES))
    }

    // A growth that fails past the limiter (the guest's own declared maximum) traps, as
    // before: a guest that cannot get memory cannot do its work.
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error)
    }

    fn instances(&self) -> usize {
        self.caps.core_instances
    }

    fn tables(&self) -> usize {
        self.caps.tables
    }

    fn memories(&self) -> usize {
        self.caps.memories
    }
}

/// The data of one run's `Store`.
pub(crate) struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: RunLimiter,
    /// The run's clocks, stop reason, log sink and end (shared with the output streams).
    pub(crate) supervisor: Arc<Supervisor>,
}

impl RunState {
    pub(crate) fn new(supervisor: Arc<Supervisor>, memory_bytes: u64, caps: RunCaps) -> Self {
        let mut wasi = WasiCtx::builder();
        // Deny by default, spelled out so an upgrade that changes a default changes nothing
        // here: no env, args, preopens or stdin (the builder's defaults), no network at all.
        wasi.stdout(CapturedOutput::new(supervisor.clone(), LogSource::Stdout))
            .stderr(CapturedOutput::new(supervisor.clone(), LogSource::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            // The host allocates what a guest asks for before copying it over.
            .max_random_size(caps.random_bytes);
        let mut table = ResourceTable::new();
        table.set_max_capacity(caps.host_resources);
        Self {
            wasi: wasi.build(),
            table,
            limiter: RunLimiter::new(memory_bytes, caps),
            supervisor,
        }
    }
}

/// A host call's result, or the trap that stops the guest when the run's deadline or interrupt
/// came first (the run's end names the stop the supervisor recorded).
fn done<T>(call: HostCall<T>) -> wasmtime::Result<T> {
    match call {
        HostCall::Done(value) => Ok(value),
        HostCall::Stopped(reason) => Err(wasmtime::Error::msg(reason.to_string())),
    }
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState")
            .field("run", &self.supervisor.run().id())
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Projects the store data to its resource table, for the `wasi:io` interfaces.
struct IoTable;

impl HasData for IoTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// The host's linker: `warden:plugin@0.1.0` and the WASI interfaces listed in
/// [`super::inspect::LINKED_WASI`], nothing else (so a plugin importing more fails to load).
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<RunState>> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random};
    use wasmtime_wasi::random::WasiRandom;

    let mut linker = Linker::<RunState>::new(engine);
    let l = &mut linker;
    io::error::add_to_linker::<RunState, IoTable>(l, |s| &mut s.table)?;
    io::poll::add_to_linker::<RunState, IoTable>(l, |s| &mut s.table)?;
    io::streams::add_to_linker::<RunState, IoTable>(l, |s| &mut s.table)?;
    clocks::wall_clock::add_to_linker::<RunState, WasiClocks>(l, RunState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<RunState, WasiClocks>(l, RunState::clocks)?;
    random::random::add_to_linker::<RunState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure::add_to_linker::<RunState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<RunState, WasiRandom>(l, |s| s.wasi.random())?;
    cli::environment::add_to_linker::<RunState, WasiCli>(l, RunState::cli)?;
    cli::exit::add_to_linker::<RunState, WasiCli>(l, RunState::cli)?;
    cli::stdin::add_to_linker::<RunState, WasiCli>(l, RunState::cli)?;
    cli::stdout::add_to_linker::<RunState, WasiCli>(l, RunState::cli)?;
    cli::stderr::add_to_linker::<RunState, WasiCli>(l, RunState::cli)?;
    cli::terminal_input::add_to_linker::<RunState, WasiCli>(l, RunState::cli)?;
    cli::terminal_output::add_to_linker::<RunState, WasiCli>(l, RunState::cli)?;
    cli::terminal_stdin::add_to_linker::<RunState, WasiCli>(l, RunState::cli)?;
    cli::terminal_stdout::add_to_linker::<RunState, WasiCli>(l, RunState::cli)?;
    cli::terminal_stderr::add_to_linker::<RunState, WasiCli>(l, RunState::cli)?;
    filesystem::types::add_to_linker::<RunState, WasiFilesystem>(l, RunState::filesystem)?;
    filesystem::preopens::add_to_linker::<RunState, WasiFilesystem>(l, RunState::filesystem)?;
    exchange::add_to_linker::<RunState, wasmtime::component::HasSelf<RunState>>(l, |s| s)?;
    log::add_to_linker::<RunState, wasmtime::component::HasSelf<RunState>>(l, |s| s)?;
    Ok(linker)
}

/// A broker error as the guest sees it: field by field, nothing added.
fn call_error(error: GuestError) -> exchange::CallError {
    use exchange::CallError as E;
    match error {
        GuestError::Denied { rule, reason } => E::Denied(exchange::Denial { rule, reason }),
        GuestError::Invalid { reason } => E::Invalid(reason),
        GuestError::BudgetExhausted { budget, limit } => {
            E::Budget(exchange::BudgetExhausted { budget, limit })
        }
        GuestError::Throttled { retry_after_ms } => E::Throttled(retry_after_ms),
        GuestError::Remote {
            error_id,
            exception,
            message,
            request_id,
        } => E::Remote(exchange::RemoteError {
            error_id,
            exception,
            message,
            request_id,
        }),
        GuestError::Timeout { after_ms } => E::Timeout(after_ms),
        GuestError::OutcomeUnknown { reason } => E::OutcomeUnknown(reason),
        GuestError::Unavailable { reason } => E::Unavailable(reason),
    }
}

impl exchange::Host for RunState {
    async fn invoke(
        &mut self,
        cmdlet: String,
        parameters: String,
    ) -> wasmtime::Result<Result<String, exchange::CallError>> {
        let s = &self.supervisor;
        let result = done(
            s.host_call(s.broker().invoke_json(s.run(), &cmdlet, &parameters))
                .await,
        )?;
        Ok(result.map_err(call_error))
    }

    async fn invoke_batch(
        &mut self,
        calls: Vec<exchange::BatchCall>,
    ) -> wasmtime::Result<Result<Vec<Result<String, exchange::CallError>>, exchange::CallError>>
    {
        let s = &self.supervisor;
        let calls: Vec<(String, String)> = calls
            .into_iter()
            .map(|c| (c.cmdlet, c.parameters))
            .collect();
        let result = done(
            s.host_call(s.broker().invoke_batch_json(s.run(), &calls))
                .await,
        )?;
        Ok(result
            .map(|results| results.into_iter().map(|r| r.map_err(call_error)).collect())
            .map_err(call_error))
    }

    async fn stream(
        &mut self,
        cmdlet: String,
        parameters: String,
    ) -> wasmtime::Result<Result<Resource<BrokeredStream>, exchange::CallError>> {
        let s = &self.supervisor;
        match done(
            s.host_call(s.broker().stream_json(s.run(), &cmdlet, &parameters))
                .await,
        )? {
            Ok(stream) => Ok(Ok(self.table.push(stream)?)),
            Err(error) => Ok(Err(call_error(error))),
        }
    }

    async fn grants(&mut self) -> wasmtime::Result<Vec<exchange::AllowedCmdlet>> {
        Ok(self
            .supervisor
            .broker()
            .grants(self.supervisor.run())
            .into_iter()
            .map(|a| exchange::AllowedCmdlet {
                cmdlet: a.cmdlet,
                rule: a.rule,
                parameters: a.parameters,
                write: a.write,
                max_result_size: a.max_result_size,
                output: a.output,
                target_parameter: a.target_parameter,
            })
            .collect())
    }

    async fn usage(&mut self) -> wasmtime::Result<exchange::RunUsage> {
        let u = self.supervisor.run().usage();
        Ok(exchange::RunUsage {
            calls: u.calls,
            writes: u.writes,
            objects: u.objects,
            output_bytes: u.output_bytes,
        })
    }
}

impl exchange::HostResults for RunState {
    async fn next(
        &mut self,
        this: Resource<BrokeredStream>,
    ) -> wasmtime::Result<Result<Option<String>, exchange::CallError>> {
        let stream = self.table.get_mut(&this)?;
        let s = &self.supervisor;
        let result = done(
            s.host_call(s.broker().next_page_json(s.run(), stream))
                .await,
        )?;
        Ok(result.map_err(call_error))
    }

    async fn drop(&mut self, this: Resource<BrokeredStream>) -> wasmtime::Result<()> {
        // Dropping the stream closes its audit record (an abandoned call says so).
        self.table.delete(this)?;
        Ok(())
    }
}

impl log::Host for RunState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.supervisor
            .log()
            .line(LogSource::Guest, level, &message);
        Ok(())
    }

    async fn progress(
        &mut self,
        done: u64,
        total: Option<u64>,
        label: String,
    ) -> wasmtime::Result<()> {
        self.supervisor.log().progress(done, total, &label);
        Ok(())
    }
}
