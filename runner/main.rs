//! The `fsm-runner` binary: become the sandbox helper when asked, else parse and dispatch.

use std::process::ExitCode;

fn main() -> ExitCode {
    // The helper must start before any thread or runtime exists (see `sandbox::helper`).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == fsm_runner::sandbox::HELPER_ARG)
    {
        fsm_runner::sandbox::helper::main();
    }
    fsm_runner::cli::main()
}
