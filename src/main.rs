//! The `monovirt` command line: parses arguments, sets up logging and the runtime, and
//! wires the roles of `monovirt` (the library) together.

use clap::{Parser, Subcommand};

/// KubeVirt without Kubernetes.
#[derive(Parser)]
#[command(name = "monovirt", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot one VM in the foreground and stream its serial console.
    Run(monovirt::vmm::run::RunArgs),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Cmd::Run(args) => match monovirt::vmm::run::run(&args) {
            Ok(reason) => {
                let code = monovirt::vmm::run::exit_code(&reason);
                if code != 0 {
                    eprintln!("monovirt: {reason}");
                }
                std::process::ExitCode::from(code as u8)
            }
            Err(e) => {
                eprintln!(
                    "monovirt: {}",
                    anyhow::Error::from(e)
                        .chain()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(": ")
                );
                std::process::ExitCode::from(1)
            }
        },
    }
}
