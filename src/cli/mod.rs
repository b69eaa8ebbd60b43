//! The client commands of the one binary: kubectl's and virtctl's verbs over the REST API,
//! through [`crate::client`]'s HTTP transport (TCP or the daemon's Unix socket).
//!
//! - [`connection`]: `--server`, `--token`, `-n` and the default server address;
//! - [`kind`]: kind names on the command line (`vm`, `vmis`, `pvc`, `virtualmachines.kubevirt.io`);
//! - [`get`], [`printer`]: `get` with the server's Table columns, or YAML, JSON, names;
//! - [`manifest`]: reading YAML/JSON manifests (files, directories, stdin, multi-document);
//! - [`apply`], [`delete`]: server-side apply and deletion;
//! - [`lifecycle`]: `start`, `stop`, `restart`, `pause`, `unpause` (KubeVirt's subresources);
//! - [`console`], [`terminal`]: the serial console over a WebSocket, the terminal in raw mode;
//! - [`error`]: failures as kubectl words them.
// `CliError` carries the API's `ApiError` (160 bytes) unboxed, as the client does; a
// command fails once, so the size costs nothing.
#![allow(clippy::result_large_err)]

pub mod apply;
pub mod connection;
pub mod console;
pub mod delete;
pub mod error;
pub mod get;
pub mod kind;
pub mod lifecycle;
pub mod manifest;
pub mod printer;

pub use error::CliError;

use clap::Subcommand;

/// The client verbs (flattened into `monovirt`'s subcommands).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show objects, as `kubectl get` does (columns from the server's Table).
    Get(get::GetArgs),
    /// Create or update objects from manifests (server-side apply).
    Apply(apply::ApplyArgs),
    /// Delete objects by kind and name, or those of manifests.
    Delete(delete::DeleteArgs),
    /// Start a VirtualMachine.
    Start(lifecycle::VmArgs),
    /// Stop a VirtualMachine.
    Stop(lifecycle::VmArgs),
    /// Restart a VirtualMachine.
    Restart(lifecycle::VmArgs),
    /// Pause a running VirtualMachineInstance (`pause [vm|vmi] NAME`).
    Pause(lifecycle::PauseArgs),
    /// Resume a paused VirtualMachineInstance (`unpause [vm|vmi] NAME`).
    Unpause(lifecycle::PauseArgs),
    /// Attach to a VirtualMachineInstance's serial console (escape with Ctrl-]).
    Console(console::ConsoleArgs),
}

/// Runs one client command; what it prints goes to stdout, diagnostics to stderr.
pub async fn run(command: Command) -> Result<(), CliError> {
    use lifecycle::{PauseAction, VmAction};
    match command {
        Command::Get(a) => get::run(&a).await,
        Command::Apply(a) => apply::run(&a).await,
        Command::Delete(a) => delete::run(&a).await,
        Command::Start(a) => lifecycle::vm(&a, VmAction::Start).await,
        Command::Stop(a) => lifecycle::vm(&a, VmAction::Stop).await,
        Command::Restart(a) => lifecycle::vm(&a, VmAction::Restart).await,
        Command::Pause(a) => lifecycle::pause(&a, PauseAction::Pause).await,
        Command::Unpause(a) => lifecycle::pause(&a, PauseAction::Unpause).await,
        Command::Console(a) => console::run(&a).await,
    }
}
