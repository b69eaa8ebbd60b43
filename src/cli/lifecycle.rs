//! virtctl's lifecycle verbs over KubeVirt's subresources
//! (`/apis/subresources.kubevirt.io/v1/namespaces/{ns}/...`): `start`, `stop`, `restart` of
//! a VirtualMachine and `pause`, `unpause` of its VirtualMachineInstance, answered as
//! virtctl answers: `VM vm1 was scheduled to start`.

use super::connection::{Connection, ConnectionArgs};
use super::CliError;
use clap::Args;

/// The path of a subresource of `plural/name` in `ns`.
pub fn subresource_path(ns: &str, plural: &str, name: &str, sub: &str) -> String {
    format!("/apis/subresources.kubevirt.io/v1/namespaces/{ns}/{plural}/{name}/{sub}")
}

#[derive(Debug, Clone, Args)]
pub struct VmArgs {
    /// The VirtualMachine.
    pub name: String,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PauseArgs {
    /// `vm NAME`, `vmi NAME`, or just NAME (the VirtualMachineInstance, named as its VM).
    #[arg(num_args = 1..=2, required = true)]
    pub target: Vec<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAction {
    Start,
    Stop,
    Restart,
}

impl VmAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseAction {
    Pause,
    Unpause,
}

impl PauseAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Unpause => "unpause",
        }
    }
}

async fn put(conn: &Connection, path: &str) -> Result<(), CliError> {
    conn.client
        .request(
            hyper::Method::PUT,
            path,
            "application/json",
            Some(("application/json", bytes::Bytes::from_static(b"{}"))),
        )
        .await
        .map_err(|e| conn.error(e))?;
    Ok(())
}

/// `start|stop|restart NAME`.
pub async fn vm(args: &VmArgs, action: VmAction) -> Result<(), CliError> {
    let conn = args.connection.connect()?;
    let path = subresource_path(
        &conn.namespace,
        "virtualmachines",
        &args.name,
        action.as_str(),
    );
    put(&conn, &path).await?;
    println!("VM {} was scheduled to {}", args.name, action.as_str());
    Ok(())
}

/// The VMI name of `pause`'s arguments.
fn pause_target(target: &[String]) -> Result<&str, CliError> {
    match target {
        [name] => Ok(name),
        [kind, name]
            if ["vm", "vmi", "virtualmachine", "virtualmachineinstance"]
                .contains(&kind.to_ascii_lowercase().as_str()) =>
        {
            Ok(name)
        }
        [kind, _] => Err(CliError::Usage(format!(
            "unsupported resource type {kind:?}: use vm or vmi"
        ))),
        _ => Err(CliError::Usage("give the name of the VM or VMI".into())),
    }
}

/// `pause|unpause [vm|vmi] NAME`.
pub async fn pause(args: &PauseArgs, action: PauseAction) -> Result<(), CliError> {
    let conn = args.connection.connect()?;
    let name = pause_target(&args.target)?;
    let path = subresource_path(
        &conn.namespace,
        "virtualmachineinstances",
        name,
        action.as_str(),
    );
    put(&conn, &path).await?;
    println!("VMI {name} was scheduled to {}", action.as_str());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_targets() {
        assert_eq!(
            subresource_path("default", "virtualmachines", "vm1", "start"),
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/vm1/start"
        );
        assert_eq!(pause_target(&["a".into()]).expect("name"), "a");
        assert_eq!(pause_target(&["vmi".into(), "b".into()]).expect("vmi"), "b");
        assert_eq!(pause_target(&["VM".into(), "c".into()]).expect("vm"), "c");
        assert!(pause_target(&["pod".into(), "d".into()]).is_err());
    }
}
