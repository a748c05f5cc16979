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

/// What `warden demo` and `warden serve --demo` answer in a build without the `demo` feature
/// (the product): why it is not there, and the command (`demo`, `serve --demo`) that has it.
#[cfg_attr(
    all(feature = "demo", not(test)),
    allow(dead_code, reason = "only the product's stubs answer with it")
)]
pub fn demo_left_out(command: &str) -> String {
    format!(
        "this warden was built without the demo (it links an emulator, which the product \
         leaves out)\nfix: from a source checkout run `cargo run -p warden --features demo -- {command}`"
    )
}

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
        anyhow::bail!(super::demo_left_out("demo"))
    }
}

#[cfg(test)]
mod tests {
    /// The text the product's `warden demo` and `warden serve --demo` stubs answer with names
    /// the feature and the command that has them (the stubs are compiled only without it).
    #[test]
    fn the_products_demo_stubs_name_the_build_that_has_the_demo() {
        for command in ["demo", "serve --demo"] {
            let answer = super::demo_left_out(command);
            assert!(
                answer.contains(&format!(
                    "cargo run -p warden --features demo -- {command}`"
                )),
                "{answer}"
            );
            assert!(answer.contains("built without the demo"), "{answer}");
        }
    }
}
