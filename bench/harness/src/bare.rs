//! The baseline of the per-run start cost: bare wasmtime running the same component the same
//! way, on the same `Engine` as the warden side (`PluginHost::engine`: component model, epoch
//! interruption, copy-on-write memory init, no component-model async, the same pooling
//! allocator), with WASI preview 2 linked and every `warden:plugin` import a trap. Per run: a
//! fresh store, instantiate from a pre-linked `InstancePre`, call `run`, drop. No broker, no
//! audit trail, no limits, no log capture.

use std::time::{Duration, Instant};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

pub struct BareHost {
    engine: Engine,
    pre: InstancePre<Bare>,
}

impl BareHost {
    /// A baseline on `engine` (the warden host's, so the configuration cannot drift).
    pub fn new(engine: &Engine, component_bytes: &[u8]) -> anyhow::Result<BareHost> {
        let engine = engine.clone();
        let component = Component::from_binary(&engine, component_bytes).map_err(anyhow_of)?;
        let mut linker = Linker::<Bare>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow_of)?;
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(anyhow_of)?;
        let pre = linker.instantiate_pre(&component).map_err(anyhow_of)?;
        Ok(BareHost { engine, pre })
    }

    /// One run: store, instantiate, `run(args)`, drop. Returns the time it took and the output.
    pub async fn run(&self, args: &[String]) -> anyhow::Result<(Duration, String)> {
        let started = Instant::now();
        let mut store = Store::new(
            &self.engine,
            Bare {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        // No ticker runs for this engine, so the deadline is never reached.
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow_of)?;
        let run = instance
            .get_typed_func::<(Vec<String>,), (Result<String, String>,)>(&mut store, "run")
            .map_err(anyhow_of)?;
        let (result,) = run
            .call_async(&mut store, (args.to_vec(),))
            .await
            .map_err(anyhow_of)?;
        drop(store);
        let elapsed = started.elapsed();
        let text = result.map_err(|e| anyhow::anyhow!("the guest failed: {e}"))?;
        Ok((elapsed, text))
    }
}

fn anyhow_of(error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:#}")
}
