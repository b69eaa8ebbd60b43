//! Field validation shared by every kind: object names (DNS-1123 subdomains and labels),
//! label keys and values, `apiVersion`/`kind` checks, MAC addresses, and constructors for
//! [`Cause`]s worded the way kube-apiserver words them (`Invalid value: "x": ...`).

use crate::resource::{NameRule, ResourceDef};
use crate::status::{ApiError, Cause};
use serde_json::Value;

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// A `FieldValueInvalid` cause: `Invalid value: "<value>": <detail>`.
pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Cause {
    Cause::new(
        "FieldValueInvalid",
        field,
        format!("Invalid value: {}: {detail}", render(value)),
    )
}

/// A `FieldValueRequired` cause with a detail: `Required value: <detail>`.
pub fn required(field: impl Into<String>, detail: &str) -> Cause {
    if detail.is_empty() {
        Cause::required(field)
    } else {
        Cause::new(
            "FieldValueRequired",
            field,
            format!("Required value: {detail}"),
        )
    }
}

/// A `FieldValueDuplicate` cause: `Duplicate value: "<value>"`.
pub fn duplicate(field: impl Into<String>, value: &str) -> Cause {
    Cause::new(
        "FieldValueDuplicate",
        field,
        format!("Duplicate value: {}", render(&Value::from(value))),
    )
}

/// A `FieldValueNotSupported` cause: `Unsupported value: "x": supported values: "a", "b"`.
pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Cause {
    let list = supported
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    Cause::new(
        "FieldValueNotSupported",
        field,
        format!(
            "Unsupported value: {}: supported values: {list}",
            render(value)
        ),
    )
}

/// [`not_supported`] when `value` is set and is not one of `supported`: the check every
/// enumerated field (a bus, a cache mode, a pull policy) makes.
pub fn unless_one_of(
    field: impl Into<String>,
    value: Option<&str>,
    supported: &[&str],
) -> Option<Cause> {
    value
        .filter(|v| !supported.contains(v))
        .map(|v| not_supported(field, &Value::from(v), supported))
}

/// One [`invalid`] cause per DNS-1123 label rule `value` breaks: the check of a name
/// (a volume, a network, a namespace, a hostname).
pub fn invalid_label(field: impl Into<String>, value: &str) -> Vec<Cause> {
    let field = field.into();
    dns1123_label(value)
        .iter()
        .map(|e| invalid(field.clone(), &Value::from(value), e))
        .collect()
}

/// [`invalid`] when `value` is set and fails `ok`: the check of a string field with a
/// format (a path, a serial, a PCI address, a CIDR).
pub fn invalid_unless(
    field: impl Into<String>,
    value: Option<&str>,
    ok: impl FnOnce(&str) -> bool,
    detail: &str,
) -> Option<Cause> {
    value
        .filter(|v| !ok(v))
        .map(|v| invalid(field, &Value::from(v), detail))
}

/// A `FieldValueForbidden` cause: `Forbidden: <detail>`.
pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
    Cause::new("FieldValueForbidden", field, format!("Forbidden: {detail}"))
}

/// A value as kube-apiserver quotes it in messages: strings quoted, others as JSON.
fn render(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The problems with `name` as a DNS-1123 label (empty when it is one).
///
/// ```
/// assert!(api::validation::dns1123_label("my-vm").is_empty());
/// assert!(!api::validation::dns1123_label("My_VM").is_empty());
/// ```
pub fn dns1123_label(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > DNS1123_LABEL_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_label(name) {
        errs.push(format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{DNS1123_LABEL_FMT}')"
        ));
    }
    errs
}

