//! `monovirt delete KIND NAME... | KIND/NAME... | -f FILE`: deletes objects and, like
//! kubectl's default `--wait`, waits until finalizers let them go.

use super::apply::{api_of, target, Target};
use super::connection::{Connection, ConnectionArgs};
use super::{kind, manifest, CliError};
use crate::client::{Api, Deletion};
use crate::store::{DeleteOptions, Propagation};
use clap::{ArgAction, Args};
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// KIND NAME... or KIND/NAME...
    pub targets: Vec<String>,
    /// Delete the objects of these manifests instead (repeatable; `-` is stdin).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Treat a missing object as deleted.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Wait until finalizers let the objects go (`--wait=false` returns at once).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub wait: bool,
    /// Seconds the object gets to end gracefully (0: at once).
    #[arg(long)]
    pub grace_period: Option<i64>,
    /// How dependents are deleted: background, foreground or orphan.
    #[arg(long)]
    pub cascade: Option<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// How often `--wait` looks whether a pending deletion finished.
const WAIT_POLL: Duration = Duration::from_millis(200);

fn options(args: &DeleteArgs) -> Result<DeleteOptions, CliError> {
    let propagation = match args.cascade.as_deref() {
        None => None,
        Some("background") => Some(Propagation::Background),
        Some("foreground") => Some(Propagation::Foreground),
        Some("orphan") => Some(Propagation::Orphan),
        Some(other) => {
            return Err(CliError::Usage(format!(
                "invalid --cascade {other:?}: must be background, foreground or orphan"
            )))
        }
    };
    Ok(DeleteOptions {
        propagation,
        grace_period_seconds: args.grace_period,
        ..DeleteOptions::default()
    })
}

async fn delete_one(
    args: &DeleteArgs,
    conn: &Connection,
    opts: &DeleteOptions,
    t: &Target,
) -> Result<Option<String>, CliError> {
    let api: Api<Value> = api_of(conn, t);
    let what = format!("{} \"{}\"", kind::qualified_singular(t.def), t.name);
    match api.delete(&t.name, opts).await {
        Ok(Deletion::Removed(_)) => Ok(Some(format!("{what} deleted"))),
        Ok(Deletion::Pending(_)) => {
            if args.wait {
                while api
                    .get_opt(&t.name)
                    .await
                    .map_err(|e| conn.error(e))?
                    .is_some()
                {
                    tokio::time::sleep(WAIT_POLL).await;
                }
            }
            Ok(Some(format!("{what} deleted")))
        }
        Err(e) if e.code() == Some(404) && args.ignore_not_found => Ok(None),
        Err(e) => Err(conn.error(e)),
    }
}

pub async fn run(args: &DeleteArgs) -> Result<(), CliError> {
    let conn = args.connection.connect()?;
    let opts = options(args)?;
    let mut targets = Vec::new();
    match (args.targets.is_empty(), args.files.is_empty()) {
        (false, false) => {
            return Err(CliError::Usage(
                "give either KIND NAME... or -f FILE, not both".into(),
            ))
        }
        (true, true) => {
            return Err(CliError::Usage(
                "you must specify KIND NAME..., KIND/NAME... or -f FILE".into(),
            ))
        }
        (false, true) => {
            let (def, names) = kind::targets(&args.targets)?;
            if names.is_empty() {
                return Err(CliError::Usage(format!(
                    "resource(s) were provided, but no name was specified (e.g. `monovirt delete {} NAME`)",
                    args.targets[0]
                )));
            }
            for name in names {
                targets.push(Target {
                    def,
                    namespace: def.namespaced.then(|| conn.namespace.clone()),
                    name,
                });
            }
        }
        (true, false) => {
            for doc in manifest::read_all(&args.files)? {
                targets.push(target(&doc, &conn)?);
            }
        }
    }
    let mut failed = Vec::new();
    for t in &targets {
        match delete_one(args, &conn, &opts, t).await {
            Ok(Some(line)) => println!("{line}"),
            Ok(None) => {}
            Err(e @ CliError::Connect { .. }) => return Err(e),
            Err(e) => failed.push(e),
        }
    }
    super::get::finish(failed)
}
