//! Matching labels against the selector shapes of scheduling constraints: node selector
//! terms (`In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`, as kube-scheduler's
//! `nodeaffinity` plugin) and label selectors (`matchLabels`, `matchExpressions`).

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use std::collections::BTreeMap;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

fn values(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or(&[])
}

/// Whether `labels` satisfy one node selector requirement. An unknown operator and a `Gt`/`Lt`
/// value that is not an integer match nothing.
pub fn node_requirement_matches(req: &NodeSelectorRequirement, labels: &Labels) -> bool {
    let value = labels.get(&req.key);
    let vals = values(&req.values);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| vals.contains(v)),
        "NotIn" => value.is_none_or(|v| !vals.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, vals) else {
                return false;
            };
            let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node with `labels` and `name` satisfies a node selector term: every expression
/// and every field requirement (`metadata.name` is the only field) holds. A term with no
/// requirements matches nothing, as in Kubernetes.
pub fn node_term_matches(term: &NodeSelectorTerm, name: &str, labels: &Labels) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let name_labels: Labels = [("metadata.name".to_string(), name.to_string())].into();
    exprs.iter().all(|r| node_requirement_matches(r, labels))
        && fields.iter().all(|r| {
            r.key == "metadata.name"
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && node_requirement_matches(r, &name_labels)
        })
}

fn label_requirement_matches(req: &LabelSelectorRequirement, labels: &Labels) -> bool {
    let value = labels.get(&req.key);
    let vals = values(&req.values);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| vals.contains(v)),
        "NotIn" => value.is_none_or(|v| !vals.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

/// Whether `labels` match a label selector. An empty selector matches everything.
pub fn label_selector_matches(sel: &LabelSelector, labels: &Labels) -> bool {
    sel.match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel
            .match_expressions
            .iter()
            .flatten()
            .all(|r| label_requirement_matches(r, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: &str, vals: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(vals.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn node_operators() {
        let l = labels(&[("zone", "a"), ("cores", "8")]);
        assert!(node_requirement_matches(
            &req("zone", "In", &["a", "b"]),
            &l
        ));
        assert!(!node_requirement_matches(&req("zone", "In", &["b"]), &l));
        assert!(node_requirement_matches(&req("zone", "NotIn", &["b"]), &l));
        assert!(node_requirement_matches(&req("rack", "NotIn", &["b"]), &l));
        assert!(!node_requirement_matches(&req("zone", "NotIn", &["a"]), &l));
        assert!(node_requirement_matches(&req("zone", "Exists", &[]), &l));
        assert!(!node_requirement_matches(&req("rack", "Exists", &[]), &l));
        assert!(node_requirement_matches(
            &req("rack", "DoesNotExist", &[]),
            &l
        ));
        assert!(node_requirement_matches(&req("cores", "Gt", &["4"]), &l));
        assert!(!node_requirement_matches(&req("cores", "Gt", &["8"]), &l));
        assert!(node_requirement_matches(&req("cores", "Lt", &["9"]), &l));
        assert!(!node_requirement_matches(&req("zone", "Lt", &["9"]), &l));
        assert!(!node_requirement_matches(&req("zone", "Like", &["a"]), &l));
    }

    #[test]
    fn terms_and_fields() {
        let l = labels(&[("zone", "a")]);
        let term = NodeSelectorTerm {
            match_expressions: Some(vec![req("zone", "In", &["a"])]),
            match_fields: Some(vec![req("metadata.name", "In", &["n1"])]),
        };
        assert!(node_term_matches(&term, "n1", &l));
        assert!(!node_term_matches(&term, "n2", &l));
        assert!(!node_term_matches(&NodeSelectorTerm::default(), "n1", &l));
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "db"), ("tier", "x")]);
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "db".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["y".into()]),
            }]),
        };
        assert!(label_selector_matches(&sel, &l));
        assert!(!label_selector_matches(&sel, &labels(&[("app", "web")])));
        assert!(label_selector_matches(&LabelSelector::default(), &l));
    }
}
