//! Per-run start (P3 of BENCHMARKS.md) as instruction counts: `bench/callgrind/start.sh` runs
//! this under `valgrind --tool=callgrind`, counting the whole process (all threads), with two
//! run counts, so setup, first-use and exit costs cancel and what is left is one run.
//!
//! ```sh
//! start_count PROBE.wasm warden|bare N
//! start_count PROBE.wasm refuse N
//! start_count PROBE.wasm refuse-rhai N
//! ```
//!
//! - `warden`: the probe's `echo-args` (no host call) through `PluginHost::run`, as
//!   `run_start` times it: broker `begin` (grant lookup, audit line to a real trail file), a
//!   fresh store with the sandboxed WASI context, limits and log capture, instantiate, `run`,
//!   the run's end (audit line), report.
//! - `bare`: the same component on the same `Engine` (`PluginHost::engine`, so the same
//!   configuration and pooling allocator), WASI linked and every other import a trap: a fresh
//!   store with a default WASI context, instantiate from an `InstancePre`, `run`, drop.
//! - `refuse` (P4, `bench/callgrind/refusal.sh`): ONE warden run of the probe's `call-spam N`
//!   of `Set-Mailbox`, which the grant leaves out: N refused calls through the real wasm
//!   path (the guest's call, the component ABI, the supervisor, the broker, the error handed
//!   back). Two counts with N past the run's written refusal lines differ by refusals that
//!   are counted, not written: what a guest that keeps asking costs per call.
//! - `refuse-rhai`: the same as a Rhai script, `try { exo::invoke("Set-Mailbox", #{…}) }
//!   catch` N times in ONE run (the probe is not used). The script runs on its own thread:
//!   refusal.sh counts inside the script's evaluation there.
//!
//! All run on one current-thread tokio runtime; for `warden` and `bare`, work a run hands to
//! another thread (a queued audit writer) is still counted, since start.sh counts the whole
//! process (refusal.sh counts `measured`, the calling thread). The epoch tick is set to an
//! hour: under valgrind a run is ~50× slower, and a tick landing in one run would add its
//! callback to some runs and not others (bare has no tick at all).

use std::sync::Arc;
use std::time::Duration;
use warden_audit::{AuditKey, AuditTrail};
use warden_broker::Broker;
use warden_exchange::{CmdletRunner, Invocation, PageStream};
use warden_policy::{Policy, Principal};
use warden_runtime::{
    CompiledScript, GuestOutput, LoadedPlugin, PluginHost, RunOutcome, RunRequest, RuntimeLimits,
    ScriptHost,
};
use wasmtime::Store;
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// `echo-args` makes no call, and `refuse`'s calls are refused: a runner never asked.
#[derive(Debug)]
struct NoCalls;

