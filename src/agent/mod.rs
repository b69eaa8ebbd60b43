//! The node agent (virt-handler's role, with the kubelet's node endpoint): registers
//! this host as a Node and heartbeats its Ready condition, runs the VMIs the scheduler
//! binds to it in the in-process VMM, and reports their phases back.
//!
//! - [`node`]: the Node object (capacity, nodeInfo, labels) and the heartbeat;
//! - [`prepare`]: the seam between a VMI and a VM config (volumes, interfaces, kernel
//!   boot) and its release;
//! - [`domain`]: one VMI's VM in this process, and the table of them;
//! - [`vmi`]: the reconcile of one VMI (start, report, stop, finalizer);
//! - [`endpoint`]: the node endpoint (pause, unpause, console WebSocket);
//! - [`policy`]: NodeNetworkConfigurationPolicies applied to this node (with `--network`);
//! - [`rollout`]: their `maxUnavailable` limit across nodes;
//! - [`event`]: Events about VMIs.
//!
//! The same code runs in `monovirt serve` (an in-process client) and in
//! `monovirt agent --server URL` (the HTTP client): the agent only ever talks to the API.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
// The client's error carries an API `Status` unboxed, as the client does.
#![allow(clippy::result_large_err)]

pub mod domain;
pub mod endpoint;
pub mod event;
pub mod node;
pub mod policy;
pub mod prepare;
pub mod rollout;
pub mod vmi;

use crate::client::{Api, Client, ClientError};
use crate::controller::reflector::{reflect_with, Cache};
use crate::controller::runtime;
use crate::image::{ImageError, ImageStore};
use crate::scheduler::runner::NODE_NAME_LABEL;
use crate::store::{ListOptions, WriteOptions};
use api::core::node::Node;
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
use api::resource::ResourceDef;
use domain::Domains;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The finalizer the agent keeps on a VMI while its guest may run.
pub const FINALIZER: &str = "monovirt.io/node-agent";
/// The namespace of the nodes' endpoint tokens.
pub const SYSTEM_NAMESPACE: &str = "monovirt-system";
/// The default heartbeat interval (the kubelet's nodeStatusUpdateFrequency).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// How often every VMI on the node is reconciled without changes.
pub const RESYNC: Duration = Duration::from_secs(60);

