//! Label and field selectors (`labelSelector=` / `fieldSelector=`), parsed once per request
//! and matched against stored objects as Kubernetes' `labels.Parse` and `fields.Parse` do.

use serde_json::Value;

/// Why a selector does not parse; the apiserver answers 400 BadRequest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unable to parse requirement: {0}")]
    Label(String),
    #[error("invalid field selector: {0}")]
    Field(String),
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Exists,
    NotExists,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Greater(i64),
    Less(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
    });
    name_ok && prefix_ok
}

fn valid_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Label(format!("{whole}: expected a set in parentheses")))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if let Some(bad) = values.iter().find(|v| !valid_value(v)) {
        return Err(SelectorError::Label(format!(
            "{whole}: invalid label value: {bad:?}"
        )));
    }
    Ok(values)
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k,l>3`. Empty selects everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { requirements });
        }
        for part in split_top(s) {
            let part = part.trim();
            let bad = |why: &str| SelectorError::Label(format!("{part}: {why}"));
            if part.is_empty() {
                return Err(bad("empty requirement"));
            }
            let (key, op) = if let Some(k) = part.strip_prefix('!') {
                (k.trim().to_string(), Op::NotExists)
            } else if let Some((k, v)) = part.split_once("!=") {
                (k.trim().to_string(), Op::NotEquals(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once("==") {
                (k.trim().to_string(), Op::Equals(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once('=') {
                (k.trim().to_string(), Op::Equals(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once('>') {
                let n = v.trim().parse().map_err(|_| bad("expected an integer"))?;
                (k.trim().to_string(), Op::Greater(n))
            } else if let Some((k, v)) = part.split_once('<') {
                let n = v.trim().parse().map_err(|_| bad("expected an integer"))?;
                (k.trim().to_string(), Op::Less(n))
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                (k.trim().to_string(), Op::NotIn(parse_set(rest, part)?))
            } else if let Some((k, rest)) = part.split_once(" in ") {
                (k.trim().to_string(), Op::In(parse_set(rest, part)?))
            } else {
                (part.to_string(), Op::Exists)
            };
            if !valid_key(&key) {
                return Err(bad("invalid label key"));
            }
            if let Op::Equals(v) | Op::NotEquals(v) = &op {
                if !valid_value(v) {
                    return Err(bad("invalid label value"));
                }
            }
            requirements.push(Requirement { key, op });
        }
        Ok(Self { requirements })
    }

    /// True when the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        self.requirements.iter().all(|r| {
            let value = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            match &r.op {
                Op::Exists => value.is_some(),
                Op::NotExists => value.is_none(),
                Op::Equals(v) => value == Some(v.as_str()),
                Op::NotEquals(v) => value != Some(v.as_str()),
                Op::In(set) => value.is_some_and(|x| set.iter().any(|s| s == x)),
                Op::NotIn(set) => value.is_none_or(|x| !set.iter().any(|s| s == x)),
                Op::Greater(n) => value
                    .and_then(|x| x.parse::<i64>().ok())
                    .is_some_and(|x| x > *n),
                Op::Less(n) => value
                    .and_then(|x| x.parse::<i64>().ok())
                    .is_some_and(|x| x < *n),
            }
        })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`, comma-joined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

/// The fields every kind can be selected on, plus those of its own (`status.phase` etc.).
fn supported(kind: &str, field: &str) -> bool {
    matches!(
        field,
        "metadata.name"
            | "metadata.namespace"
            | "status.phase"
            | "status.nodeName"
            | "spec.nodeName"
    ) || (kind == "Event"
        && (field.starts_with("involvedObject.")
            || matches!(field, "reason" | "type" | "source" | "reportingComponent")))
}

fn field_value(obj: &Value, field: &str) -> String {
    let mut cur = obj;
    for part in field.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl FieldSelector {
    /// Parses a field selector for objects of `kind`.
    pub fn parse(s: &str, kind: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { requirements });
        }
        for part in s.split(',') {
            let part = part.trim();
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError::Field(format!(
                    "{part}: expected an operator"
                )));
            };
            let field = field.trim();
            if !supported(kind, field) {
                return Err(SelectorError::UnsupportedField(field.to_string()));
            }
            requirements.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(Self { requirements })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements
            .iter()
            .all(|(field, eq, value)| (field_value(obj, field) == *value) == *eq)
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The name an equality on `metadata.name` pins, if any (lets a list read one key).
    pub fn pinned_name(&self) -> Option<&str> {
        self.requirements
            .iter()
            .find(|(f, eq, _)| f == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "vm1", "namespace": "default", "labels": labels},
               "status": {"phase": "Running", "nodeName": "n1"}})
    }

    #[test]
    fn label_operators() {
        let o = obj(json!({"app": "web", "tier": "front", "n": "5"}));
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "missing!=x",
            "app in (web,db)",
            "app notin (db)",
            "missing notin (x)",
            "app",
            "!missing",
            "app=web,tier=front",
            "n>3",
            "n<7",
            "example.com/x notin (a)",
        ];
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "app notin (web, db)",
            "missing",
            "!app",
            "missing in (x)",
            "app=web,tier=back",
            "n>5",
        ];
        for s in yes {
            assert!(
                LabelSelector::parse(s).expect(s).matches(&o),
                "{s} should match"
            );
        }
        for s in no {
            assert!(
                !LabelSelector::parse(s).expect(s).matches(&o),
                "{s} should not match"
            );
        }
        // Objects without labels.
        let bare = json!({"metadata": {"name": "x"}});
        assert!(LabelSelector::parse("!app").expect("parses").matches(&bare));
        assert!(!LabelSelector::parse("app").expect("parses").matches(&bare));
    }

    #[test]
    fn label_syntax_errors() {
        for s in ["a=b,", "a in b", "Bad Key=x", "a=b c", "a>x", "a in (b c)"] {
            assert!(LabelSelector::parse(s).is_err(), "{s} should not parse");
        }
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let m = |s: &str| {
            FieldSelector::parse(s, "VirtualMachineInstance")
                .expect(s)
                .matches(&o)
        };
        assert!(m("metadata.name=vm1"));
        assert!(m("metadata.name==vm1,metadata.namespace=default"));
        assert!(m("status.phase!=Pending"));
        assert!(m("status.nodeName=n1"));
        assert!(m("spec.nodeName="));
        assert!(!m("metadata.name=vm2"));
        assert!(!m("status.phase=Running,status.nodeName!=n1"));
        assert_eq!(
            FieldSelector::parse("spec.running=true", "VirtualMachine"),
            Err(SelectorError::UnsupportedField("spec.running".into()))
        );
        assert!(FieldSelector::parse("metadata.name", "Node").is_err());
        let ev = json!({"involvedObject": {"name": "vm1", "kind": "VirtualMachine"}});
        let sel = FieldSelector::parse(
            "involvedObject.name=vm1,involvedObject.kind=VirtualMachine",
            "Event",
        )
        .expect("parses");
        assert!(sel.matches(&ev));
        assert_eq!(
            FieldSelector::parse("metadata.name=a", "Node")
                .expect("parses")
                .pinned_name(),
            Some("a")
        );
    }
}
