//! The resource registry: every kind monovirt serves, with what the generic API machinery
//! needs to know of it (names, scope, printer columns, defaulting, validation, schema).
//! The apiserver, the store's object layer and discovery are driven from [`resources`].

use crate::status::Cause;
use serde_json::Value;

pub use crate::registry::resources;

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

impl PrinterColumn {
    /// A column read from the object with a JSONPath (a CRD `additionalPrinterColumn`).
    pub const fn path(
        name: &'static str,
        type_: &'static str,
        json_path: &'static str,
        description: &'static str,
        priority: u32,
    ) -> Self {
        Self {
            name,
            type_,
            format: "",
            description,
            priority,
            json_path,
        }
    }

    /// The `Age` column (`.metadata.creationTimestamp`, shown as a duration).
    pub const AGE: PrinterColumn = PrinterColumn::path(
        "Age",
        "date",
        ".metadata.creationTimestamp",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        0,
    );
}

/// Which names a kind accepts in `metadata.name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain (most kinds).
    Dns1123Subdomain,
    /// A DNS-1123 label (Namespace).
    Dns1123Label,
    /// Any name usable as a path segment (Event).
    PathSegment,
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
    /// A kind stored as it comes: no defaults, no semantic checks, no unknown fields, an
    /// empty schema, no verbs or columns, and no names. The base of kinds that exercise the
    /// store and the server without a real kind's rules (unit tests, benchmarks), named
    /// with struct update syntax: `ResourceDef { kind: "…", …, ..ResourceDef::OPAQUE }`.
    pub const OPAQUE: ResourceDef = ResourceDef {
        group: "",
        version: "v1",
        kind: "",
        list_kind: "",
        plural: "",
        singular: "",
        short_names: &[],
        categories: &[],
        namespaced: true,
        has_status: false,
        verbs: &[],
        columns: &[],
        default: opaque::no_defaults,
        validate: opaque::no_causes,
        unknown_fields: opaque::no_unknown_fields,
        schema: opaque::empty_schema,
    };

    /// `kubevirt.io/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Which names `metadata.name` accepts: DNS-1123 labels for Namespaces, path segments
    /// for Events, DNS-1123 subdomains for everything else (as kube-apiserver).
    pub fn name_rule(&self) -> NameRule {
        match (self.group, self.kind) {
            ("", "Namespace") => NameRule::Dns1123Label,
            ("", "Event") => NameRule::PathSegment,
            _ => NameRule::Dns1123Subdomain,
        }
    }

    /// The `components.schemas` key of the kind, as kube-apiserver names it:
    /// `io.kubevirt.v1.VirtualMachine`, `io.k8s.api.core.v1.Node`,
    /// `io.k8s.api.storage.v1.StorageClass`.
    ///
    /// ```
    /// let def = api::resource::find_kind("cdi.kubevirt.io", "DataVolume").unwrap();
    /// assert_eq!(def.schema_name(), "io.kubevirt.cdi.v1beta1.DataVolume");
    /// ```
    pub fn schema_name(&self) -> String {
        let prefix = if self.group.is_empty() {
            "io.k8s.api.core".to_string()
        } else if let Some(g) = self.group.strip_suffix(".k8s.io") {
            format!("io.k8s.api.{g}")
        } else {
            self.group.split('.').rev().collect::<Vec<_>>().join(".")
        };
        format!("{prefix}.{}.{}", self.version, self.kind)
    }

    /// The resource path of a collection: `/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines`
    /// (`ns` ignored for cluster-scoped kinds, and `None` means all namespaces).
    pub fn collection_path(&self, ns: Option<&str>) -> String {
        let root = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match ns {
            Some(ns) if self.namespaced => format!("{root}/namespaces/{ns}/{}", self.plural),
            _ => format!("{root}/{}", self.plural),
        }
    }

    /// The `List` kind's `apiVersion`/`kind` pair, e.g. (`kubevirt.io/v1`, `VirtualMachineList`).
    pub fn list_type(&self) -> (String, &'static str) {
        (self.api_version(), self.list_kind)
    }
}

/// The resource served at `group/version/plural`.
///
/// ```
/// let def = api::resource::find("kubevirt.io", "v1", "virtualmachines").unwrap();
/// assert_eq!(def.kind, "VirtualMachine");
/// ```
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    resources()
        .iter()
        .find(|d| d.group == group && d.version == version && d.plural == plural)
}

/// The resource of `kind` in `group` (any version).
///
/// ```
/// assert_eq!(api::resource::find_kind("", "Namespace").unwrap().plural, "namespaces");
/// ```
pub fn find_kind(group: &str, kind: &str) -> Option<&'static ResourceDef> {
    resources()
        .iter()
        .find(|d| d.group == group && d.kind == kind)
}

/// The resource of an object's `apiVersion` and `kind`.
///
/// ```
/// let def = api::resource::find_api_version_kind("cdi.kubevirt.io/v1beta1", "DataVolume").unwrap();
/// assert_eq!(def.plural, "datavolumes");
/// ```
pub fn find_api_version_kind(api_version: &str, kind: &str) -> Option<&'static ResourceDef> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    resources()
        .iter()
        .find(|d| d.group == group && d.version == version && d.kind == kind)
}

/// The resource a name on the command line means: a plural, singular, short name or kind
/// (case-insensitive), as kubectl resolves `vm`, `vmis`, `pvc`, `ns`.
///
/// ```
/// assert_eq!(api::resource::find_name("vmi").unwrap().kind, "VirtualMachineInstance");
/// assert_eq!(api::resource::find_name("VirtualMachine").unwrap().plural, "virtualmachines");
/// ```
pub fn find_name(name: &str) -> Option<&'static ResourceDef> {
    let n = name.to_ascii_lowercase();
    let all = resources();
    all.iter()
        .find(|d| d.plural == n)
        .or_else(|| all.iter().find(|d| d.singular == n))
        .or_else(|| all.iter().find(|d| d.short_names.contains(&n.as_str())))
        .or_else(|| all.iter().find(|d| d.kind.eq_ignore_ascii_case(&n)))
}

/// The hooks of [`ResourceDef::OPAQUE`].
mod opaque {
    use crate::status::Cause;
    use serde_json::{json, Value};

    pub fn no_defaults(_: &mut Value) {}

    pub fn no_causes(_: &Value) -> Vec<Cause> {
        Vec::new()
    }

    pub fn no_unknown_fields(_: &Value) -> Vec<String> {
        Vec::new()
    }

    pub fn empty_schema() -> Value {
        json!({})
    }
}