/// How an agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name.
    pub node_name: String,
    /// Where the image store and the VMs' node-local files live.
    pub data_dir: PathBuf,
    /// Where the node endpoint listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The address published in the Node (default: the listen address, or, when that is
    /// unspecified, the local address the API server is reached from).
    pub advertise: Option<IpAddr>,
    /// How often the Ready condition is renewed.
    pub heartbeat: Duration,
    /// The API server's address, to find the advertised address (remote agents).
    pub server: Option<String>,
    /// VMI networking on this node (the default network, multus bridge and macvtap);
    /// `None` leaves VMI interfaces unconnected.
    pub network: Option<crate::network::node::NodeNetworkConfig>,
    /// Where running VMs are registered for the API server's `/metrics` (the local
    /// agent of `serve`; `None` for remote agents).
    pub vm_stats: Option<Arc<crate::vmm::stats::Registry>>,
}

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("Opening the image store failed")]
    Images(#[from] ImageError),
    #[error("Binding the node endpoint on {0} failed")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("Creating {0} failed")]
    Dir(String, #[source] std::io::Error),
    #[error("The node endpoint failed")]
    Serve(#[source] std::io::Error),
    #[error("Setting up VMI networking failed")]
    Network(#[source] crate::network::node::NetworkError),
    #[error("Opening the node network policy record failed")]
    Policy(#[source] crate::network::policy::PolicyError),
}

/// The agent's shared state.
pub struct Agent {
    pub config: AgentConfig,
    pub client: Client,
    pub node: prepare::Node,
    pub vmis: Cache<VirtualMachineInstance>,
    pub domains: Domains,
    /// Events about this node's VMIs.
    pub events: crate::controller::event::Recorder,
    /// The node endpoint's bearer token.
    pub token: String,
    keys: mpsc::UnboundedSender<String>,
    vmi_def: &'static ResourceDef,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node", &self.config.node_name)
            .field("domains", &self.domains.len())
            .finish()
    }
}

/// The cache key of a VMI.
pub fn key_of(vmi: &VirtualMachineInstance) -> String {
    format!(
        "{}/{}",
        vmi.metadata.namespace.as_deref().unwrap_or_default(),
        vmi.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A fresh random token (two v4 UUIDs: 244 random bits from the OS).
fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The local address that routes to `server` (`http(s)://HOST:PORT`); no packet is sent.
fn route_to(server: &str) -> Option<IpAddr> {
    let hostport = server
        .strip_prefix("http://")
        .or_else(|| server.strip_prefix("https://"))?
        .trim_end_matches('/');
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .ok()?
        .next()?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(addr).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// Creates the `monovirt-system` Namespace unless it exists. The control plane does it
/// at start (the node lifecycle controller); the local agent of `serve` may get there
/// first.
pub async fn ensure_system_namespace(client: &Client) -> Result<(), ClientError> {
    let Some(ns_def) = api::resource::find_kind("", "Namespace") else {
        return Ok(());
    };
    let namespaces: Api<Value> = Api::all(client.clone(), ns_def);
    let ns =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}});
    match namespaces.create(&ns, &WriteOptions::default()).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(409) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Publishes the endpoint token in Secret `monovirt-system/node-<node>`.
async fn publish_token(client: &Client, node: &str, token: &str) -> Result<(), ClientError> {
    let Some(secret_def) = api::resource::find_kind("", "Secret") else {
        tracing::warn!("the API serves no Secrets: the node endpoint token is not published");
        return Ok(());
    };
    match ensure_system_namespace(client).await {
        Ok(()) => {}
        // A remote agent's node token may not create Namespaces: the control plane made
        // it (a Secret in a missing one fails below, and is retried).
        Err(e) if e.code() == Some(403) => {}
        Err(e) => return Err(e),
    }
    use base64::Engine;
    let name = format!("node-{node}");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE,
            "labels": {"kubernetes.io/hostname": node}},
        "data": {"token": base64::engine::general_purpose::STANDARD.encode(token)}});
    let secrets: Api<Value> = Api::namespaced(client.clone(), secret_def, SYSTEM_NAMESPACE);
    match secrets.get_opt(&name).await? {
        None => {
            secrets.create(&secret, &WriteOptions::default()).await?;
        }
        Some(old) => {
            let mut new = secret;
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            secrets
                .replace(&name, &new, &WriteOptions::default())
                .await?;
        }
    }
    Ok(())
}

/// Retries `f` every second until it succeeds or `shutdown`; false when shut down.
async fn retry<F, Fut>(what: &str, shutdown: &CancellationToken, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    loop {
        match f().await {
            Ok(()) => return true,
            Err(e) => tracing::warn!("{what} failed: {e}; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Runs the agent until `shutdown`; then powers every guest off (each within its grace
/// period) before returning.
pub async fn run(
    client: Client,
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let images = ImageStore::open(&config.data_dir)?;
    let run_dir = config.data_dir.join("run/vmis");
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| AgentError::Dir(run_dir.display().to_string(), e))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| AgentError::Bind(config.listen, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| AgentError::Bind(config.listen, e))?;
    let ip = config.advertise.unwrap_or_else(|| {
        if local.ip().is_unspecified() {
            config
                .server
                .as_deref()
                .and_then(route_to)
                .unwrap_or(IpAddr::from([127, 0, 0, 1]))
        } else {
            local.ip()
        }
    });
    let advertised = SocketAddr::new(ip, local.port());
    let network = match &config.network {
        Some(net) => {
            let network = crate::network::node::NodeNetwork::start(net.clone())
                .await
                .map_err(AgentError::Network)?;
            // Links of VMIs whose node-local directory is gone were leaked by a crash.
            let active = std::fs::read_dir(&run_dir)
                .map_err(|e| AgentError::Dir(run_dir.display().to_string(), e))?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect();
            network
                .reconcile(&active)
                .await
                .map_err(AgentError::Network)?;
            Some(Arc::new(network))
        }
        None => None,
    };
    // Node network policies: only an agent trusted with the node's networking applies them.
    let policies = match &network {
        Some(net) => {
            let applier =
                crate::network::policy::PolicyApplier::open(net.links().clone(), &config.data_dir)
                    .map_err(AgentError::Policy)?;
            Some(Arc::new(applier))
        }
        None => None,
    };
    let (keys_tx, keys_rx) = mpsc::unbounded_channel();
    let agent = Arc::new(Agent {
        node: prepare::Node {
            volumes: Some(crate::storage::volume::Volumes::new(
                client.clone(),
                &config.data_dir,
                Some(config.node_name.clone()),
            )),
            images,
            run_dir,
            network,
        },
        client: client.clone(),
        vmis: Cache::default(),
        domains: Domains::default(),
        events: crate::controller::event::Recorder::new(client.clone(), event::COMPONENT)
            .on_host(config.node_name.clone()),
        token: new_token(),
        keys: keys_tx,
        vmi_def: api::resource::find_kind("kubevirt.io", "VirtualMachineInstance")
            .expect("the registry serves VirtualMachineInstance"),
        config,
    });
    let name = agent.config.node_name.clone();
    tracing::info!(node = %name, endpoint = %advertised, "node agent starting");

    // The endpoint first, so the address published in the Node answers.
    let app = endpoint::router(agent.clone());
    let serve_stop = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { serve_stop.cancelled().await })
            .await
    });

    let node_def = api::resource::find_kind("", "Node").expect("the registry serves Node");
    let nodes: Api<Node> = Api::all(client.clone(), node_def);
    let desired = node::desired(&name, &node::Host::probe(), advertised);
    if !retry("registering the node", &shutdown, || {
        node::register(&nodes, &desired)
    })
    .await
    {
        return Ok(());
    }
    if !retry("publishing the endpoint token", &shutdown, || {
        publish_token(&client, &name, &agent.token)
    })
    .await
    {
        return Ok(());
    }

    // Heartbeats.
    let beat = {
        let nodes = nodes.clone();
        let name = name.clone();
        let stop = shutdown.clone();
        let every = agent.config.heartbeat;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = node::heartbeat(&nodes, &name).await {
                    tracing::warn!(node = %name, "heartbeat failed: {e}");
                }
            }
        })
    };

    // VMIs bound to this node (the scheduler labels them before it binds them).
    let (changes_tx, mut changes_rx) = mpsc::unbounded_channel();
    let selector = ListOptions {
        label_selector: Some(format!("{NODE_NAME_LABEL}={name}")),
        ..ListOptions::default()
    };
    let reflector = tokio::spawn(reflect_with(
        Api::all(client.clone(), agent.vmi_def),
        selector,
        agent.vmis.clone(),
        changes_tx,
        shutdown.clone(),
    ));
    let forward = {
        let keys = agent.keys.clone();
        tokio::spawn(async move {
            while let Some(c) = changes_rx.recv().await {
                if keys.send(c.key).is_err() {
                    return;
                }
            }
        })
    };
    let policy_loop = policies.map(|applier| {
        tokio::spawn(policy::run(
            client.clone(),
            name.clone(),
            applier,
            shutdown.clone(),
        ))
    });
    let loop_stop = CancellationToken::new();
    let reconciler = tokio::spawn(runtime::run(
        agent.clone(),
        keys_rx,
        |a: &Agent| {
            let mut keys: Vec<String> = a.vmis.list().iter().map(|v| key_of(v)).collect();
            keys.extend(a.domains.list().iter().map(|d| d.key.clone()));
            keys
        },
        vmi::reconcile,
        RESYNC,
        loop_stop.clone(),
    ));

    shutdown.cancelled().await;
    tracing::info!(node = %name, vms = agent.domains.len(), "node agent stopping");
    loop_stop.cancel();
    let _ = reconciler.await;
    stop_all(&agent).await;
    for t in [beat, forward].into_iter().chain(policy_loop) {
        let _ = t.await;
    }
    let _ = reflector.await;
    if let Ok(Err(e)) = server.await {
        return Err(AgentError::Serve(e));
    }
    Ok(())
}

