//! `monovirt apply -f FILE|DIR|-`: server-side apply of each manifest object (a PATCH with
//! `application/apply-patch+yaml` and field manager `monovirt`), which creates an absent
//! object and merges into an existing one. Each object is reported as kubectl does:
//! `virtualmachine.kubevirt.io/vm1 created`, `configured` or `unchanged`.

use super::connection::{Connection, ConnectionArgs};
use super::manifest::{self, Document};
use super::{kind, CliError};
use crate::client::Api;
use crate::store::{FieldValidation, Patch, WriteOptions};
use api::resource::ResourceDef;
use clap::Args;
use serde_json::{json, Value};

/// The field manager of the CLI's applies.
pub const FIELD_MANAGER: &str = "monovirt";

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// Manifest file, directory, or `-` for stdin (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Take over fields another manager owns.
    #[arg(long)]
    pub force_conflicts: bool,
    /// Validate and default on the server without persisting.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The resource, namespace and name of a manifest object.
pub struct Target {
    pub def: &'static ResourceDef,
    pub namespace: Option<String>,
    pub name: String,
}

/// Resolves a manifest object against the served resources and the `-n` namespace.
pub fn target(doc: &Document, conn: &Connection) -> Result<Target, CliError> {
    let fail = |message: String| CliError::Manifest {
        source_name: doc.source.clone(),
        message,
    };
    let o = &doc.object;
    let api_version = o["apiVersion"].as_str().unwrap_or_default();
    let kind_name = o["kind"].as_str().unwrap_or_default();
    if api_version.is_empty() || kind_name.is_empty() {
        return Err(fail("an object must have apiVersion and kind".into()));
    }
    let def = api::resource::find_api_version_kind(api_version, kind_name).ok_or_else(|| {
        fail(format!(
            "no matches for kind \"{kind_name}\" in version \"{api_version}\""
        ))
    })?;
    let name = o["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return Err(fail(format!("a {kind_name} must have metadata.name")));
    }
    let namespace = if def.namespaced {
        let own = o["metadata"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty());
        match own {
            Some(ns) if conn.namespace_explicit && ns != conn.namespace => {
                return Err(fail(format!(
                    "the namespace from the provided object \"{ns}\" does not match the namespace \"{}\". You must pass '--namespace={ns}' to perform this operation.",
                    conn.namespace
                )))
            }
            Some(ns) => Some(ns.to_string()),
            None => Some(conn.namespace.clone()),
        }
    } else {
        None
    };
    Ok(Target {
        def,
        namespace,
        name: name.to_string(),
    })
}

pub fn api_of(conn: &Connection, t: &Target) -> Api<Value> {
    match &t.namespace {
        Some(ns) => Api::namespaced(conn.client.clone(), t.def, ns),
        None => Api::all(conn.client.clone(), t.def),
    }
}

/// What applying one object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Configured,
    Unchanged,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
        }
    }
}

async fn apply_one(
    args: &ApplyArgs,
    conn: &Connection,
    doc: &Document,
) -> Result<String, CliError> {
    let t = target(doc, conn)?;
    let api = api_of(conn, &t);
    let before = api.get_opt(&t.name).await.map_err(|e| conn.error(e))?;
    let mut body = doc.object.clone();
    if let Some(ns) = &t.namespace {
        body["metadata"]["namespace"] = json!(ns);
    }
    let opts = WriteOptions {
        field_manager: Some(FIELD_MANAGER.into()),
        force: args.force_conflicts,
        dry_run: args.dry_run,
        field_validation: FieldValidation::Strict,
        ..WriteOptions::default()
    };
    let after = api
        .patch(&t.name, Patch::Apply(body), &opts)
        .await
        .map_err(|e| conn.error(e))?;
    let rv = |o: &Value| {
        o["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_string)
    };
    let what = match &before {
        None => Applied::Created,
        Some(b) if rv(b) == rv(&after) => Applied::Unchanged,
        Some(_) => Applied::Configured,
    };
    let dry = if args.dry_run {
        " (server dry run)"
    } else {
        ""
    };
    Ok(format!(
        "{}/{} {}{dry}",
        kind::qualified_singular(t.def),
        t.name,
        what.as_str()
    ))
}

pub async fn run(args: &ApplyArgs) -> Result<(), CliError> {
    let conn = args.connection.connect()?;
    let docs = manifest::read_all(&args.files)?;
    if docs.is_empty() {
        return Err(CliError::Usage("no objects passed to apply".into()));
    }
    let mut failed = Vec::new();
    for doc in &docs {
        match apply_one(args, &conn, doc).await {
            Ok(line) => println!("{line}"),
            Err(e @ CliError::Connect { .. }) => return Err(e),
            Err(e) => failed.push(e),
        }
    }
    super::get::finish(failed)
}
