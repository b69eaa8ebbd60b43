//! OpenAPI v3 schemas generated from the typed structs (with `schemars`), and the two walks
//! over an object that the API machinery derives from them, so the served schema is the one
//! source of truth:
//!
//! - [`unknown_fields`]: paths the schema does not know (`spec.foo`), for `fieldValidation`.
//! - [`type_errors`]: values of the wrong JSON type or outside an enum, as 422 causes.
//!
//! Schemas are fully inlined (like a CRD's `openAPIV3Schema`), so one kind's schema is one
//! self-contained JSON value.

use crate::status::Cause;
use crate::validation;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// The schema of `T` as an OpenAPI v3 `components.schemas` entry for `group/version, kind`,
/// with `x-kubernetes-group-version-kind` as a list (what `kubectl explain` looks up).
///
/// ```
/// use api::kubevirt::virtualmachine::VirtualMachine;
/// let s = api::schema::generate::<VirtualMachine>("kubevirt.io", "v1", "VirtualMachine");
/// assert_eq!(s["x-kubernetes-group-version-kind"][0]["kind"], "VirtualMachine");
/// assert_eq!(s["properties"]["spec"]["properties"]["runStrategy"]["type"], "string");
/// ```
pub fn generate<T: JsonSchema>(group: &str, version: &str, kind: &str) -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    tidy(&mut schema);
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("title");
        obj.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": group, "version": version, "kind": kind}]),
        );
    }
    schema
}

