//! The `monovirt` command line: parses arguments, sets up logging and the runtime, and
//! wires the roles of `monovirt` (the library) together.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use monovirt::agent::AgentConfig;
use monovirt::apiserver::{ServeConfig, Server};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
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
        /// Run no node agent here: a control plane only (nodes join with `monovirt agent`).
        #[arg(long)]
        no_agent: bool,
        #[command(flatten)]
        node: NodeArgs,
        /// How long a node may go without a heartbeat before it is NotReady and its VMs are
        /// failed (to be started elsewhere as their run strategy says).
        #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
        node_monitor_grace_period: Duration,
    },
    /// Run a node agent and VMM that join the control plane at --server.
    Agent {
        /// The API server: http://HOST:PORT or unix:PATH.
        #[arg(long)]
        server: String,
        /// The join token (`<data-dir>/join-token` of `monovirt serve`).
        #[arg(long, env = "MONOVIRT_TOKEN", hide_env_values = true)]
        token: String,
        /// Where this node's images and VM files live.
        #[arg(long, default_value = "/var/lib/monovirt-agent")]
        data_dir: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Manage the node-local image store (container disks and kernels).
    Image {
        /// The data dir of the node (`serve` or `agent`).
        #[arg(long, default_value = "/var/lib/monovirt", global = true)]
        data_dir: PathBuf,
        #[command(subcommand)]
        command: ImageCmd,
    },
    /// Boot one VM in the foreground and stream its serial console.
    Run(monovirt::vmm::run::RunArgs),
    #[command(flatten)]
    Client(monovirt::cli::Command),
    /// Upload a local disk image into a DataVolume or an upload claim (virtctl image-upload).
    ImageUpload(monovirt::storage::uploader::UploadArgs),
}

/// The node agent's settings (shared by `serve` and `agent`).
#[derive(Debug, clap::Args)]
struct NodeArgs {
    /// The Node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Where the node endpoint (pause, unpause, console) listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    node_listen: SocketAddr,
    /// The address published in the Node (default: the listen address, or the local
    /// address that reaches the API server).
    #[arg(long)]
    node_address: Option<std::net::IpAddr>,
    /// How often the node renews its Ready condition.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// Plumb VMI networks on this node: the default network (bridge mvbr0, DHCP,
    /// masquerade NAT and port forwards in nftables table inet monovirt), bridge and
    /// macvtap NetworkAttachmentDefinitions. Without it VMI interfaces stay unconnected.
    #[arg(long)]
    network: bool,
    /// The default network's subnet; the bridge takes its first address (the guests'
    /// gateway) and DHCP hands out the rest.
    #[arg(long, default_value = monovirt::network::node::DEFAULT_SUBNET)]
    pod_network_cidr: ipnet::Ipv4Net,
}

impl NodeArgs {
    fn config(&self, data_dir: PathBuf, server: Option<String>) -> AgentConfig {
        AgentConfig {
            node_name: self
                .node_name
                .clone()
                .unwrap_or_else(monovirt::agent::node::hostname),
            listen: self.node_listen,
            advertise: self.node_address,
            heartbeat: self.heartbeat_interval,
            network: self.network.then(|| {
                let mut net = monovirt::network::node::NodeNetworkConfig::new(&data_dir);
                net.subnet = self.pod_network_cidr;
                net
            }),
            data_dir,
            server,
        }
    }
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Import an OCI image layout (directory or tar), a `docker save` archive, a plain
    /// directory, or a plain file (placed at --dest, by default /disk/<file name>).
    Import {
        /// The image reference VMIs use (`containerDisk.image`, `kernelBoot.container.image`).
        reference: String,
        /// What to import.
        path: PathBuf,
        /// For a plain file: its absolute path inside the image.
        #[arg(long)]
        dest: Option<String>,
    },
    /// List the imported images.
    List,
    /// Remove an image.
    Remove {
        /// The image reference.
        reference: String,
    },
}