/// The problems with `name` as a DNS-1123 subdomain (empty when it is one).
///
/// ```
/// assert!(api::validation::dns1123_subdomain("vm.example").is_empty());
/// assert!(!api::validation::dns1123_subdomain("-bad").is_empty());
/// ```
pub fn dns1123_subdomain(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if name.is_empty() || !name.split('.').all(is_label) {
        errs.push(format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*')"
        ));
    }
    errs
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= QUALIFIED_NAME_MAX
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// The problems with `key` as a label or annotation key (`[prefix/]name`).
pub fn qualified_name(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let mut errs = Vec::new();
    if let Some(p) = prefix {
        errs.extend(
            dns1123_subdomain(p)
                .into_iter()
                .map(|e| format!("prefix part {e}")),
        );
    }
    if name.contains('/') || !is_qualified_name_part(name) {
        errs.push("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with at most 63 characters".to_string());
    }
    errs
}

/// The problems with `value` as a label value.
pub fn label_value(value: &str) -> Vec<String> {
    if value.is_empty() {
        return Vec::new();
    }
    if value.len() > LABEL_VALUE_MAX || !is_qualified_name_part(value) {
        return vec!["a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?') with at most 63 characters".to_string()];
    }
    Vec::new()
}

/// Validates `metadata` of an object of kind `def`: the name (or generateName) by the
/// kind's [`NameRule`], the namespace, label keys and values, annotation keys and size.
/// The store calls this for every kind before the kind's own validation.
///
/// ```
/// use serde_json::json;
/// let def = api::resource::find_kind("kubevirt.io", "VirtualMachine").unwrap();
/// let causes = api::validation::validate_metadata(def, &json!({"metadata": {"name": "Bad_Name"}}));
/// assert_eq!(causes[0].field, "metadata.name");
/// ```
pub fn validate_metadata(def: &ResourceDef, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let generate_name = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let check = |s: &str| match def.name_rule() {
        NameRule::Dns1123Label => dns1123_label(s),
        NameRule::Dns1123Subdomain => dns1123_subdomain(s),
        NameRule::PathSegment => path_segment(s),
    };
    if name.is_empty() {
        if generate_name.is_empty() {
            causes.push(required(
                "metadata.name",
                "name or generateName is required",
            ));
        } else {
            // generateName gets a random suffix: check it as a prefix of a valid name.
            let probe = format!("{generate_name}x");
            for e in check(&probe) {
                causes.push(invalid(
                    "metadata.generateName",
                    &Value::from(generate_name),
                    &e,
                ));
            }
        }
    } else {
        for e in check(name) {
            causes.push(invalid("metadata.name", &Value::from(name), &e));
        }
    }
    // A namespace on a cluster-scoped object is cleared by the store, as kube-apiserver's
    // BeforeCreate does, rather than refused.
    if let Some(ns) = meta.get("namespace").and_then(Value::as_str) {
        if def.namespaced && !ns.is_empty() {
            causes.extend(invalid_label("metadata.namespace", ns));
        }
    }
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            for e in qualified_name(k) {
                causes.push(invalid("metadata.labels", &Value::from(k.as_str()), &e));
            }
            match v.as_str() {
                Some(s) => {
                    for e in label_value(s) {
                        causes.push(invalid(format!("metadata.labels.{k}"), v, &e));
                    }
                }
                None if v.is_null() => {}
                None => causes.push(invalid(
                    format!("metadata.labels.{k}"),
                    v,
                    "must be a string",
                )),
            }
        }
    }
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in annotations {
            for e in qualified_name(k) {
                causes.push(invalid(
                    "metadata.annotations",
                    &Value::from(k.as_str()),
                    &e,
                ));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > ANNOTATIONS_MAX_BYTES {
            causes.push(Cause::new(
                "FieldValueTooLong",
                "metadata.annotations",
                format!("Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes"),
            ));
        }
    }
    causes
}

/// The problems with `name` as a path segment name (Events and other loosely named kinds).
pub fn path_segment(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    if name.contains('/') || name.contains('%') {
        return vec!["may not contain '/' or '%'".to_string()];
    }
    Vec::new()
}

