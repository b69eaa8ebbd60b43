//! Resource requests: get, list, create, update (PUT), patch, delete and deletecollection
//! on a collection, an object or its `/status`, translated to the store's [`Objects`]
//! calls. Watches are in [`super::watch`].
//!
//! [`Objects`]: crate::store::Objects

use super::error::HttpError;
use super::metrics::RequestInfo;
use super::negotiation::{self, Accept, Representation};
use super::path::ResourcePath;
use super::query::Params;
use super::table::{self, TableOptions};
use super::{watch, AppState};
use crate::store::{DeleteOptions, ListOptions, Patch, Subresource, Written};
use api::resource::ResourceDef;
use api::status::{ApiError, Cause};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// The Kubernetes verb of a request.
fn verb(method: &Method, rp: &ResourcePath, params: &Params) -> &'static str {
    match (method.as_str(), rp.name.is_some()) {
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) if params.watch().unwrap_or(false) => "watch",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

/// Serves one resource request, labelling the response for the metrics layer.
pub async fn handle(
    state: AppState,
    method: Method,
    rp: ResourcePath,
    raw_query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let params = Params::parse(raw_query.as_deref());
    let verb = verb(&method, &rp, &params);
    let resource = match &rp.subresource {
        Some(s) => format!("{}/{s}", rp.def.plural),
        None => rp.def.plural.to_string(),
    };
    let mut resp = match serve(&state, &method, verb, &rp, &params, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.extensions_mut().insert(RequestInfo { verb, resource });
    resp
}

async fn serve(
    state: &AppState,
    method: &Method,
    verb: &'static str,
    rp: &ResourcePath,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let def = &rp.def;
    let what = || {
        let mut p = def.plural.to_string();
        if let Some(s) = &rp.subresource {
            p = format!("{p}/{s}");
        }
        p
    };
    let subresource = match rp.subresource.as_deref() {
        None => None,
        Some("status") if def.has_status => Some(Subresource::Status),
        Some(_) => return Err(HttpError::no_route()),
    };
    let allowed = match subresource {
        Some(Subresource::Status) => matches!(verb, "get" | "update" | "patch"),
        None => def.verbs.contains(&verb),
    };
    // A namespaced kind without a namespace in the path: only the all-namespace list/watch.
    let needs_ns = def.namespaced && rp.namespace.is_none() && !matches!(verb, "list" | "watch");
    if !allowed || needs_ns || verb == "unknown" {
        return Err(HttpError::method_not_allowed(method.as_str(), &what()));
    }
    let ns = rp.namespace.as_deref();
    let objects = state.objects();
    match verb {
        "get" => {
            let representation = Accept::from_headers(headers).representation()?;
            let name = rp.name.as_deref().unwrap_or_default();
            let obj = with_type(def, objects.get(def, ns, name)?);
            match representation {
                Representation::Json => Ok(json_response(StatusCode::OK, &obj, &[])),
                Representation::Table { v1beta1 } => {
                    let rv = obj["metadata"]["resourceVersion"].clone();
                    let opts = TableOptions {
                        v1beta1,
                        include: params.include_object()?,
                    };
                    let t = table::render(
                        def,
                        std::slice::from_ref(&obj),
                        json!({"resourceVersion": rv}),
                        opts,
                    );
                    Ok(json_response(StatusCode::OK, &t, &[]))
                }
            }
        }
        "list" => {
            let representation = Accept::from_headers(headers).representation()?;
            let list = objects.list(def, ns, &params.list_options()?)?;
            let mut meta = Map::new();
            meta.insert(
                "resourceVersion".into(),
                json!(list.resource_version.to_string()),
            );
            if let Some(c) = &list.continue_token {
                meta.insert("continue".into(), json!(c));
            }
            if let Some(r) = list.remaining {
                meta.insert("remainingItemCount".into(), json!(r));
            }
            let items: Vec<Value> = list.items.into_iter().map(|o| with_type(def, o)).collect();
            let out = match representation {
                Representation::Json => json!({
                    "kind": def.list_kind,
                    "apiVersion": def.api_version(),
                    "metadata": meta,
                    "items": items,
                }),
                Representation::Table { v1beta1 } => {
                    let opts = TableOptions {
                        v1beta1,
                        include: params.include_object()?,
                    };
                    table::render(def, &items, Value::Object(meta), opts)
                }
            };
            Ok(json_response(StatusCode::OK, &out, &[]))
        }
        "watch" => {
            let representation = Accept::from_headers(headers).representation()?;
            let table = match representation {
                Representation::Json => None,
                Representation::Table { v1beta1 } => Some(TableOptions {
                    v1beta1,
                    include: params.include_object()?,
                }),
            };
            let opts = params.list_options()?;
            Ok(watch::respond(
                state,
                def,
                ns,
                &opts,
                table,
                params.timeout()?,
            )?)
        }
        "create" => {
            let opts = params.write_options(subresource)?;
            let mut obj = decode_object(headers, body).await?;
            check_identity(def, &mut obj, ns, None)?;
            let w = objects.create(def, ns, obj, &opts).await?;
            Ok(written(def, w, StatusCode::CREATED))
        }
        "update" => {
            let opts = params.write_options(subresource)?;
            let name = rp.name.as_deref().unwrap_or_default();
            let mut obj = decode_object(headers, body).await?;
            check_identity(def, &mut obj, ns, Some(name))?;
            let w = objects.update(def, ns, name, obj, &opts).await?;
            Ok(written(def, w, StatusCode::OK))
        }
        "patch" => {
            let opts = params.write_options(subresource)?;
            let name = rp.name.as_deref().unwrap_or_default();
            let patch = decode_patch(def, headers, body, opts.field_manager.as_deref()).await?;
            let w = objects.patch(def, ns, name, patch, &opts).await?;
            Ok(written(def, w, StatusCode::OK))
        }
        "delete" => {
            let name = rp.name.as_deref().unwrap_or_default();
            let opts = delete_options(params, body).await?;
            let d = objects.delete(def, ns, name, &opts).await?;
            let code = if d.removed {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok(json_response(code, &with_type(def, d.object), &[]))
        }
        "deletecollection" => {
            let opts = delete_options(params, body).await?;
            let list_opts = ListOptions {
                limit: None,
                continue_token: None,
                ..params.list_options()?
            };
            let list = objects.list(def, ns, &list_opts)?;
            let mut deleted = Vec::with_capacity(list.items.len());
            for item in list.items {
                let item_ns = item["metadata"]["namespace"].as_str().map(str::to_string);
                let Some(name) = item["metadata"]["name"].as_str() else {
                    continue;
                };
                match objects
                    .delete(def, item_ns.as_deref().or(ns), name, &opts)
                    .await
                {
                    Ok(d) => deleted.push(with_type(def, d.object)),
                    // Deleted concurrently: that is what was asked.
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let out = json!({
                "kind": def.list_kind,
                "apiVersion": def.api_version(),
                "metadata": {"resourceVersion": objects.revision().to_string()},
                "items": deleted,
            });
            Ok(json_response(StatusCode::OK, &out, &[]))
        }
        _ => Err(HttpError::method_not_allowed(method.as_str(), &what())),
    }
}

/// Items of a list may lack kind/apiVersion in storage; clients expect them.
fn with_type(def: &ResourceDef, mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.entry("kind").or_insert_with(|| json!(def.kind));
        m.entry("apiVersion")
            .or_insert_with(|| json!(def.api_version()));
    }
    obj
}

fn json_response(code: StatusCode, value: &Value, warnings: &[String]) -> Response {
    let body = serde_json::to_vec(value).expect("a JSON value always serializes");
    let mut resp = (code, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            h.append(header::WARNING, v);
        }
    }
    resp
}

fn written(def: &ResourceDef, w: Written, plain: StatusCode) -> Response {
    let code = if w.created {
        StatusCode::CREATED
    } else {
        plain
    };
    json_response(code, &with_type(def, w.object), &w.warnings)
}

/// The options of a delete or deletecollection: a DeleteOptions body if the request has
/// one (a blank body is none), with the query parameters.
async fn delete_options(params: &Params, body: Body) -> Result<DeleteOptions, HttpError> {
    let body = negotiation::read_body(body).await?;
    let options_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(negotiation::decode(&body, false)?)
    };
    Ok(params.delete_options(options_body.as_ref())?)
}

/// Reads a create/update body: JSON or YAML, at most 3 MiB, a JSON object.
async fn decode_object(headers: &HeaderMap, body: Body) -> Result<Value, HttpError> {
    let ct = negotiation::content_type(headers);
    let yaml = negotiation::is_yaml(ct.as_deref());
    if !yaml && !matches!(ct.as_deref(), None | Some("application/json" | "")) {
        return Err(HttpError::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({}) - accepted media types include: application/json, application/yaml",
            ct.unwrap_or_default()
        )));
    }
    let bytes = negotiation::read_body(body).await?;
    Ok(negotiation::decode(&bytes, yaml)?)
}

