//! `monovirt get KIND [NAME...] [-n NS | -A] [-l SELECTOR] [-o yaml|json|wide|name]`:
//! tables come from the server (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`),
//! so the columns are the kind's printer columns exactly as kubectl shows them.

use super::connection::{Connection, ConnectionArgs};
use super::printer::{self, TableStyle};
use super::{kind, CliError};
use crate::client::Api;
use crate::store::ListOptions;
use api::resource::ResourceDef;
use clap::{Args, ValueEnum};
use serde_json::Value;
use std::io::Write;

/// The media type of a `meta.k8s.io/v1` Table (kubectl's `get` asks for it the same way).
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Yaml,
    Json,
    Wide,
    Name,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// KIND [NAME...] or KIND/NAME... (kinds: vm, vmi, vmim, dv, pvc, node, ns, ev, sc, ...).
    #[arg(required = true, num_args = 1..)]
    pub targets: Vec<String>,
    /// Output format (default: a table).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Print no header line.
    #[arg(long)]
    pub no_headers: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The namespace a request on `def` uses: `None` for cluster-scoped kinds and `-A`.
fn scope<'a>(def: &ResourceDef, conn: &'a Connection, all: bool) -> Option<&'a str> {
    (def.namespaced && !all).then_some(conn.namespace.as_str())
}

pub async fn run(args: &GetArgs) -> Result<(), CliError> {
    let conn = args.connection.connect()?;
    let (def, names) = kind::targets(&args.targets)?;
    if args.all_namespaces && !names.is_empty() {
        return Err(CliError::Usage(
            "a resource cannot be retrieved by name across all namespaces".into(),
        ));
    }
    match args.output {
        None | Some(Output::Wide) => table(args, &conn, def, &names).await,
        Some(o) => objects(args, &conn, def, &names, o).await,
    }
}

async fn table(
    args: &GetArgs,
    conn: &Connection,
    def: &'static ResourceDef,
    names: &[String],
) -> Result<(), CliError> {
    let ns = scope(def, conn, args.all_namespaces);
    let mut tables = Vec::new();
    let mut failed = Vec::new();
    if names.is_empty() {
        let mut path = def.collection_path(ns);
        if let Some(sel) = &args.selector {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("labelSelector", sel)
                .finish();
            path = format!("{path}?{q}");
        }
        tables.push(fetch_table(conn, &path).await?);
    } else {
        for name in names {
            let path = format!("{}/{name}", def.collection_path(ns));
            match fetch_table(conn, &path).await {
                Ok(t) => tables.push(t),
                Err(e) => failed.push(e),
            }
        }
    }
    // One table: rows of several names are printed under one header.
    let mut merged = match tables.first() {
        Some(t) => t.clone(),
        None => Value::Null,
    };
    if let Some(rows) = merged.get_mut("rows").and_then(Value::as_array_mut) {
        for t in tables.iter().skip(1) {
            rows.extend(t["rows"].as_array().cloned().unwrap_or_default());
        }
    }
    let rows = merged["rows"].as_array().map_or(0, Vec::len);
    if rows > 0 {
        let style = TableStyle {
            wide: args.output == Some(Output::Wide),
            namespace: args.all_namespaces && def.namespaced,
            no_headers: args.no_headers,
        };
        let mut out = std::io::stdout().lock();
        for line in printer::table_lines(&merged, style) {
            writeln!(out, "{line}")?;
        }
    } else if names.is_empty() {
        eprintln!("{}", no_resources(def, ns));
    }
    finish(failed)
}

/// kubectl's message for an empty list.
fn no_resources(def: &ResourceDef, ns: Option<&str>) -> String {
    match ns {
        Some(ns) if def.namespaced => format!("No resources found in {ns} namespace."),
        _ => "No resources found".to_string(),
    }
}

/// Prints each failure; one failure is the command's error, several are counted.
pub(crate) fn finish(mut failed: Vec<CliError>) -> Result<(), CliError> {
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0)),
        n => {
            for e in &failed {
                eprintln!("{e}");
            }
            Err(CliError::Partial(n))
        }
    }
}

async fn fetch_table(conn: &Connection, path: &str) -> Result<Value, CliError> {
    let resp = conn
        .client
        .request(hyper::Method::GET, path, TABLE_ACCEPT, None)
        .await
        .map_err(|e| conn.error(e))?;
    let v: Value = serde_json::from_slice(&resp.body)
        .map_err(|e| conn.error(crate::client::ClientError::Decode(e)))?;
    if v["kind"] != "Table" {
        return Err(CliError::Usage(format!(
            "the server answered a {} where a Table was asked for",
            v["kind"]
        )));
    }
    Ok(v)
}

async fn objects(
    args: &GetArgs,
    conn: &Connection,
    def: &'static ResourceDef,
    names: &[String],
    output: Output,
) -> Result<(), CliError> {
    let ns = scope(def, conn, args.all_namespaces);
    let api: Api<Value> = match ns {
        Some(ns) => Api::namespaced(conn.client.clone(), def, ns),
        None => Api::all(conn.client.clone(), def),
    };
    let api_version = def.api_version();
    let mut items = Vec::new();
    let mut failed = Vec::new();
    let single = names.len() == 1;
    if names.is_empty() {
        let opts = ListOptions {
            label_selector: args.selector.clone(),
            ..ListOptions::default()
        };
        let list = api.list(&opts).await.map_err(|e| conn.error(e))?;
        items = list.items;
    } else {
        for name in names {
            match api.get(name).await {
                Ok(o) => items.push(o),
                Err(e) => failed.push(conn.error(e)),
            }
        }
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|o| printer::with_type(o, &api_version, def.kind))
        .collect();
    let mut out = std::io::stdout().lock();
    match output {
        Output::Name => {
            for o in &items {
                let name = o["metadata"]["name"].as_str().unwrap_or_default();
                writeln!(out, "{}/{name}", kind::qualified_singular(def))?;
            }
        }
        Output::Yaml | Output::Json if single && items.len() == 1 => {
            let text = if output == Output::Yaml {
                printer::yaml(&items[0])
            } else {
                printer::json(&items[0])
            };
            out.write_all(text.as_bytes())?;
        }
        Output::Yaml | Output::Json if !items.is_empty() || names.is_empty() => {
            let l = printer::list(items);
            let text = if output == Output::Yaml {
                printer::yaml(&l)
            } else {
                printer::json(&l)
            };
            out.write_all(text.as_bytes())?;
        }
        _ => {}
    }
    out.flush()?;
    finish(failed)
}
