//! Query parameters of resource requests, parsed into the store's option types. Bad
//! values are 400 BadRequest, as kube-apiserver answers them.

use super::table::IncludeObject;
use crate::store::{
    DeleteOptions, FieldValidation, ListOptions, Propagation, Subresource, WriteOptions,
};
use api::status::ApiError;
use serde_json::Value;
use std::time::Duration;

/// The decoded query string.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "invalid value for {key}: {v:?} (want true or false)"
        ))),
    }
}

fn parse_dry_run(v: &str) -> Result<bool, ApiError> {
    match v {
        "All" => Ok(true),
        "" => Ok(false),
        other => Err(ApiError::bad_request(format!(
            "Invalid dryRun value {other:?}: the only supported value is \"All\""
        ))),
    }
}

impl Params {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Self { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> Result<bool, ApiError> {
        self.get(key).map_or(Ok(false), |v| parse_bool(key, v))
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, ApiError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<T>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "invalid value for {key}: {v:?} (want a non-negative integer)"
                    ))
                })
            })
            .transpose()
    }

    /// `?watch=true`.
    pub fn watch(&self) -> Result<bool, ApiError> {
        self.flag("watch")
    }

    /// `?timeoutSeconds=`.
    pub fn timeout(&self) -> Result<Option<Duration>, ApiError> {
        Ok(self
            .number::<u64>("timeoutSeconds")?
            .map(Duration::from_secs))
    }

    /// `?includeObject=` of Table requests.
    pub fn include_object(&self) -> Result<IncludeObject, ApiError> {
        let v = self.get("includeObject").unwrap_or_default();
        IncludeObject::parse(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid includeObject {v:?}: want None, Metadata or Object"
            ))
        })
    }

    /// Options of list and watch.
    pub fn list_options(&self) -> Result<ListOptions, ApiError> {
        let non_empty = |k: &str| self.get(k).filter(|v| !v.is_empty()).map(str::to_string);
        let resource_version = non_empty("resourceVersion");
        if let Some(rv) = &resource_version {
            if rv.parse::<u64>().is_err() {
                return Err(ApiError::bad_request(format!(
                    "invalid resourceVersion {rv:?}: resource versions are non-negative integers"
                )));
            }
        }
        Ok(ListOptions {
            label_selector: non_empty("labelSelector"),
            field_selector: non_empty("fieldSelector"),
            limit: self.number("limit")?,
            continue_token: non_empty("continue"),
            resource_version,
            allow_bookmarks: self.flag("allowWatchBookmarks")?,
        })
    }

    /// Options of create, update and patch.
    pub fn write_options(
        &self,
        subresource: Option<Subresource>,
    ) -> Result<WriteOptions, ApiError> {
        let fv = self.get("fieldValidation").unwrap_or_default();
        let field_validation = FieldValidation::parse(fv).ok_or_else(|| {
            ApiError::bad_request(format!(
                "fieldValidation {fv:?} is invalid: valid values are Ignore, Warn and Strict"
            ))
        })?;
        Ok(WriteOptions {
            subresource,
            field_validation,
            dry_run: parse_dry_run(self.get("dryRun").unwrap_or_default())?,
            field_manager: self
                .get("fieldManager")
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            force: self.flag("force")?,
        })
    }

    /// Options of delete: the query parameters, overridden by a `DeleteOptions` body.
    pub fn delete_options(&self, body: Option<&Value>) -> Result<DeleteOptions, ApiError> {
        let propagation = |v: &str| {
            Propagation::parse(v).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "propagationPolicy {v:?} is invalid: valid values are Orphan, Background and Foreground"
                ))
            })
        };
        let mut opts = DeleteOptions {
            propagation: self
                .get("propagationPolicy")
                .filter(|v| !v.is_empty())
                .map(propagation)
                .transpose()?,
            grace_period_seconds: self.number("gracePeriodSeconds")?,
            dry_run: parse_dry_run(self.get("dryRun").unwrap_or_default())?,
            ..DeleteOptions::default()
        };
        if self.get("orphanDependents").is_some() && self.flag("orphanDependents")? {
            opts.propagation = Some(Propagation::Orphan);
        }
        let Some(body) = body else {
            return Ok(opts);
        };
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the DeleteOptions body must be a JSON object",
            ));
        }
        if let Some(kind) = body.get("kind").and_then(Value::as_str) {
            if kind != "DeleteOptions" {
                return Err(ApiError::bad_request(format!(
                    "expected a DeleteOptions body, got kind {kind:?}"
                )));
            }
        }
        if let Some(p) = body.get("propagationPolicy").filter(|v| !v.is_null()) {
            let s = p
                .as_str()
                .ok_or_else(|| ApiError::bad_request("propagationPolicy must be a string"))?;
            opts.propagation = Some(propagation(s)?);
        }
        if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            opts.propagation = Some(Propagation::Orphan);
        }
        if let Some(g) = body.get("gracePeriodSeconds").filter(|v| !v.is_null()) {
            opts.grace_period_seconds =
                Some(g.as_i64().ok_or_else(|| {
                    ApiError::bad_request("gracePeriodSeconds must be an integer")
                })?);
        }
        if let Some(pre) = body.get("preconditions") {
            opts.preconditions_rv = pre
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            opts.preconditions_uid = pre.get("uid").and_then(Value::as_str).map(str::to_string);
        }
        if let Some(dr) = body.get("dryRun").and_then(Value::as_array) {
            for v in dr {
                opts.dry_run |= parse_dry_run(v.as_str().unwrap_or("?"))?;
            }
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_options_from_kubectl_queries() {
        let p = Params::parse(Some("fieldSelector=metadata.name%3Dvm1&limit=500&resourceVersion=0&allowWatchBookmarks=true&watch=true"));
        let o = p.list_options().expect("ok");
        assert_eq!(o.field_selector.as_deref(), Some("metadata.name=vm1"));
        assert_eq!(o.limit, Some(500));
        assert_eq!(o.resource_version.as_deref(), Some("0"));
        assert!(o.allow_bookmarks);
        assert!(p.watch().expect("ok"));
        assert_eq!(
            Params::parse(Some("limit=x"))
                .list_options()
                .expect_err("bad")
                .code,
            400
        );
        assert_eq!(
            Params::parse(Some("resourceVersion=abc"))
                .list_options()
                .expect_err("bad")
                .code,
            400
        );
    }

    #[test]
    fn write_options() {
        let o = Params::parse(Some(
            "fieldManager=kubectl-create&fieldValidation=Strict&dryRun=All",
        ))
        .write_options(None)
        .expect("ok");
        assert_eq!(o.field_validation, FieldValidation::Strict);
        assert!(o.dry_run);
        assert_eq!(o.field_manager.as_deref(), Some("kubectl-create"));
        assert_eq!(
            Params::parse(Some("fieldValidation=Loud"))
                .write_options(None)
                .expect_err("bad")
                .code,
            400
        );
        assert_eq!(
            Params::parse(Some("dryRun=Some"))
                .write_options(None)
                .expect_err("bad")
                .code,
            400
        );
    }

    #[test]
    fn delete_options_body_wins() {
        let p = Params::parse(Some("propagationPolicy=Orphan"));
        let o = p
            .delete_options(Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground",
                "gracePeriodSeconds": 0, "preconditions": {"resourceVersion": "5", "uid": "u"}})))
            .expect("ok");
        assert_eq!(o.propagation, Some(Propagation::Foreground));
        assert_eq!(o.grace_period_seconds, Some(0));
        assert_eq!(o.preconditions_rv.as_deref(), Some("5"));
        assert_eq!(o.preconditions_uid.as_deref(), Some("u"));
        assert_eq!(
            p.delete_options(None).expect("ok").propagation,
            Some(Propagation::Orphan)
        );
        assert_eq!(
            p.delete_options(Some(&json!({"propagationPolicy": "Sideways"})))
                .expect_err("bad")
                .code,
            400
        );
    }
}