/// Checks that `obj`'s `apiVersion` and `kind` are those of `def`, as kube-apiserver does
/// before decoding a body (400 BadRequest otherwise).
///
/// ```
/// use serde_json::json;
/// let def = api::resource::find_kind("kubevirt.io", "VirtualMachine").unwrap();
/// assert!(api::validation::check_type_meta(def, &json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine"})).is_ok());
/// assert_eq!(api::validation::check_type_meta(def, &json!({"apiVersion": "v1", "kind": "Pod"})).unwrap_err().code, 400);
/// ```
#[allow(clippy::result_large_err)] // ApiError is the one error of the API machinery.
pub fn check_type_meta(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the request body",
        ));
    }
    if api_version.is_empty() {
        return Err(ApiError::bad_request(
            "Object 'apiVersion' is missing in the request body",
        ));
    }
    let want = def.api_version();
    if api_version != want || kind != def.kind {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({want})"
        ))
        .with_kind_mismatch(kind, def.kind));
    }
    Ok(())
}

trait KindMismatch {
    fn with_kind_mismatch(self, got: &str, want: &str) -> Self;
}

impl KindMismatch for ApiError {
    fn with_kind_mismatch(mut self, got: &str, want: &str) -> Self {
        if got != want {
            self.message =
                format!("the kind in the data ({got}) does not match the expected kind ({want})");
        }
        self
    }
}

/// Parses a 48-bit MAC address written `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`.
///
/// ```
/// assert_eq!(api::validation::parse_mac("de:ad:00:00:be:af"), Some([0xde, 0xad, 0, 0, 0xbe, 0xaf]));
/// assert_eq!(api::validation::parse_mac("de:ad:00:00:be"), None);
/// ```
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let sep = if s.contains(':') { ':' } else { '-' };
    let mut out = [0u8; 6];
    let mut parts = s.split(sep);
    for byte in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert!(dns1123_label("a").is_empty());
        assert!(dns1123_label("a-1").is_empty());
        assert!(!dns1123_label("a.b").is_empty());
        assert!(!dns1123_label(&"a".repeat(64)).is_empty());
        assert!(dns1123_subdomain("a.b-c.d").is_empty());
        assert!(!dns1123_subdomain("a..b").is_empty());
        assert!(!dns1123_subdomain("").is_empty());
        assert!(!dns1123_subdomain("UPPER").is_empty());
        assert!(!dns1123_subdomain(&"a".repeat(254)).is_empty());
    }

    #[test]
    fn label_keys_and_values() {
        assert!(qualified_name("kubevirt.io/domain").is_empty());
        assert!(qualified_name("app").is_empty());
        assert!(!qualified_name("Bad Prefix/x").is_empty());
        assert!(!qualified_name("a/b/c").is_empty());
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_x").is_empty());
        assert!(!label_value("-x").is_empty());
    }

    #[test]
    fn macs() {
        assert!(parse_mac("02-00-00-00-00-01").is_some());
        assert!(parse_mac("0g:00:00:00:00:01").is_none());
        assert!(parse_mac("02:00:00:00:00:01:02").is_none());
        assert!(parse_mac("").is_none());
    }

    #[test]
    fn messages_match_kube() {
        let c = invalid("metadata.name", &Value::from("X"), "bad");
        assert_eq!(c.message, "Invalid value: \"X\": bad");
        let c = not_supported(
            "spec.runStrategy",
            &Value::from("Sometimes"),
            &["Always", "Halted"],
        );
        assert_eq!(
            c.message,
            "Unsupported value: \"Sometimes\": supported values: \"Always\", \"Halted\""
        );
    }
    #[test]
    fn enumerated_fields() {
        let modes = &["none", "writethrough"];
        assert!(unless_one_of("spec.cache", None, modes).is_none());
        assert!(unless_one_of("spec.cache", Some("none"), modes).is_none());
        let c = unless_one_of("spec.cache", Some("unsafe"), modes).expect("not a mode");
        assert_eq!(c.field, "spec.cache");
        assert_eq!(c.reason, "FieldValueNotSupported");
        assert_eq!(
            c.message,
            "Unsupported value: \"unsafe\": supported values: \"none\", \"writethrough\""
        );
    }
}
