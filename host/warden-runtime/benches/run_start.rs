//! Per-run start (P3 of BENCHMARKS.md), wall clock: a trivial component run once through
//! `PluginHost::run` (broker begin with its audit line to a real trail file, a fresh store
//! with the sandboxed WASI context, limits and log capture, instantiate, `run`, the run's end
//! and its line, the report) and, as the baseline, the same component on the same `Engine`
//! with WASI linked and nothing else (a fresh store, instantiate, `run`).
//!
//! ```sh
//! cargo bench -p warden-runtime --bench run_start
//! WARDEN_BENCH_GUEST=target/guests/wasm32-wasip2/release/probe.wasm cargo bench -p warden-runtime --bench run_start
//! ```
//!
//! The component is a hand-written one whose `run` returns at once (no WASI import), unless
//! `WARDEN_BENCH_GUEST` names a component whose `run(["echo-args"])` completes (the probe).
//! `bench/callgrind/start.sh` counts the same runs in instructions, which repeat on a busy
//! machine where these times do not.

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_exchange::{CmdletRunner, Invocation, PageStream};
use warden_policy::Policy;
use warden_runtime::{PluginHost, RunOutcome, RunRequest, RuntimeLimits};
use wasmtime::Store;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// A run that makes no call: a runner that is never asked.
#[derive(Debug)]
struct NoCalls;

impl CmdletRunner for NoCalls {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        unreachable!("the guest made a call: {}", invocation.cmdlet)
    }
}

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

/// `run` returning `ok("hi")` laid out in its data segment: no import, no allocation.
const TRIVIAL: &str = r#"(component
  (core module $m
    (memory (export "mem") 1)
    (global $heap (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $heap))
      (global.set $heap (i32.add (global.get $heap) (local.get 3)))
      (local.get $p))
    (data (i32.const 16) "\00\00\00\00\64\00\00\00\02\00\00\00")
    (data (i32.const 100) "hi")
    (func (export "run") (param i32 i32) (result i32) (i32.const 16)))
  (core instance $i (instantiate $m))
  (type $r (result string (error string)))
  (func (export "run") (param "args" (list string)) (result $r)
    (canon lift (core func $i "run") (memory (core memory $i "mem"))
      (realloc (core func $i "realloc"))))
)"#;

fn bench_start(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let (what, bytes) = match std::env::var_os("WARDEN_BENCH_GUEST") {
        Some(path) => ("guest", std::fs::read(path).expect("WARDEN_BENCH_GUEST")),
        None => ("trivial", wat::parse_str(TRIVIAL).unwrap()),
    };
    let args = vec!["echo-args".to_owned()];
    let host = PluginHost::new(RuntimeLimits::default(), None).unwrap();
    let plugin = host.load_bytes("bench.wasm", bytes.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "version = 1\n[roles.none]\n[[roles.none.cmdlet]]\nname = \"Get-Mailbox\"\n\n[[grant]]\nid = \"bench\"\nplugin = \"{}\"\nsha256 = \"{}\"\nroles = [\"none\"]\n",
        plugin.name(),
        plugin.sha256()
    );
    let policy = Policy::parse(&policy, &dir.path().join("policy.toml")).unwrap();
    let audit = AuditTrail::open(
        &dir.path().join("audit.jsonl"),
        AuditKey::from_bytes([1; 32]),
    )
    .unwrap();
    let broker = Broker::new(
        Arc::new(policy),
        Arc::new(NoCalls),
        Arc::new(audit),
        Duration::from_secs(30),
    );
    let component = Component::from_binary(host.engine(), &bytes).unwrap();
    let mut linker = Linker::<Bare>::new(host.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();

    let mut group = c.benchmark_group(format!("per-run start ({what})"));
    group.bench_function("warden PluginHost::run", |b| {
        b.to_async(&runtime).iter(|| async {
            let report = host
                .run(&plugin, &broker, RunRequest::new(args.clone()))
                .await
                .unwrap();
            assert!(matches!(report.outcome, RunOutcome::Completed { .. }));
        });
    });
    group.bench_function("bare wasmtime, same engine", |b| {
        b.to_async(&runtime).iter(|| async {
            let mut store = Store::new(
                host.engine(),
                Bare {
                    wasi: WasiCtx::builder().build(),
                    table: ResourceTable::new(),
                },
            );
            store.set_epoch_deadline(u64::MAX / 2);
            let instance = pre.instantiate_async(&mut store).await.unwrap();
            let run = instance
                .get_typed_func::<(Vec<String>,), (Result<String, String>,)>(&mut store, "run")
                .unwrap();
            let (result,) = run.call_async(&mut store, (args.clone(),)).await.unwrap();
            assert!(result.is_ok());
        });
    });
    group.finish();
}

criterion_group!(benches, bench_start);
criterion_main!(benches);