/// Logs go to stderr; `default_level` applies when RUST_LOG is unset. Without RUST_LOG
/// the filter is a plain level: an `EnvFilter` compiles its directive regexes, which costs
/// `monovirt run` start-up time and memory for nothing.
fn init_logging(format: LogFormat, default_level: tracing::Level) {
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    match (format, std::env::var_os("RUST_LOG").is_some()) {
        (LogFormat::Text, true) => builder
            .with_env_filter(EnvFilter::from_default_env())
            .init(),
        (LogFormat::Json, true) => builder
            .with_env_filter(EnvFilter::from_default_env())
            .json()
            .init(),
        (LogFormat::Text, false) => builder.with_max_level(default_level).init(),
        (LogFormat::Json, false) => builder.with_max_level(default_level).json().init(),
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

/// What `serve` runs beside the API.
struct ServeRoles {
    /// The local node agent, unless `--no-agent`.
    agent: Option<NodeArgs>,
    node_grace: Duration,
}

async fn serve(data_dir: PathBuf, listen: SocketAddr, roles_cfg: ServeRoles) -> anyhow::Result<()> {
    let config = ServeConfig {
        data_dir: data_dir.clone(),
        listen,
    };
    let mut server = Server::bind(&config, api::resource::resources().to_vec())
        .await
        .context("starting the API server")?;
    let local = monovirt::client::Client::local(server.objects().clone());
    let uploads = monovirt::storage::upload::Uploads::default();
    server.add_routes(monovirt::storage::upload::routes(
        monovirt::storage::upload::UploadState {
            uploads: uploads.clone(),
            client: local.clone(),
        },
    ));
    let addr = server.local_addr().context("reading the bound address")?;
    tracing::info!(%addr, socket = %config.data_dir.join("monovirt.sock").display(), "listening");
    // Tests and scripts read the port from this line.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{addr}")?;
    out.flush()?;
    drop(out);
    // The control-plane roles beside the API, over an in-process client.
    let roles = tokio_util::sync::CancellationToken::new();
    let client = local;
    let mut tasks = vec![
        tokio::spawn(monovirt::controller::vm::run(client.clone(), roles.clone())),
        tokio::spawn(monovirt::scheduler::runner::run(
            client.clone(),
            roles.clone(),
        )),
        tokio::spawn(monovirt::storage::run(
            client.clone(),
            config.data_dir.clone(),
            uploads,
            roles.clone(),
        )),
        tokio::spawn(monovirt::controller::node::run(
            client.clone(),
            roles_cfg.node_grace,
            roles.clone(),
        )),
    ];
    if let Some(node) = &roles_cfg.agent {
        let agent = monovirt::agent::run(client, node.config(data_dir, None), roles.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = agent.await {
                tracing::error!("the node agent failed: {}", anyhow::Error::from(e));
            }
        }));
    }
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("monovirt")
        .build()
        .context("starting the tokio runtime")
}

/// `monovirt agent`: the node agent against a remote API server.
async fn agent(server: String, token: String, config: AgentConfig) -> anyhow::Result<()> {
    let client = monovirt::client::Client::http_with_token(&server, Some(&token))
        .context("connecting to the API server")?;
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(monovirt::agent::run(client, config, stop.clone()));
    shutdown_signal().await;
    stop.cancel();
    run.await.context("the node agent task")??;
    tracing::info!("stopped");
    Ok(())
}

fn image(data_dir: PathBuf, command: ImageCmd) -> anyhow::Result<()> {
    let store = monovirt::image::ImageStore::open(&data_dir).context("opening the image store")?;
    let mut out = std::io::stdout().lock();
    match command {
        ImageCmd::Import {
            reference,
            path,
            dest,
        } => {
            let imported = store
                .import(&reference, &path, dest.as_deref())
                .with_context(|| format!("importing {}", path.display()))?;
            writeln!(
                out,
                "imported {} ({})",
                imported.reference, imported.source_kind
            )?;
        }
        ImageCmd::List => {
            writeln!(out, "{:<60} {:<10} IMPORTED", "REFERENCE", "SOURCE")?;
            for i in store.list()? {
                writeln!(
                    out,
                    "{:<60} {:<10} {}",
                    i.reference, i.source_kind, i.imported_at
                )?;
            }
        }
        ImageCmd::Remove { reference } => {
            store.remove(&reference)?;
            writeln!(out, "removed {reference}")?;
        }
    }
    Ok(())
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
            init_logging(cli.log_format, tracing::Level::WARN);
            run_client(command)
        }
        Cmd::Serve {
            data_dir,
            listen,
            no_agent,
            node,
            node_monitor_grace_period,
        } => {
            init_logging(cli.log_format, tracing::Level::INFO);
            let roles = ServeRoles {
                agent: (!no_agent).then_some(node),
                node_grace: node_monitor_grace_period,
            };
            match runtime().and_then(|rt| rt.block_on(serve(data_dir, listen, roles))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => report(e),
            }
        }
        Cmd::Agent {
            server,
            token,
            data_dir,
            node,
        } => {
            init_logging(cli.log_format, tracing::Level::INFO);
            let config = node.config(data_dir, Some(server.clone()));
            match runtime().and_then(|rt| rt.block_on(agent(server, token, config))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => report(e),
            }
        }
        Cmd::Image { data_dir, command } => {
            init_logging(cli.log_format, tracing::Level::WARN);
            match image(data_dir, command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => report(e),
            }
        }
        Cmd::ImageUpload(args) => {
            init_logging(cli.log_format, tracing::Level::WARN);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime");
            match rt.and_then(|rt| {
                rt.block_on(monovirt::storage::uploader::run(&args))
                    .map_err(anyhow::Error::from)
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => report(e),
            }
        }
        Cmd::Run(args) => {
            init_logging(cli.log_format, tracing::Level::WARN);
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
