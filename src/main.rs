//! The `monovirt` command line: parses arguments, sets up logging and the runtime, and
//! wires the roles of `monovirt` (the library) together.

// The linker wrapper of build.rs says on stderr when the run-path layout is not applied
// (or its order file is stale): a warning, not a silent slower start.
#![warn(linker_messages)]

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use monovirt::agent::AgentConfig;
use monovirt::apiserver::{ServeConfig, Server};
use monovirt::daemon::config::{DaemonConfig, LogFormat, Overrides};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// KubeVirt without Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "monovirt", version, about)]
struct Cli {
    #[command(flatten)]
    global: GlobalFlags,
    #[command(subcommand)]
    command: Cmd,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
struct GlobalFlags {
    /// Log format, text or json (default: the config file's, else text; the level
    /// comes from RUST_LOG).
    #[arg(long, global = true)]
    log_format: Option<LogFormat>,
    /// What a VM thread's forbidden syscall gets: deny (EPERM), kill (the process), log
    /// (allowed, logged by the kernel) or off (default: the config's vmm.seccomp, else
    /// deny).
    #[arg(long, global = true)]
    seccomp: Option<monovirt::vmm::seccomp::Mode>,
}

/// `monovirt run …` on its own: the same flags as the `run` subcommand of [`Cli`], parsed
/// without building the argument tree of every other subcommand. That tree costs `run`
/// (the boot benchmark's entry point) a few hundred microseconds, ~60 page faults and
/// ~1 MiB of resident pages it never uses (benches/boot.rs measures both).
#[derive(Debug, Parser)]
#[command(
    name = "run",
    bin_name = "monovirt run",
    about = "Boot one VM in the foreground and stream its serial console.",
    long_about = None
)]
struct RunCli {
    #[command(flatten)]
    global: GlobalFlags,
    #[command(flatten)]
    args: monovirt::vmm::run::RunArgs,
}

/// `serve`'s flags; each overrides the config file's key of the same meaning.
#[derive(Debug, Args)]
struct ServeFlags {
    /// The config file (default /etc/monovirt/config.toml, if it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the store, the Unix socket (`monovirt.sock`), tokens and TLS files live
    /// (default /var/lib/monovirt).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A plain-HTTP address, loopback only (repeatable; port 0 picks a free port;
    /// default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<Vec<SocketAddr>>,
    /// An HTTPS address, bearer tokens required (repeatable).
    #[arg(long)]
    tls_listen: Option<Vec<SocketAddr>>,
    /// The serving certificate (PEM chain) instead of the server's own CA.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The serving certificate's key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// An extra name for the server's own serving certificate (repeatable).
    #[arg(long)]
    tls_san: Vec<String>,
    /// Run no node agent here: a control plane only (nodes join with `monovirt agent`).
    #[arg(long)]
    no_agent: bool,
    /// The local node agent (its --node-name overrides the config's node_name).
    #[command(flatten)]
    node: NodeArgs,
    /// How long a node may go without a heartbeat before it is NotReady and its VMs are
    /// failed (to be started elsewhere as their run strategy says).
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    node_monitor_grace_period: Duration,
}

impl ServeFlags {
    fn load(
        &self,
        log_format: Option<LogFormat>,
        seccomp: Option<monovirt::vmm::seccomp::Mode>,
    ) -> anyhow::Result<DaemonConfig> {
        let overrides = Overrides {
            node_name: self.node.node_name.clone(),
            data_dir: self.data_dir.clone(),
            log_format,
            listen: self.listen.clone(),
            tls_listen: self.tls_listen.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_san: self.tls_san.clone(),
            default_subnet: self.node.pod_network_cidr,
            seccomp,
        };
        Ok(DaemonConfig::load(self.config.as_deref(), overrides)?)
    }
}