/// Removes what schemars adds that Kubernetes schemas do not carry (`nullable`, `default`, integer `format`s other than int32/int64), so the schema reads like a CRD's.
fn tidy(v: &mut Value) {
    let Value::Object(o) = v else {
        return;
    };
    collapse_nullable(o);
    if let Some(Value::String(d)) = o.get_mut("description") {
        *d = unwrap_lines(d);
    }
    collapse_enum_variants(o);
    o.remove("nullable");
    // schemars records `Default` values (`""`, `{}`), which are not API defaults.
    o.remove("default");
    if let Some(f) = o.get("format").and_then(Value::as_str) {
        if matches!(
            f,
            "uint" | "uint8" | "uint16" | "uint32" | "uint64" | "int" | "int8" | "int16"
        ) {
            let wide = matches!(f, "uint32" | "uint64" | "uint");
            o.insert(
                "format".into(),
                Value::from(if wide { "int64" } else { "int32" }),
            );
        }
    }
    // Recurse only into subschemas, never treating a `properties` map as a schema (a field
    // may well be called `default` or `format`).
    if let Some(Value::Object(props)) = o.get_mut("properties") {
        props.values_mut().for_each(tidy);
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(sub) = o.get_mut(key) {
            tidy(sub);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = o.get_mut(key) {
            list.iter_mut().for_each(tidy);
        }
    }
}

/// `anyOf: [X, {enum: [null]}]` (an `Option` of a non-object) becomes `X`, keeping the
/// outer description.
fn collapse_nullable(o: &mut Map<String, Value>) {
    let Some(Value::Array(alts)) = o.get("anyOf") else {
        return;
    };
    let is_null = |a: &Value| {
        a.get("type") == Some(&Value::from("null")) || a.get("enum") == Some(&json!([null]))
    };
    let rest: Vec<&Value> = alts.iter().filter(|a| !is_null(a)).collect();
    if rest.len() != 1 || alts.len() != 2 {
        return;
    }
    let Value::Object(inner) = rest[0].clone() else {
        return;
    };
    o.remove("anyOf");
    for (k, v) in inner {
        if k == "description" && o.contains_key("description") {
            continue;
        }
        o.insert(k, v);
    }
}

/// `oneOf` of single-value string enums (a Rust enum with documented variants) becomes one
/// string enum, with the variants' docs listed in the description as kube-openapi does.
fn collapse_enum_variants(o: &mut Map<String, Value>) {
    let Some(Value::Array(alts)) = o.get("oneOf") else {
        return;
    };
    let mut values = Vec::new();
    let mut docs = Vec::new();
    for a in alts {
        match a.get("enum").and_then(Value::as_array).map(Vec::as_slice) {
            Some([Value::String(v)]) => {
                values.push(Value::from(v.as_str()));
                if let Some(d) = a.get("description").and_then(Value::as_str) {
                    docs.push(format!(" - `\"{v}\"` {}", unwrap_lines(d)));
                }
            }
            _ => return,
        }
    }
    o.remove("oneOf");
    o.insert("type".into(), Value::from("string"));
    o.insert("enum".into(), Value::Array(values));
    if !docs.is_empty() {
        let base = o
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let text = format!("{base}\n\nPossible enum values:\n{}", docs.join("\n"));
        o.insert(
            "description".into(),
            Value::from(text.trim_start().to_string()),
        );
    }
}

/// Joins the lines of a doc comment paragraph; keeps paragraph breaks.
fn unwrap_lines(d: &str) -> String {
    d.split("\n\n")
        .map(|para| para.lines().map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Joins a field path the way Kubernetes prints it: `spec.template`, `disks[0]`.
fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Whether the schema lets any field through below it.
fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The schema alternatives of `anyOf`/`oneOf`/`allOf` (schemars uses them for some enums
/// and for flattened types), or the schema itself.
fn alternatives(schema: &Value) -> Vec<&Value> {
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            return list.iter().collect();
        }
    }
    vec![schema]
}

/// The paths in `obj` that `schema` does not describe, e.g. `spec.foo` or
/// `spec.template.spec.domain.devices.disks[0].bogus`. Everything under a field marked
/// `x-kubernetes-preserve-unknown-fields` is accepted.
///
/// ```
/// use serde_json::json;
/// let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}}});
/// let unknown = api::schema::unknown_fields(&schema, &json!({"spec": {"a": "x", "foo": 1}}));
/// assert_eq!(unknown, vec!["spec.foo".to_string()]);
/// ```
pub fn unknown_fields(schema: &Value, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_unknown(schema, obj, "", &mut out);
    out
}

fn walk_unknown(schema: &Value, obj: &Value, path: &str, out: &mut Vec<String>) {
    if preserves_unknown(schema) {
        return;
    }
    match obj {
        Value::Object(map) => {
            let alts = alternatives(schema);
            let mut props: Vec<&Map<String, Value>> = Vec::new();
            let mut additional: Option<&Value> = None;
            let mut open = false;
            for alt in &alts {
                if preserves_unknown(alt) {
                    return;
                }
                if let Some(p) = alt.get("properties").and_then(Value::as_object) {
                    props.push(p);
                }
                match alt.get("additionalProperties") {
                    Some(Value::Bool(true)) => open = true,
                    Some(a @ Value::Object(_)) => additional = Some(a),
                    _ => {}
                }
                if alt.get("properties").is_none() && alt.get("additionalProperties").is_none() {
                    // A schema without structure (Quantity, Time, or an opaque object such as
                    // managedFields' fieldsV1): nothing to check below.
                    open = true;
                }
            }
            for (k, v) in map {
                let p = child(path, k);
                if let Some(s) = props.iter().find_map(|p| p.get(k)) {
                    walk_unknown(s, v, &p, out);
                } else if let Some(a) = additional {
                    walk_unknown(a, v, &p, out);
                } else if !open {
                    out.push(p);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk_unknown(item_schema, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// The JSON type name of a value, as Kubernetes' schema validation names it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Values whose JSON type or enum membership contradicts `schema`, one cause per field,
/// worded like kube-apiserver's schema validation
/// (`spec.running: Invalid value: "string": spec.running in body must be of type boolean: "string"`).
/// Nulls are accepted everywhere (they mean "unset").
///
/// ```
/// use serde_json::json;
/// let schema = json!({"type": "object", "properties": {"running": {"type": "boolean"}}});
/// let causes = api::schema::type_errors(&schema, &json!({"running": "yes"}));
/// assert_eq!(causes[0].field, "running");
/// ```
pub fn type_errors(schema: &Value, obj: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    walk_types(schema, obj, "", &mut out);
    out
}

fn walk_types(schema: &Value, obj: &Value, path: &str, out: &mut Vec<Cause>) {
    if obj.is_null() {
        return;
    }
    let alts = alternatives(schema);
    if alts.len() > 1 {
        // Pick the first alternative the value satisfies; report against the first otherwise.
        let mut best: Option<Vec<Cause>> = None;
        for alt in &alts {
            let mut errs = Vec::new();
            walk_types(alt, obj, path, &mut errs);
            if errs.is_empty() {
                return;
            }
            best.get_or_insert(errs);
        }
        out.extend(best.unwrap_or_default());
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if int_or_string {
        if !matches!(type_name(obj), "integer" | "string") {
            out.push(validation::invalid(
                path,
                &Value::from(type_name(obj)),
                &format!(
                    "{path} in body must be of type int-or-string: {:?}",
                    type_name(obj)
                ),
            ));
        }
        return;
    }
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let got = type_name(obj);
        let ok = want == got || (want == "number" && got == "integer");
        if !ok {
            out.push(validation::invalid(
                path,
                &Value::from(got),
                &format!("{path} in body must be of type {want}: {got:?}"),
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(obj) {
            let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
            out.push(validation::not_supported(path, obj, &names));
            return;
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), obj.as_f64()) {
        if n < min {
            out.push(validation::invalid(
                path,
                obj,
                &format!("{path} in body should be greater than or equal to {min}"),
            ));
        }
    }
    match obj {
        Value::Object(map) => {
            if preserves_unknown(schema) && schema.get("properties").is_none() {
                return;
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                let p = child(path, k);
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    walk_types(s, v, &p, out);
                } else if let Some(a) = additional {
                    walk_types(a, v, &p, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk_types(item_schema, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Decodes `obj` into `T`, turning a decoding error into one cause at the failing field path.
pub fn decode<T: serde::de::DeserializeOwned>(obj: &Value) -> Result<T, Cause> {
    serde_path_to_error::deserialize::<_, T>(obj).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        let inner = e.into_inner().to_string();
        Cause::new(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {inner}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preserve_unknown_fields_is_honoured() {
        let schema = json!({"type": "object", "properties": {
            "clock": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        }});
        let obj = json!({"clock": {"utc": {}, "x": 1}, "labels": {"a": "b"},
                          "items": [{"name": "a"}, {"name": "b", "bogus": true}], "top": 1});
        let mut unknown = unknown_fields(&schema, &obj);
        unknown.sort();
        assert_eq!(unknown, vec!["items[1].bogus", "top"]);
    }

    #[test]
    fn decode_errors_name_the_field() {
        use crate::kubevirt::virtualmachineinstance::VirtualMachineInstance;
        let obj = json!({"spec": {"domain": {"cpu": {"cores": 5_000_000_000u64}},
                                  "volumes": [{"name": "a"}, {"name": 7}]}});
        let err = decode::<VirtualMachineInstance>(&obj).expect_err("out of range");
        assert!(
            ["spec.domain.cpu.cores", "spec.volumes[1].name"].contains(&err.field.as_str()),
            "{}",
            err.field
        );
        let def =
            crate::resource::find_kind("kubevirt.io", "VirtualMachineInstance").expect("served");
        assert_eq!(
            type_errors(&(def.schema)(), &obj)[0].field,
            "spec.volumes[1].name"
        );
    }

    #[test]
    fn opaque_objects_are_open() {
        let def = crate::resource::find_kind("", "Node").expect("served");
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n",
            "managedFields": [{"manager": "agent", "operation": "Update", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:status": {"f:conditions": {}}}}]}});
        assert!((def.unknown_fields)(&node).is_empty());
    }

    #[test]
    fn types_and_enums() {
        let schema = json!({"type": "object", "properties": {
            "n": {"type": "integer", "minimum": 0.0},
            "s": {"type": "string", "enum": ["A", "B"]},
            "q": {"x-kubernetes-int-or-string": true},
            "l": {"type": "array", "items": {"type": "string"}},
        }});
        let causes = type_errors(
            &schema,
            &json!({"n": -1, "s": "C", "q": true, "l": ["a", 1]}),
        );
        let mut fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(fields, vec!["l[1]", "n", "q", "s"]);
        let s = causes.iter().find(|c| c.field == "s").expect("enum cause");
        assert_eq!(s.reason, "FieldValueNotSupported");
        assert!(type_errors(&schema, &json!({"n": 3, "s": "A", "q": "1Gi", "l": []})).is_empty());
        assert!(type_errors(&schema, &json!({"n": null})).is_empty());
    }
}
