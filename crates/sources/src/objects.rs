//! Kubernetes objects from YAML files: the input of standalone mode (`run --from-file`) and of
//! `debug render`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

use crate::cluster::NOT_PROXIED_LABELS;
use crate::yaml;

/// Why a YAML text could not be read as objects. Each variant names the document at fault.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// A document is not YAML.
    #[error("document {index}: not YAML: {message}")]
    Yaml {
        /// 1-based position of the document in the file.
        index: usize,
        /// The parser's message.
        message: String,
    },
    /// A document of a known kind does not match that kind's schema.
    #[error("document {index} ({kind} {name}): {message}")]
    Object {
        /// 1-based position of the document in the file.
        index: usize,
        /// Its `kind`.
        kind: String,
        /// Its `metadata.name`, or `(unnamed)`.
        name: String,
        /// What does not match.
        message: String,
    },
}

/// The objects of a file, in file order, and what was skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Objects {
    /// `v1` Services.
    pub services: Vec<Service>,
    /// `discovery.k8s.io/v1` EndpointSlices.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// `v1` Nodes.
    pub nodes: Vec<Node>,
    /// `kind namespace/name` of every document of another kind (they are ignored).
    pub skipped: Vec<String>,
}

impl Objects {
    /// Parses multi-document YAML (`---`-separated), also unpacking `kind: List` documents as
    /// `kubectl get -o yaml` prints them. Empty documents are ignored; other kinds are listed
    /// in [`Objects::skipped`]. Objects without `metadata.resourceVersion` get one derived from
    /// their content, so that re-reading an unchanged file changes nothing downstream.
    pub fn parse(text: &str) -> Result<Objects, ObjectsError> {
        let mut objects = Objects::default();
        each_object(text, |object| match object {
            Object::Service(o) => objects.services.push(o),
            Object::EndpointSlice(o) => objects.endpoint_slices.push(o),
            Object::Node(o) => objects.nodes.push(o),
            Object::Skipped(what) => objects.skipped.push(what),
        })?;
        Ok(objects)
    }
}

/// One object of a file, as [`each_object`] hands them out.
// Each is moved once to its consumer; boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A `v1` Service.
    Service(Service),
    /// A `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// A `v1` Node.
    Node(Node),
    /// `kind namespace/name` of a document of another kind.
    Skipped(String),
}

/// [`Objects::parse`] one object at a time, so that a large file never has all its objects in
/// memory at once. On an error, `f` has seen the objects before the faulty document.
pub fn each_object(text: &str, mut f: impl FnMut(Object)) -> Result<(), ObjectsError> {
    yaml::each_document(
        text,
        |index, value: Value| add(index, value, &mut f),
        |index, e| ObjectsError::Yaml { index, message: e.to_string() },
    )
}

fn add(index: usize, value: Value, f: &mut impl FnMut(Object)) -> Result<(), ObjectsError> {
    if value.is_null() {
        return Ok(());
    }
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    let name =
        value.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("(unnamed)").to_string();
    let bad = |message: String| ObjectsError::Object { index, kind: kind.clone(), name: name.clone(), message };
    let labels = value.get("metadata").and_then(|m| m.get("labels"));
    let not_proxied = NOT_PROXIED_LABELS.into_iter().find(|l| labels.and_then(|m| m.get(l)).is_some());
    match (api_version.as_str(), kind.as_str()) {
        // The cluster watches' selection, applied here too: another proxy's Services, headless
        // Services' slices.
        ("v1", "Service") | ("discovery.k8s.io/v1", "EndpointSlice") if let Some(label) = not_proxied => {
            let namespace = value.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str);
            f(Object::Skipped(format!("{api_version} {kind} {}/{name} (label {label})", namespace.unwrap_or(""))));
        }
        ("v1", "Service") => f(Object::Service(with_version(decode(value).map_err(bad)?))),
        ("discovery.k8s.io/v1", "EndpointSlice") => f(Object::EndpointSlice(with_version(decode(value).map_err(bad)?))),
        ("v1", "Node") => f(Object::Node(with_version(decode(value).map_err(bad)?))),
        (_, "List") => {
            if let Some(Value::Array(items)) = value.get("items") {
                for item in items.clone() {
                    add(index, item, f)?;
                }
            }
        }
        _ => {
            let namespace = value.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str);
            let kind = if kind.is_empty() { "(no kind)" } else { kind.as_str() };
            f(Object::Skipped(match namespace {
                Some(ns) => format!("{api_version} {kind} {ns}/{name}"),
                None => format!("{api_version} {kind} {name}"),
            }));
        }
    }
    Ok(())
}

