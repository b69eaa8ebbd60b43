//! The resource registry: every kind monovirt serves, with what the generic API machinery
//! needs to know of it (names, scope, printer columns, defaulting, validation, schema).
//! The apiserver, the store's object layer and discovery are driven from [`resources`].

use crate::status::Cause;
use serde_json::Value;

/// A printer column (KubeVirt's CRD `additionalPrinterColumns`), rendered into a Table.
#[derive(Debug, Clone, Copy)]
pub struct PrinterColumn {
    pub name: &'static str,
    /// `string`, `integer`, `date`, `boolean`.
    pub type_: &'static str,
    /// `name` for the Name column, otherwise usually empty.
    pub format: &'static str,
    pub description: &'static str,
    /// 0 = shown by default, >0 = only with `-o wide`.
    pub priority: u32,
    /// A simple JSONPath such as `.status.printableStatus` or `.metadata.creationTimestamp`.
    pub json_path: &'static str,
}

/// One served resource (a GroupVersionResource and its kind).
#[derive(Debug, Clone, Copy)]
pub struct ResourceDef {
    /// API group, `""` for core.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    /// The plural, lower case: `virtualmachines`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    /// Whether `/status` is a subresource (then the main resource ignores status changes).
    pub has_status: bool,
    /// The verbs discovery lists.
    pub verbs: &'static [&'static str],
    pub columns: &'static [PrinterColumn],
    /// Applies the kind's defaults in place (as a mutating admission would).
    pub default: fn(&mut Value),
    /// Decodes into the typed struct and checks semantics; one cause per bad field.
    pub validate: fn(&Value) -> Vec<Cause>,
    /// Paths of fields the schema does not know (`spec.foo`), for `fieldValidation`.
    pub unknown_fields: fn(&Value) -> Vec<String>,
    /// The OpenAPI v3 schema of the kind (`components.schemas` entry).
    pub schema: fn() -> Value,
}

impl ResourceDef {
    /// `kubevirt.io/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}