/// The longest a guest is waited for at daemon shutdown, whatever its grace period: the
/// systemd unit's TimeoutStopSec (deploy/monovirt.service) stays above it.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(300);

/// Powers every guest off within its grace period (at most [`MAX_SHUTDOWN_GRACE`], then
/// stops it), and reports each VMI's final phase (best effort: the API may be going away
/// too).
async fn stop_all(agent: &Arc<Agent>) {
    let mut tasks = tokio::task::JoinSet::new();
    for d in agent.domains.list() {
        let agent = agent.clone();
        tasks.spawn(async move {
            d.state().stopping = true;
            let handle = d.handle();
            let _ = handle.request(crate::vmm::Command::Stop {
                timeout: d.grace.min(MAX_SHUTDOWN_GRACE),
            });
            let exit = handle.exited().await;
            tracing::info!(vmi = %d.key, %exit, "VM stopped at shutdown");
            d.state().exit.get_or_insert(exit);
            // Report it while the API may still answer.
            if let Err(e) = vmi::reconcile(agent.clone(), d.key.clone()).await {
                tracing::debug!(vmi = %d.key, "final status at shutdown: {e}");
            }
            if let Err(e) = prepare::release(&agent.node, &d.uid) {
                tracing::warn!(vmi = %d.key, "releasing at shutdown: {e}");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}
