//! Validation of DataVolumes and of a VM's dataVolumeTemplates, following CDI's validating
//! webhook: one source, one of `pvc`/`storage`, a valid size, URLs that can be imported.

use super::datavolume::{DataVolume, DataVolumeSpec};
use crate::quantity;
use crate::status::Cause;
use crate::validation::{
    dns1123_subdomain, forbidden, invalid, invalid_label, not_supported, required, unless_one_of,
};
use serde_json::Value;

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Filesystem", "Block"];
const CONTENT_TYPES: &[&str] = &["kubevirt", "archive"];

/// Validates a DataVolume object (already known to match the schema).
///
/// ```
/// use serde_json::json;
/// let causes = api::cdi::validation::validate_dv(&json!({
///     "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": {"name": "dv"},
///     "spec": {"source": {"http": {"url": "ftp://x"}}, "storage": {}}}));
/// assert_eq!(causes[0].field, "spec.source.http.url");
/// ```
pub fn validate_dv(obj: &Value) -> Vec<Cause> {
    if obj.get("spec").is_none_or(Value::is_null) {
        return vec![Cause::required("spec")];
    }
    let dv: DataVolume = match crate::schema::decode(obj) {
        Ok(dv) => dv,
        Err(c) => return vec![c],
    };
    let mut causes = Vec::new();
    validate_dv_spec(&dv.spec, "spec", &mut causes);
    causes
}

