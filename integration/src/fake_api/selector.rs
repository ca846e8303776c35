//! Label and field selectors, parsed the way the API server parses `labelSelector` and
//! `fieldSelector` query parameters, and matched against stored objects.

use serde_json::Value;

use super::error::FakeApiError;

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelRequirement {
    /// `key`: the label is present.
    Exists(String),
    /// `!key`: the label is absent.
    Absent(String),
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: absent, or present with another value.
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`: absent, or present with none of the values.
    NotIn(String, Vec<String>),
}

/// A parsed `labelSelector`: every requirement must hold (comma means and).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Parses the selector syntax of the API server: `key`, `!key`, `key=value`, `key==value`,
    /// `key!=value`, `key in (a,b)`, `key notin (a,b)`, joined by commas. An empty string
    /// selects everything.
    pub fn parse(text: &str) -> Result<LabelSelector, FakeApiError> {
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(
                parse_term(term)
                    .ok_or_else(|| FakeApiError::BadSelector { selector: text.to_owned(), term: term.to_owned() })?,
            );
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether an object (its `metadata.labels`) satisfies every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|req| match req {
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::Absent(k) => label(k).is_none(),
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
        })
    }
}

/// Splits on commas that are not inside the parentheses of a set (`in (a,b)`).
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn parse_term(term: &str) -> Option<LabelRequirement> {
    if let Some(key) = term.strip_prefix('!') {
        return valid_key(key.trim()).map(LabelRequirement::Absent);
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Some(LabelRequirement::NotEquals(valid_key(key.trim())?, value.trim().to_owned()));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Some(LabelRequirement::Equals(valid_key(key.trim())?, value.trim().to_owned()));
    }
    if let Some(open) = term.find('(') {
        let (head, set) = term.split_at(open);
        let values = set.strip_prefix('(')?.strip_suffix(')')?;
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
        let mut words = head.split_whitespace();
        let (key, op) = (valid_key(words.next()?)?, words.next()?);
        if words.next().is_some() {
            return None;
        }
        return match op {
            "in" => Some(LabelRequirement::In(key, values)),
            "notin" => Some(LabelRequirement::NotIn(key, values)),
            _ => None,
        };
    }
    valid_key(term).map(LabelRequirement::Exists)
}

/// A label key is a non-empty run without spaces or selector operators.
fn valid_key(key: &str) -> Option<String> {
    let bad = |c: char| c.is_whitespace() || "!=(),".contains(c);
    (!key.is_empty() && !key.contains(bad)).then(|| key.to_owned())
}

/// A parsed `fieldSelector`. The fields the API server supports on every kind are
/// `metadata.name` and `metadata.namespace`, with `=`, `==` and `!=`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<(Field, bool, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

impl FieldSelector {
    /// Parses `metadata.name=x,metadata.namespace!=y`. Other fields are refused, as the API
    /// server refuses fields it does not index.
    pub fn parse(text: &str) -> Result<FieldSelector, FakeApiError> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let bad = || FakeApiError::BadSelector { selector: text.to_owned(), term: term.to_owned() };
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(bad());
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                _ => return Err(bad()),
            };
            requirements.push((field, equal, value.trim().to_owned()));
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether an object's metadata satisfies every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(field, equal, value)| {
            let pointer = match field {
                Field::Name => "/metadata/name",
                Field::Namespace => "/metadata/namespace",
            };
            let actual = object.pointer(pointer).and_then(Value::as_str).unwrap_or("");
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(labels: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "prod", "labels": labels}})
    }

    #[test]
    fn label_selectors_match_like_the_api_server() {
        let proxy = "service.kubernetes.io/service-proxy-name";
        let daemon = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
        let cases: &[(&str, Value, bool)] = &[
            ("", json!({}), true),
            (daemon, json!({"app": "web"}), true),
            (daemon, json!({proxy: "other"}), false),
            (daemon, json!({"service.kubernetes.io/headless": ""}), false),
            ("app", json!({"app": "web"}), true),
            ("app", json!({}), false),
            ("app=web", json!({"app": "web"}), true),
            ("app==web", json!({"app": "db"}), false),
            ("app!=web", json!({}), true),
            ("app!=web", json!({"app": "web"}), false),
            ("app in (db, web)", json!({"app": "web"}), true),
            ("app in (db,cache)", json!({"app": "web"}), false),
            ("app notin (db,cache),tier", json!({"app": "web", "tier": "1"}), true),
            ("app notin (web)", json!({"app": "web"}), false),
            ("app=web, tier=1", json!({"app": "web", "tier": "2"}), false),
        ];
        for (selector, labels, expected) in cases {
            let parsed = LabelSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(&object(labels.clone())), *expected, "{selector} on {labels}");
        }
        assert!(LabelSelector::default().matches(&json!({"metadata": {}})));
    }

    #[test]
    fn malformed_label_selectors_are_refused() {
        for selector in ["app in web", "!", "a b", "app in (x", "=web", "app nope (x)"] {
            assert!(LabelSelector::parse(selector).is_err(), "{selector} was accepted");
        }
    }

    #[test]
    fn field_selectors_match_name_and_namespace() {
        let cases: &[(&str, bool)] = &[
            ("metadata.name=web", true),
            ("metadata.name==db", false),
            ("metadata.name!=db", true),
            ("metadata.namespace=prod,metadata.name=web", true),
            ("metadata.namespace=dev", false),
            ("", true),
        ];
        for (selector, expected) in cases {
            let parsed = FieldSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(&object(json!({}))), *expected, "{selector}");
        }
        assert!(FieldSelector::parse("spec.nodeName=x").is_err());
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