/// Decodes one object; a mismatch names the field at fault (`spec.ports[0].port: invalid
/// type: ...`), which serde alone does not do for an already parsed document.
fn decode<K: serde::de::DeserializeOwned>(value: Value) -> Result<K, String> {
    serde_path_to_error::deserialize(value).map_err(|e| match e.path().to_string().as_str() {
        "." => e.inner().to_string(),
        path => format!("{path}: {}", e.inner()),
    })
}

/// Fills a missing resourceVersion with a hash of the object, so that the relist tracker sees
/// an unchanged object as unchanged.
fn with_version<K: kube::Resource + serde::Serialize>(mut obj: K) -> K {
    if obj.meta().resource_version.is_none() {
        let mut hasher = DefaultHasher::new();
        // Serialising a k8s-openapi object cannot fail; an empty text only weakens the hash.
        serde_json::to_string(&obj).unwrap_or_default().hash(&mut hasher);
        obj.meta_mut().resource_version = Some(format!("content-{:016x}", hasher.finish()));
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    const FILE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.244.1.5]
  conditions: {ready: true}
  nodeName: node-a
ports: [{name: http, port: 8080, protocol: TCP}]
---
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata: {name: node-a}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: x, namespace: kube-system}
"#;

    #[test]
    fn reads_each_kind_and_skips_others() {
        let objects = Objects::parse(FILE).unwrap();
        assert_eq!(objects.services.len(), 1);
        assert_eq!(objects.services[0].name_any(), "web");
        assert_eq!(objects.endpoint_slices.len(), 1);
        assert_eq!(objects.endpoint_slices[0].endpoints[0].addresses, vec!["10.244.1.5".to_string()]);
        assert_eq!(objects.nodes.len(), 1);
        assert_eq!(objects.skipped, vec!["v1 ConfigMap kube-system/x".to_string()]);
    }

    #[test]
    fn content_versions_follow_content() {
        let a = Objects::parse(FILE).unwrap();
        let b = Objects::parse(FILE).unwrap();
        let c = Objects::parse(&FILE.replace("10.96.0.10", "10.96.0.11")).unwrap();
        assert_eq!(a.services[0].resource_version(), b.services[0].resource_version());
        assert_ne!(a.services[0].resource_version(), c.services[0].resource_version());
        assert_eq!(a.endpoint_slices[0].resource_version(), c.endpoint_slices[0].resource_version());
    }

    /// The watches' label selection holds for files too: another proxy's Service and a headless
    /// Service's slice are skipped, named with the label; the rest is read.
    #[test]
    fn objects_the_watches_would_not_list_are_skipped() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: ns, labels: \
                    {service.kubernetes.io/service-proxy-name: cilium}}\nspec: {clusterIP: 10.96.0.1}\n\
                    ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: hl-1, namespace: ns, \
                    labels: {service.kubernetes.io/headless: '', kubernetes.io/service-name: hl}}\naddressType: IPv4\n\
                    endpoints: []\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: ns, \
                    labels: {app: web}}\nspec: {clusterIP: 10.96.0.2}\n";
        let objects = Objects::parse(text).unwrap();
        let names: Vec<String> = objects.services.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["web"]);
        assert!(objects.endpoint_slices.is_empty());
        assert_eq!(
            objects.skipped,
            [
                "v1 Service ns/other (label service.kubernetes.io/service-proxy-name)",
                "discovery.k8s.io/v1 EndpointSlice ns/hl-1 (label service.kubernetes.io/headless)"
            ]
        );
    }

    #[test]
    fn errors_name_the_document() {
        let cases: &[(&str, &str)] = &[
            ("a: [1\n", "document 1"),
            (
                "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: 7}\n",
                "document 1 (Service s): spec.ports: ",
            ),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: http}]}\n",
                "document 1 (Service s): spec.ports[0].port: invalid type",
            ),
            (
                "apiVersion: v1\nkind: Node\nmetadata: {name: n}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\nendpoints: 5\n",
                "document 2 (EndpointSlice e)",
            ),
        ];
        for (text, want) in cases {
            let err = Objects::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should name {want}");
        }
    }
}
