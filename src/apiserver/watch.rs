//! Watch streams: `200`, `Content-Type: application/json`, chunked, one
//! `{"type":...,"object":...}` per line, as the store produces them. With a Table `Accept`
//! each object event carries a one-row Table (kubectl `get -w`). A stream ends at
//! `timeoutSeconds` (30 minutes by default, kube-apiserver's minimum request timeout), when
//! the store ends it, or when the server shuts down. A too-old `resourceVersion` fails
//! before the stream starts, as an HTTP 410 `Status`.

use super::table::{self, TableOptions};
use super::AppState;
use crate::store::{ListOptions, WatchEvent, WatchEventType};
use api::resource::ResourceDef;
use api::status::ApiError;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;

/// How long a watch without `timeoutSeconds` is kept open.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// One wire line for `event` (newline-terminated).
pub fn encode(def: &ResourceDef, event: WatchEvent, table: Option<TableOptions>) -> Bytes {
    let WatchEvent { type_, mut object } = event;
    if let Some(m) = object.as_object_mut() {
        if matches!(
            type_,
            WatchEventType::Added
                | WatchEventType::Modified
                | WatchEventType::Deleted
                | WatchEventType::Bookmark
        ) {
            m.entry("kind").or_insert_with(|| json!(def.kind));
            m.entry("apiVersion")
                .or_insert_with(|| json!(def.api_version()));
        }
    }
    let object = match (table, type_) {
        (
            Some(opts),
            WatchEventType::Added | WatchEventType::Modified | WatchEventType::Deleted,
        ) => {
            let rv = object["metadata"]["resourceVersion"].clone();
            table::render(
                def,
                std::slice::from_ref(&object),
                json!({"resourceVersion": rv}),
                opts,
            )
        }
        _ => object,
    };
    let mut line = serde_json::to_vec(&WatchEvent { type_, object }.to_json())
        .expect("a JSON value always serializes");
    line.push(b'\n');
    Bytes::from(line)
}

/// Starts a watch and returns the streaming response.
pub fn respond(
    state: &AppState,
    def: &ResourceDef,
    ns: Option<&str>,
    opts: &ListOptions,
    table: Option<TableOptions>,
    timeout: Option<Duration>,
) -> Result<Response, ApiError> {
    let rx = state.objects().watch(def, ns, opts)?;
    let sleep = Box::pin(tokio::time::sleep(timeout.unwrap_or(DEFAULT_TIMEOUT)));
    let shutdown = state.shutdown_token();
    let def = *def;
    let stream = futures_util::stream::unfold(
        (rx, sleep, shutdown),
        move |(mut rx, mut sleep, shutdown)| async move {
            let event = tokio::select! {
                ev = rx.recv() => ev?,
                () = &mut sleep => return None,
                () = shutdown.cancelled() => return None,
            };
            let line = encode(&def, event, table);
            Some((Ok::<_, Infallible>(line), (rx, sleep, shutdown)))
        },
    );
    let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::table::IncludeObject;
    use crate::apiserver::testing::VM;

    #[test]
    fn lines_and_tables() {
        let ev = WatchEvent {
            type_: WatchEventType::Added,
            object: json!({"metadata": {"name": "vm1", "resourceVersion": "3"}}),
        };
        let line = encode(&VM, ev.clone(), None);
        assert!(line.ends_with(b"\n"));
        let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(v["type"], "ADDED");
        assert_eq!(v["object"]["kind"], "VirtualMachine");
        let t = encode(
            &VM,
            ev,
            Some(TableOptions {
                v1beta1: false,
                include: IncludeObject::Metadata,
            }),
        );
        let v: serde_json::Value = serde_json::from_slice(&t).expect("json");
        assert_eq!(v["object"]["kind"], "Table");
        assert_eq!(v["object"]["metadata"]["resourceVersion"], "3");
        assert_eq!(v["object"]["rows"][0]["cells"][0], "vm1");
        let err = WatchEvent {
            type_: WatchEventType::Error,
            object: ApiError::expired("too old").to_status(),
        };
        let v: serde_json::Value = serde_json::from_slice(&encode(&VM, err, None)).expect("json");
        assert_eq!(v["object"]["kind"], "Status");
    }
}