impl CmdletRunner for NoCalls {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        unreachable!("a call reached the runner: {}", invocation.cmdlet)
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

enum Contender {
    Warden {
        host: PluginHost,
        plugin: LoadedPlugin,
        broker: Broker,
        args: Vec<String>,
    },
    Bare {
        host: PluginHost,
        pre: InstancePre<Bare>,
    },
    Script {
        scripts: Box<ScriptHost>,
        script: CompiledScript,
        principal: Principal,
        broker: Broker,
        calls: usize,
    },
}

impl Contender {
    async fn once(&self) {
        match self {
            Contender::Warden {
                host,
                plugin,
                broker,
                args,
            } => {
                let report = host
                    .run(plugin, broker, RunRequest::new(args.clone()))
                    .await
                    .unwrap();
                let RunOutcome::Completed {
                    output: GuestOutput::Text(text),
                } = &report.outcome
                else {
                    panic!("the run did not complete: {:?}", report.outcome);
                };
                match args[0].as_str() {
                    "echo-args" => assert_eq!(text, "[]"),
                    // Every call refused by the policy, none sent (the runner would panic).
                    _ => {
                        let report: serde_json::Value = serde_json::from_str(text).unwrap();
                        assert_eq!(report["failed"].to_string(), args[1], "{text}");
                        assert_eq!(report["first_error"]["kind"], "denied", "{text}");
                        assert_eq!(report["first_error"]["rule"], "default-deny", "{text}");
                    }
                }
            }
            Contender::Bare { host, pre } => {
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
                let (result,) = run
                    .call_async(&mut store, (vec!["echo-args".to_owned()],))
                    .await
                    .unwrap();
                assert_eq!(result.as_deref(), Ok("[]"));
            }
            Contender::Script {
                scripts,
                script,
                principal,
                broker,
                calls,
            } => {
                let report = scripts
                    .run(
                        script,
                        principal.clone(),
                        broker,
                        RunRequest::new(Vec::new()),
                    )
                    .await
                    .unwrap();
                let RunOutcome::Completed { output } = &report.outcome else {
                    panic!("the script did not complete: {:?}", report.outcome);
                };
                // Every call refused (the runner would panic) and caught.
                let refused = match output {
                    GuestOutput::Text(text) => text.clone(),
                    GuestOutput::Json(value) => value.to_string(),
                };
                assert_eq!(refused, calls.to_string());
            }
        }
    }
}

/// The runs; the difference between two run counts is what callgrind's figures are made of.
#[inline(never)]
fn measured(runtime: &tokio::runtime::Runtime, contender: &Contender, runs: usize) {
    runtime.block_on(async {
        for _ in 0..runs {
            contender.once().await;
        }
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let probe = args.next().expect("give the path of probe.wasm");
    let mode = args
        .next()
        .expect("give warden, bare, refuse or refuse-rhai");
    let mut runs: usize = args.next().map_or(1000, |n| n.parse().expect("runs"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let limits = RuntimeLimits {
        tick: Duration::from_secs(3600),
        ..RuntimeLimits::default()
    };
    let host = PluginHost::new(limits.clone(), None).unwrap();
    let bytes = std::fs::read(&probe).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker_over = |policy: String| {
        let policy = Policy::parse(&policy, &dir.path().join("policy.toml")).unwrap();
        let audit = AuditTrail::open(
            &dir.path().join("audit.jsonl"),
            AuditKey::from_bytes([1; 32]),
        )
        .unwrap();
        Broker::new(
            Arc::new(policy),
            Arc::new(NoCalls),
            Arc::new(audit),
            Duration::from_secs(30),
        )
    };
    let contender = match mode.as_str() {
        "warden" | "refuse" => {
            let plugin = host.load_bytes("probe.wasm", bytes).unwrap();
            let (args, budgets) = if mode == "refuse" {
                let spam = ["call-spam", &runs.to_string(), "Set-Mailbox"];
                let parameters = r#"{"Identity":"x","DisplayName":"y"}"#;
                runs = 1;
                // Calls past the budget would each be answered 10 ms late.
                let args = spam
                    .iter()
                    .map(|s| s.to_string())
                    .chain([parameters.into()]);
                (args.collect(), "budgets = { calls = 1000000000 }\n")
            } else {
                (vec!["echo-args".to_owned()], "")
            };
            let policy = format!(
                "version = 1\n[roles.none]\n[[roles.none.cmdlet]]\nname = \"Get-Mailbox\"\n\n[[grant]]\nid = \"probe\"\nplugin = \"{}\"\nsha256 = \"{}\"\nroles = [\"none\"]\n{budgets}",
                plugin.name(),
                plugin.sha256()
            );
            let broker = broker_over(policy);
            Contender::Warden {
                host,
                plugin,
                broker,
                args,
            }
        }
        "bare" => {
            let component = Component::from_binary(host.engine(), &bytes).unwrap();
            let mut linker = Linker::<Bare>::new(host.engine());
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
            linker.define_unknown_imports_as_traps(&component).unwrap();
            let pre = linker.instantiate_pre(&component).unwrap();
            Contender::Bare { host, pre }
        }
        "refuse-rhai" => {
            // As the harness's Rhai row (BENCHMARKS.md §4).
            let source = format!(
                "let refused = 0;\nfor i in 0..{runs} {{\n    try {{ exo::invoke(\"Set-Mailbox\", #{{Identity: \"x\", DisplayName: \"y\"}}); }} catch (e) {{ refused += 1; }}\n}}\nrefused\n"
            );
            let scripts = Box::new(ScriptHost::new(limits));
            let script = scripts.compile("inline script", &source).unwrap();
            let policy = format!(
                "version = 1\n[roles.none]\n[[roles.none.cmdlet]]\nname = \"Get-Mailbox\"\n\n[[grant]]\nid = \"script\"\nscript_inline_sha256 = \"{}\"\nroles = [\"none\"]\nbudgets = {{ calls = 1000000000 }}\n",
                script.source_sha256()
            );
            let calls = runs;
            runs = 1;
            Contender::Script {
                scripts,
                script,
                principal: Principal::inline_script(&source),
                broker: broker_over(policy),
                calls,
            }
        }
        other => panic!("unknown mode {other}: give warden, bare, refuse or refuse-rhai"),
    };
    // First use (lazy statics, the pool's first slot, the trail's first line) is not counted
    // by the difference of two counts anyway; a few runs here keep the two closer.
    // Not for `refuse`: its runs' length is N, and the count is the whole process's.
    if !mode.starts_with("refuse") {
        warm_up(&runtime, &contender);
    }
    measured(&runtime, &contender, runs);
}

/// Warm-up runs, outside what callgrind counts.
#[inline(never)]
fn warm_up(runtime: &tokio::runtime::Runtime, contender: &Contender) {
    runtime.block_on(async {
        for _ in 0..10 {
            contender.once().await;
        }
    });
}