/// Where the token and kubeconfig commands find the daemon's files.
#[derive(Debug, Args)]
struct DataDirFlags {
    /// The config file (default /etc/monovirt/config.toml, if it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The daemon's data dir (default: the config's, else /var/lib/monovirt).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl DataDirFlags {
    fn load(self) -> anyhow::Result<DaemonConfig> {
        let overrides = Overrides {
            data_dir: self.data_dir,
            ..Overrides::default()
        };
        Ok(DaemonConfig::load(self.config.as_deref(), overrides)?)
    }
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Issue a token and print it (it is shown only this once).
    Create {
        /// view, edit or admin.
        #[arg(long)]
        role: Option<monovirt::auth::Role>,
        /// Limit the token to one namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// A node agent's token (`monovirt agent --token`) instead of a user's.
        #[arg(long, conflicts_with_all = ["role", "namespace"])]
        node: bool,
        /// Lifetime, e.g. 12h or 30d (default: until revoked).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        /// A note kept with the token.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        dir: DataDirFlags,
    },
    /// Revoke a token (by its id, the part before the dot, or the whole token).
    Revoke {
        id: String,
        #[command(flatten)]
        dir: DataDirFlags,
    },
    /// List tokens (ids and grants; secrets are never stored).
    List {
        #[command(flatten)]
        dir: DataDirFlags,
    },
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the API server and its store (the whole system on one host).
    Serve(ServeFlags),
    /// Boot one VM in the foreground and stream its serial console.
    Run(monovirt::vmm::run::RunArgs),
    /// Run a node agent and VMM that join the control plane at --server.
    Agent {
        /// The API server: https://HOST:PORT, http://HOST:PORT or unix:PATH.
        #[arg(long)]
        server: String,
        /// The join token (`<data-dir>/join-token` of `monovirt serve`).
        #[arg(long, env = "MONOVIRT_TOKEN", hide_env_values = true)]
        token: String,
        /// The CA that signed the https:// server's certificate: a PEM file (the server's
        /// `<data-dir>/tls/ca.crt`) or a kubeconfig (`monovirt kubeconfig`) [default: the
        /// local server's /var/lib/monovirt/tls/ca.crt if it exists, else the public web
        /// roots].
        #[arg(long, env = "MONOVIRT_CA_FILE")]
        ca_file: Option<PathBuf>,
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
    /// Manage the API's bearer tokens (edits <data-dir>/tokens.json; root only).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Print a kubeconfig for kubectl: the HTTPS address, the CA and a token.
    Kubeconfig {
        /// The server URL (default: the first tls_listen address of the config).
        #[arg(long)]
        server: Option<String>,
        /// The token (default: <data-dir>/admin-token).
        #[arg(long)]
        token: Option<String>,
        /// The context's default namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        dir: DataDirFlags,
    },
    /// Install this binary, the systemd unit and the default config.
    Install {
        /// Install under this directory instead of / (for packaging).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
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
    /// macvtap NetworkAttachmentDefinitions; and apply the NodeNetworkConfigurationPolicies
    /// that select this node. Without it VMI interfaces stay unconnected.
    #[arg(long)]
    network: bool,
    /// The default network's subnet; the bridge takes its first address (the guests'
    /// gateway) and DHCP hands out the rest (default: the config's
    /// network.default_subnet, else 10.0.2.0/24).
    #[arg(long)]
    pod_network_cidr: Option<monovirt::daemon::config::Ipv4Subnet>,
}

impl NodeArgs {
    /// The agent's settings; `subnet` is the default network's (config or flag).
    fn config(
        &self,
        data_dir: PathBuf,
        server: Option<String>,
        subnet: monovirt::daemon::config::Ipv4Subnet,
    ) -> AgentConfig {
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
                net.subnet = subnet.into();
                net
            }),
            data_dir,
            server,
            vm_stats: None,
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
///
/// Text goes without terminal colours unless stderr is a terminal: journald and files get
/// plain lines.
fn init_logging(format: LogFormat, default_level: tracing::Level) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match (format, std::env::var_os("RUST_LOG").is_some()) {
        (LogFormat::Text, true) => builder
            .with_env_filter(EnvFilter::from_default_env())
            .init(),
        (LogFormat::Json, true) => builder
            .with_env_filter(EnvFilter::from_default_env())
            .json()
            .flatten_event(true)
            .init(),
        (LogFormat::Text, false) => builder.with_max_level(default_level).init(),
        (LogFormat::Json, false) => builder
            .with_max_level(default_level)
            .json()
            .flatten_event(true)
            .init(),
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

async fn serve(config: DaemonConfig, roles_cfg: ServeRoles) -> anyhow::Result<()> {
    let notifier = monovirt::daemon::notify::Notifier::from_env()?;
    if let Some(source) = &config.source {
        tracing::info!(config = %source.display(), "configuration read");
    }
    let tls = if config.tls_listen.is_empty() {
        None
    } else {
        let names = monovirt::apiserver::tls::subject_names(
            &config.node_name,
            &config.tls_listen,
            &config.tls_san,
        );
        Some(
            monovirt::apiserver::tls::ServingCert::load_or_create(
                &config.data_dir,
                config.tls.as_ref(),
                &names,
            )
            .context("preparing TLS")?,
        )
    };
    let serve_config = ServeConfig {
        data_dir: config.data_dir.clone(),
        listen: config.listen.clone(),
        tls_listen: config.tls_listen.clone(),
        tls,
    };
    let mut server = Server::bind(&serve_config, api::resource::resources().to_vec())
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
    let socket = config.data_dir.join("monovirt.sock");
    let http = server.listeners().http_addrs()?;
    let https = server.listeners().https_addrs()?;
    tracing::info!(?http, ?https, socket = %socket.display(), node = %config.node_name, "listening");
    // Tests and scripts read the ports from these lines (plain HTTP first).
    let mut out = std::io::stdout().lock();
    for a in &http {
        writeln!(out, "listening on http://{a}")?;
    }
    for a in &https {
        writeln!(out, "listening on https://{a}")?;
    }
    out.flush()?;
    drop(out);
    // The configured storage classes exist before the provisioner looks for its default.
    monovirt::daemon::storage_class::apply(&local, &config.storage_classes)
        .await
        .context("applying the config's storage classes")?;
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
    let local_node = roles_cfg.agent.as_ref().map(|_| config.node_name.clone());
    if let Some(node) = &roles_cfg.agent {
        let mut agent_config = node.config(config.data_dir.clone(), None, config.default_subnet);
        agent_config.node_name = config.node_name.clone();
        agent_config.vm_stats = Some(server.state().vm_stats().clone());
        let agent = monovirt::agent::run(client, agent_config, roles.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = agent.await {
                tracing::error!("the node agent failed: {}", anyhow::Error::from(e));
            }
        }));
    }
    let notifier = std::sync::Arc::new(notifier);
    let supervision = tokio::spawn(supervise(
        notifier.clone(),
        socket,
        server.objects().clone(),
        local_node,
        roles.clone(),
    ));
    let served = server.run(shutdown_signal()).await;
    let _ = notifier.stopping("stopping");
    roles.cancel();
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!("a control-plane role failed: {e}");
        }
    }
    supervision.abort();
    served.context("serving the API")?;
    tracing::info!("stopped");
    Ok(())
}