/// Validates a DataVolume spec found at `base`.
pub fn validate_dv_spec(spec: &DataVolumeSpec, base: &str, causes: &mut Vec<Cause>) {
    match (&spec.source, &spec.source_ref) {
        (None, None) => causes.push(required(
            format!("{base}.source"),
            "Data volume should have either Source or SourceRef",
        )),
        (Some(_), Some(_)) => causes.push(forbidden(
            format!("{base}.source"),
            "Data volume should have either Source or SourceRef, not both",
        )),
        _ => {}
    }
    if let Some(r) = &spec.source_ref {
        if r.kind != "DataSource" {
            causes.push(not_supported(
                format!("{base}.sourceRef.kind"),
                &Value::from(r.kind.as_str()),
                &["DataSource"],
            ));
        }
        if r.name.is_empty() {
            causes.push(Cause::required(format!("{base}.sourceRef.name")));
        }
    }
    let mut is_clone = false;
    if let Some(src) = &spec.source {
        let p = format!("{base}.source");
        let kinds = src.kinds();
        match kinds.len() {
            0 => causes.push(required(p.clone(), "Missing Data volume source")),
            1 => {}
            _ => causes.push(forbidden(
                p.clone(),
                &format!("Multiple Data volume sources, found {}", kinds.join(", ")),
            )),
        }
        if let Some(http) = &src.http {
            let f = format!("{p}.http.url");
            if http.url.is_empty() {
                causes.push(Cause::required(f));
            } else if !(http.url.starts_with("http://") || http.url.starts_with("https://"))
                || http.url.len() <= "https://".len()
            {
                causes.push(invalid(
                    f,
                    &Value::from(http.url.as_str()),
                    "must be an http:// or https:// URL",
                ));
            }
            for (i, h) in http.extra_headers.iter().enumerate() {
                if !h.contains(':') {
                    causes.push(invalid(
                        format!("{p}.http.extraHeaders[{i}]"),
                        &Value::from(h.as_str()),
                        "must be a header of the form 'Name: value'",
                    ));
                }
            }
        }
        if let Some(reg) = &src.registry {
            let url = reg.url.as_deref().unwrap_or("");
            let stream = reg.image_stream.as_deref().unwrap_or("");
            match (url.is_empty(), stream.is_empty()) {
                (true, true) => causes.push(required(
                    format!("{p}.registry"),
                    "Source registry should have either url or imageStream",
                )),
                (false, false) => causes.push(forbidden(
                    format!("{p}.registry"),
                    "Source registry should have either url or imageStream, not both",
                )),
                (false, true) => {
                    if !(url.starts_with("docker://") || url.starts_with("oci-archive://")) {
                        causes.push(invalid(format!("{p}.registry.url"), &Value::from(url), "Illegal registry source URL scheme, must be docker:// or oci-archive://"));
                    }
                }
                (true, false) => {}
            }
            causes.extend(unless_one_of(
                format!("{p}.registry.pullMethod"),
                reg.pull_method.as_deref(),
                &["pod", "node"],
            ));
        }
        if let Some(pvc) = &src.pvc {
            is_clone = true;
            if pvc.name.is_empty() {
                causes.push(Cause::required(format!("{p}.pvc.name")));
            } else {
                for e in dns1123_subdomain(&pvc.name) {
                    causes.push(invalid(
                        format!("{p}.pvc.name"),
                        &Value::from(pvc.name.as_str()),
                        &e,
                    ));
                }
            }
            if pvc.namespace.is_empty() {
                causes.push(Cause::required(format!("{p}.pvc.namespace")));
            } else {
                causes.extend(invalid_label(format!("{p}.pvc.namespace"), &pvc.namespace));
            }
        }
    }
    if let Some(ct) = spec.content_type.as_deref().filter(|c| !c.is_empty()) {
        if !CONTENT_TYPES.contains(&ct) {
            causes.push(not_supported(
                format!("{base}.contentType"),
                &Value::from(ct),
                CONTENT_TYPES,
            ));
        } else if ct == "archive"
            && spec
                .source
                .as_ref()
                .is_some_and(|s| s.http.is_none() && s.upload.is_none())
        {
            causes.push(forbidden(
                format!("{base}.contentType"),
                "archive contentType is only supported for http and upload sources",
            ));
        }
    }
    match (&spec.pvc, &spec.storage) {
        (None, None) => causes.push(required(
            format!("{base}.storage"),
            "Missing Data volume PVC or Storage",
        )),
        (Some(_), Some(_)) => causes.push(forbidden(
            format!("{base}.pvc"),
            "Data volume should have either PVC or Storage, not both",
        )),
        (Some(pvc), None) => {
            let p = format!("{base}.pvc");
            check_modes(
                pvc.access_modes.as_deref().unwrap_or(&[]),
                pvc.volume_mode.as_deref(),
                &p,
                causes,
            );
            let size = pvc
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"));
            match size {
                None if !is_clone => causes.push(required(
                    format!("{p}.resources.requests.storage"),
                    "PVC size is missing",
                )),
                None => {}
                Some(q) => check_size(&q.0, format!("{p}.resources.requests.storage"), causes),
            }
            if pvc.access_modes.as_ref().is_none_or(Vec::is_empty) && !is_clone {
                causes.push(required(
                    format!("{p}.accessModes"),
                    "Required value: at least 1 access mode is required",
                ));
            }
        }
        (None, Some(st)) => {
            let p = format!("{base}.storage");
            check_modes(&st.access_modes, st.volume_mode.as_deref(), &p, causes);
            if let Some(q) = st
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
            {
                check_size(&q.0, format!("{p}.resources.requests.storage"), causes);
            }
        }
    }
}

fn check_modes(modes: &[String], volume_mode: Option<&str>, p: &str, causes: &mut Vec<Cause>) {
    for (i, m) in modes.iter().enumerate() {
        causes.extend(unless_one_of(
            format!("{p}.accessModes[{i}]"),
            Some(m),
            ACCESS_MODES,
        ));
    }
    causes.extend(unless_one_of(
        format!("{p}.volumeMode"),
        volume_mode,
        VOLUME_MODES,
    ));
}

fn check_size(q: &str, field: String, causes: &mut Vec<Cause>) {
    match quantity::parse(q) {
        Ok(p) if p.is_negative() || p.is_zero() => causes.push(invalid(
            field,
            &Value::from(q),
            "PVC size can't be equal or less than zero",
        )),
        Ok(_) => {}
        Err(e) => causes.push(invalid(field, &Value::from(q), &e.to_string())),
    }
}