/// Checks (and fills in when absent) apiVersion, kind, namespace and, for PUT, name
/// against the request path. The in-process client runs the same check.
pub fn check_identity(
    def: &ResourceDef,
    obj: &mut Value,
    ns: Option<&str>,
    name: Option<&str>,
) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a single object",
        ));
    }
    let want_av = def.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(def.kind),
        Some(k) if k == def.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) of {}",
                def.kind, def.plural
            )))
        }
    }
    match obj.get("metadata") {
        Some(Value::Object(_)) => {}
        None | Some(Value::Null) => obj["metadata"] = json!({}),
        Some(_) => return Err(ApiError::bad_request("metadata must be an object")),
    }
    let meta = &mut obj["metadata"];
    if def.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => meta["namespace"] = json!(ns),
            Some(n) if Some(n) == ns => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
        }
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    if let Some(url_name) = name {
        match meta.get("name").and_then(Value::as_str) {
            None | Some("") => meta["name"] = json!(url_name),
            Some(n) if n == url_name => {}
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({url_name})"
                )))
            }
        }
    }
    Ok(())
}

/// Checks a server-side apply body: a field manager is required, and apiVersion/kind must
/// be the resource's (filled in when absent). The in-process client runs the same check.
pub fn check_apply(
    def: &ResourceDef,
    v: &mut Value,
    field_manager: Option<&str>,
) -> Result<(), ApiError> {
    if field_manager.is_none() {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            vec![Cause::new(
                "FieldValueRequired",
                "fieldManager",
                "Required value: is required for apply patch",
            )],
        ));
    }
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "an apply patch must be a single object",
        ));
    }
    for (k, want) in [
        ("apiVersion", def.api_version()),
        ("kind", def.kind.to_string()),
    ] {
        match v.get(k).and_then(Value::as_str) {
            Some(got) if got == want => {}
            Some(got) => {
                return Err(ApiError::bad_request(format!(
                    "the {k} in the apply patch ({got}) does not match the expected {k} ({want})"
                )))
            }
            None => v[k] = json!(want),
        }
    }
    Ok(())
}

