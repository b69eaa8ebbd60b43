//! [`Unstructured`]: a JSON object kept exactly as sent, for the parts of KubeVirt's API that
//! monovirt accepts and stores but does not interpret (clock, hyperv features, GPUs, ...).
//!
//! Its schema is `type: object` with `x-kubernetes-preserve-unknown-fields: true`, as
//! KubeVirt's own CRDs do for free-form fields, so strict field validation accepts any
//! content below it.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// A JSON object stored and returned unchanged.
///
/// ```
/// let u: api::unstructured::Unstructured = serde_json::from_str(r#"{"utc":{}}"#).unwrap();
/// assert_eq!(serde_json::to_string(&u).unwrap(), r#"{"utc":{}}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Unstructured(pub Map<String, Value>);

impl JsonSchema for Unstructured {
    fn schema_name() -> Cow<'static, str> {
        "Unstructured".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}
