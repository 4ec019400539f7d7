//! The `trace-summarizer` binary: parse flags, set up logging, run the command, map the
//! outcome to an exit code (0 ok, 1 problem found, 2 usage or configuration error).

use clap::Parser;
use trace_summarizer::{cli::Cli, commands, ops::logging};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout with exit 0, usage errors to stderr with 2.
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let format = match cli.global.log_format {
        trace_summarizer::cli::LogFormat::Text => logging::LogFormat::Text,
        trace_summarizer::cli::LogFormat::Json => logging::LogFormat::Json,
    };
    logging::init(format, cli.global.verbose, cli.global.quiet);
    // The product's commands wait on the database, one connection per installation: one
    // thread serves them all with fewer wakeups (an idle worker's cost is mostly wakeups). The
    // lab's demo and bench generate load in-process and use every core.
    let builder = if cli.command.is_lab() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let mut builder = builder;
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trace-summarizer: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(commands::dispatch(cli));
    // Do not wait for background tasks (HTTP server, connections) to wind down.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}