/// Reads a PATCH body according to its Content-Type.
async fn decode_patch(
    def: &ResourceDef,
    headers: &HeaderMap,
    body: Body,
    field_manager: Option<&str>,
) -> Result<Patch, HttpError> {
    let ct = negotiation::content_type(headers).unwrap_or_default();
    let bytes = negotiation::read_body(body).await?;
    let patch = match ct.as_str() {
        "application/merge-patch+json" => Patch::Merge(negotiation::decode(&bytes, false)?),
        "application/json-patch+json" => {
            let v = negotiation::decode(&bytes, false)?;
            if !v.is_array() {
                return Err(ApiError::bad_request("a JSON patch must be an array of operations").into());
            }
            Patch::Json(v)
        }
        "application/strategic-merge-patch+json" => Patch::Strategic(negotiation::decode(&bytes, false)?),
        "application/apply-patch+yaml" => {
            let mut v = negotiation::decode(&bytes, true)?;
            check_apply(def, &mut v, field_manager)?;
            Patch::Apply(v)
        }
        other => {
            return Err(HttpError::unsupported_media_type(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            )))
        }
    };
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::testing::{NODE, VM};

    #[test]
    fn identity_filled_and_checked() {
        let mut o = json!({"metadata": {"name": "a"}});
        check_identity(&VM, &mut o, Some("default"), None).expect("ok");
        assert_eq!(o["apiVersion"], "kubevirt.io/v1");
        assert_eq!(o["kind"], "VirtualMachine");
        assert_eq!(o["metadata"]["namespace"], "default");
        for (mut bad, name) in [
            (
                json!({"apiVersion": "kubevirt.io/v2", "kind": "VirtualMachine"}),
                None,
            ),
            (json!({"apiVersion": "kubevirt.io/v1", "kind": "Pod"}), None),
            (json!({"metadata": {"namespace": "other"}}), None),
            (json!({"metadata": {"name": "b"}}), Some("a")),
        ] {
            let err = check_identity(&VM, &mut bad, Some("default"), name).expect_err("bad");
            assert_eq!(err.code, 400, "{bad}");
        }
        let mut node = json!({"metadata": {"name": "n", "namespace": "x"}});
        check_identity(&NODE, &mut node, None, Some("n")).expect("ok");
        assert!(node["metadata"].get("namespace").is_none());
    }

    #[test]
    fn warnings_become_299_headers() {
        let r = json_response(
            StatusCode::OK,
            &json!({}),
            &["unknown field \"spec.foo\"".to_string()],
        );
        assert_eq!(
            r.headers()[header::WARNING],
            r#"299 - "unknown field \"spec.foo\"""#
        );
    }
}
