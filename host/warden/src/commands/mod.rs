//! One module per subcommand.

pub mod audit;
pub mod completions;
#[cfg(feature = "demo")]
pub mod demo;
pub mod doctor;
pub mod fleet;
pub mod invoke;
pub mod plugin;
pub mod plugin_manifest;
pub mod plugin_new;
pub mod policy;
pub mod repl;
pub mod run;
pub mod script;
pub mod serve;
pub mod token;
pub mod worker;

/// `warden demo` in a build without the `demo` feature (the product): it says how to get it.
#[cfg(not(feature = "demo"))]
pub mod demo {
    use std::process::ExitCode;

    /// Arguments of `warden demo` (accepted, so the answer is the hint rather than a usage error).
    #[derive(Debug, clap::Args)]
    pub struct DemoArgs {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        _ignored: Vec<String>,
    }

    /// Refuses, naming the build that has the demo.
    pub async fn run(_: DemoArgs) -> anyhow::Result<ExitCode> {
        anyhow::bail!(
            "this warden was built without the demo (it links an emulator, which the product \
             leaves out)\nfix: from a source checkout run `cargo run -p warden --features demo -- demo`"
        )
    }
}