/// Tells systemd the service is ready once the API answers on its socket and the local
/// node (if this process runs one) is registered, then pings the watchdog (if one is
/// set) as long as the API keeps answering.
async fn supervise(
    notifier: std::sync::Arc<monovirt::daemon::notify::Notifier>,
    socket: PathBuf,
    objects: monovirt::store::Objects,
    local_node: Option<String>,
    stop: tokio_util::sync::CancellationToken,
) {
    use monovirt::daemon::probe;
    let nodes = api::resource::find("", "v1", "nodes").expect("Node is a served resource");
    let mut wait = std::time::Duration::from_millis(20);
    loop {
        match probe::api_ready(&socket).await {
            Ok(()) => match &local_node {
                Some(name) if objects.get(nodes, None, name).is_err() => {
                    tracing::debug!(node = %name, "waiting for the local node to register");
                }
                _ => break,
            },
            Err(e) => tracing::debug!("waiting for the API to answer: {e}"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(1));
    }
    if let Err(e) = notifier.ready("serving the API") {
        tracing::warn!("notifying systemd: {e}");
    }
    tracing::info!("ready");
    let Some(every) = monovirt::daemon::notify::watchdog_interval() else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // No answer, no ping: systemd restarts a daemon whose API hangs.
        match probe::api_ready(&socket).await {
            Ok(()) => {
                if let Err(e) = notifier.watchdog() {
                    tracing::warn!("notifying systemd's watchdog: {e}");
                }
            }
            Err(e) => tracing::warn!("the API does not answer; skipping the watchdog ping: {e}"),
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("monovirt")
        .build()
        .context("starting the tokio runtime")
}

/// `monovirt agent`: the node agent against a remote API server.
async fn agent(
    server: String,
    token: String,
    ca_file: Option<PathBuf>,
    config: AgentConfig,
) -> anyhow::Result<()> {
    use monovirt::client::tls::TlsOptions;
    // A server on this host keeps its own CA here (k3s agents on a server node do the same).
    let local_ca = Path::new("/var/lib/monovirt/tls/ca.crt");
    let ca_file = ca_file.or_else(|| {
        (server.starts_with("https://") && local_ca.exists()).then(|| local_ca.to_path_buf())
    });
    let tls = match &ca_file {
        Some(p) => TlsOptions::from_file(p)
            .with_context(|| format!("loading the CA from {}", p.display()))?,
        None => TlsOptions::default(),
    };
    let client = monovirt::client::Client::http_with_tls(&server, Some(&token), &tls)
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

fn token_cmd(cmd: TokenCmd) -> anyhow::Result<()> {
    use monovirt::auth::{Grant, Role, Tokens};
    match cmd {
        TokenCmd::Create {
            role,
            namespace,
            node,
            ttl,
            description,
            dir,
        } => {
            let config = dir.load()?;
            let grant = if node {
                Grant::Node
            } else {
                let role = role.context("--role view|edit|admin (or --node) is required")?;
                if let Some(ns) = &namespace {
                    if let Some(e) = api::validation::dns1123_label(ns).first() {
                        anyhow::bail!("--namespace {ns:?}: {e}");
                    }
                }
                let _: Role = role;
                Grant::User { role, namespace }
            };
            let (token, _) = Tokens::in_data_dir(&config.data_dir).issue(
                grant,
                ttl.map(Into::into),
                &description,
            )?;
            println!("{token}");
        }
        TokenCmd::Revoke { id, dir } => {
            let config = dir.load()?;
            let r = Tokens::in_data_dir(&config.data_dir).revoke(&id)?;
            println!("token {} revoked", r.id);
        }
        TokenCmd::List { dir } => {
            let config = dir.load()?;
            println!(
                "{:<8} {:<6} {:<16} {:<22} EXPIRES",
                "ID", "ROLE", "NAMESPACE", "CREATED"
            );
            for t in Tokens::in_data_dir(&config.data_dir).list()? {
                let (role, ns) = match &t.grant {
                    Grant::User { role, namespace } => (
                        role.to_string(),
                        namespace.clone().unwrap_or_else(|| "*".into()),
                    ),
                    Grant::Node => ("node".to_string(), "*".to_string()),
                };
                println!(
                    "{:<8} {:<6} {:<16} {:<22} {}",
                    t.id,
                    role,
                    ns,
                    t.created,
                    t.expires.as_deref().unwrap_or("never")
                );
            }
        }
    }
    Ok(())
}

fn kubeconfig_cmd(
    server: Option<String>,
    token: Option<String>,
    namespace: &str,
    dir: DataDirFlags,
) -> anyhow::Result<()> {
    let config = dir.load()?;
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let server = match server {
        Some(s) => s,
        None => monovirt::daemon::kubeconfig::server_url(
            *config
                .tls_listen
                .first()
                .context("the config has no tls_listen address: pass --server")?,
        ),
    };
    let ca = match &config.tls {
        Some(files) => {
            let chain = read(&files.cert)?;
            let last = chain
                .rfind("-----BEGIN CERTIFICATE-----")
                .context("the tls_cert file holds no certificate")?;
            chain[last..].to_string()
        }
        None => read(&config.data_dir.join("tls/ca.crt"))?,
    };
    let token = match token {
        Some(t) => t,
        None => read(&config.data_dir.join("admin-token"))?
            .trim()
            .to_string(),
    };
    print!(
        "{}",
        monovirt::daemon::kubeconfig::render(&server, &ca, &token, namespace)
    );
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

/// `monovirt run`: one VM in the foreground; exits with the guest.
fn run_vm(global: GlobalFlags, args: &monovirt::vmm::run::RunArgs) -> ExitCode {
    init_logging(global.log_format.unwrap_or_default(), tracing::Level::WARN);
    monovirt::vmm::seccomp::set_mode(global.seccomp.unwrap_or_default());
    match monovirt::vmm::run::run(args) {
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

/// C's `pow`, defined in the binary from the `libm` crate. It is the only symbol the
/// binary would import from the C library's libm.so (tokio's scheduler statistics and
/// indicatif's rate estimate call `f64::powf`); defined here, the linker resolves it
/// locally and drops libm.so from the binary's needs (`--as-needed`), so no process
/// maps it (~0.3 MiB of `monovirt run`'s resident pages, benches/boot.rs).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

fn main() -> ExitCode {
    // `monovirt run …` (the subcommand first, as it is always spelled in scripts and
    // benchmarks) takes the short way; `monovirt --seccomp kill run …` the long one.
    if std::env::args_os().nth(1).is_some_and(|a| a == "run") {
        let run = RunCli::parse_from(std::env::args_os().skip(1));
        return run_vm(run.global, &run.args);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Client(command) => {
            init_logging(
                cli.global.log_format.unwrap_or_default(),
                tracing::Level::WARN,
            );
            return run_client(command);
        }
        Cmd::Serve(flags) => match flags.load(cli.global.log_format, cli.global.seccomp) {
            Ok(config) => {
                init_logging(config.log_format, tracing::Level::INFO);
                monovirt::vmm::seccomp::set_mode(config.seccomp);
                let roles = ServeRoles {
                    agent: (!flags.no_agent).then_some(flags.node),
                    node_grace: flags.node_monitor_grace_period,
                };
                runtime().and_then(|rt| rt.block_on(serve(config, roles)))
            }
            Err(e) => Err(e),
        },
        Cmd::Agent {
            server,
            token,
            ca_file,
            data_dir,
            node,
        } => {
            init_logging(
                cli.global.log_format.unwrap_or_default(),
                tracing::Level::INFO,
            );
            monovirt::vmm::seccomp::set_mode(cli.global.seccomp.unwrap_or_default());
            let subnet = node.pod_network_cidr.unwrap_or_else(|| {
                monovirt::daemon::config::DEFAULT_SUBNET
                    .parse()
                    .expect("a valid literal subnet")
            });
            let config = node.config(data_dir, Some(server.clone()), subnet);
            runtime().and_then(|rt| rt.block_on(agent(server, token, ca_file, config)))
        }
        Cmd::ImageUpload(args) => {
            init_logging(
                cli.global.log_format.unwrap_or_default(),
                tracing::Level::WARN,
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime");
            rt.and_then(|rt| {
                rt.block_on(monovirt::storage::uploader::run(&args))
                    .map_err(anyhow::Error::from)
            })
        }
        Cmd::Image { data_dir, command } => {
            init_logging(
                cli.global.log_format.unwrap_or_default(),
                tracing::Level::WARN,
            );
            image(data_dir, command)
        }
        Cmd::Run(args) => return run_vm(cli.global, &args),
        Cmd::Token(cmd) => {
            init_logging(
                cli.global.log_format.unwrap_or_default(),
                tracing::Level::WARN,
            );
            token_cmd(cmd)
        }
        Cmd::Kubeconfig {
            server,
            token,
            namespace,
            dir,
        } => kubeconfig_cmd(server, token, &namespace, dir),
        Cmd::Install { root } => monovirt::daemon::install::install(&root)
            .map(|r| {
                for l in r.lines {
                    println!("{l}");
                }
                if root == Path::new("/") {
                    println!("next: systemctl daemon-reload && systemctl enable --now monovirt");
                }
            })
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e),
    }
}
