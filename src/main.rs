//! The `monovirt` command line: parses arguments, sets up logging and the runtime, and
//! wires the roles of `monovirt` (the library) together.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use monovirt::apiserver::{ServeConfig, Server};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// KubeVirt without Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "monovirt", version, about)]
struct Cli {
    /// Log format (the level comes from RUST_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the API server and its store (the whole system on one host).
    Serve {
        /// Where the store and the Unix socket (`monovirt.sock`) live.
        #[arg(long, default_value = "/var/lib/monovirt")]
        data_dir: PathBuf,
        /// The TCP address of the REST API (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Boot one VM in the foreground and stream its serial console.
    Run(monovirt::vmm::run::RunArgs),
    #[command(flatten)]
    Client(monovirt::cli::Command),
}

/// Logs go to stderr; `default_level` applies when RUST_LOG is unset.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => tracing::info!("SIGINT received"),
            Err(e) => tracing::error!("cannot watch SIGINT: {e}"),
        },
    }
}

async fn serve(data_dir: PathBuf, listen: SocketAddr) -> anyhow::Result<()> {
    let config = ServeConfig { data_dir, listen };
    let server = Server::bind(&config, api::resource::resources().to_vec())
        .await
        .context("starting the API server")?;
    let addr = server.local_addr().context("reading the bound address")?;
    tracing::info!(%addr, socket = %config.data_dir.join("monovirt.sock").display(), "listening");
    // Tests and scripts read the port from this line.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{addr}")?;
    out.flush()?;
    drop(out);
    // The control-plane roles beside the API, over an in-process client.
    let roles = tokio_util::sync::CancellationToken::new();
    let client = monovirt::client::Client::local(server.objects().clone());
    let tasks = [
        tokio::spawn(monovirt::controller::vm::run(client.clone(), roles.clone())),
        tokio::spawn(monovirt::scheduler::runner::run(client, roles.clone())),
    ];
    let served = server.run(shutdown_signal()).await;
    roles.cancel();
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!("a control-plane role failed: {e}");
        }
    }
    served.context("serving the API")?;
    tracing::info!("stopped");
    Ok(())
}

fn run_serve(data_dir: PathBuf, listen: SocketAddr) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("monovirt")
        .build()
        .context("starting the tokio runtime")?
        .block_on(serve(data_dir, listen))
}

fn report(e: anyhow::Error) -> ExitCode {
    eprintln!(
        "monovirt: {}",
        e.chain()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(": ")
    );
    ExitCode::from(1)
}

/// A client command on a small runtime; its error is printed as kubectl would.
fn run_client(command: monovirt::cli::Command) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(anyhow::Error::from(e).context("starting the tokio runtime")),
    };
    match rt.block_on(monovirt::cli::run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Client(command) => {
            init_logging(cli.log_format, "warn");
            run_client(command)
        }
        Cmd::Serve { data_dir, listen } => {
            init_logging(cli.log_format, "info");
            match run_serve(data_dir, listen) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => report(e),
            }
        }
        Cmd::Run(args) => {
            init_logging(cli.log_format, "warn");
            match monovirt::vmm::run::run(&args) {
                Ok(reason) => {
                    let code = monovirt::vmm::run::exit_code(&reason);
                    if code != 0 {
                        eprintln!("monovirt: {reason}");
                    }
                    ExitCode::from(code as u8)
                }
                Err(e) => report(anyhow::Error::from(e)),
            }
        }
    }
}
