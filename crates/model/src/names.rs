//! Names of the Kubernetes objects the desired state comes from.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A Service's `namespace/name`.
///
/// One shared allocation: a clone (each virtual server, slice and record of a Service holds
/// one) costs a reference count, not two strings. Ordered by namespace, then name.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// `namespace/name` (a namespace holds no `/`).
    text: Arc<str>,
    /// Where the name starts in `text`.
    name_at: u32,
}

impl ServiceKey {
    /// The key of Service `namespace/name`.
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> ServiceKey {
        let (namespace, name) = (namespace.as_ref(), name.as_ref());
        let name_at = u32::try_from(namespace.len() + 1).unwrap_or(u32::MAX);
        ServiceKey { text: format!("{namespace}/{name}").into(), name_at }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        self.text.get(..(self.name_at as usize).saturating_sub(1)).unwrap_or_default()
    }

    /// The name.
    pub fn name(&self) -> &str {
        self.text.get(self.name_at as usize..).unwrap_or_default()
    }
}

impl Ord for ServiceKey {
    fn cmp(&self, other: &ServiceKey) -> std::cmp::Ordering {
        (self.namespace(), self.name()).cmp(&(other.namespace(), other.name()))
    }
}

impl PartialOrd for ServiceKey {
    fn partial_cmp(&self, other: &ServiceKey) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceKey").field("namespace", &self.namespace()).field("name", &self.name()).finish()
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// As `{namespace, name}`, the shape it always had.
#[derive(Serialize, Deserialize)]
struct ServiceKeyFields<'a> {
    #[serde(borrow)]
    namespace: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
}

impl Serialize for ServiceKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ServiceKeyFields { namespace: self.namespace().into(), name: self.name().into() }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ServiceKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ServiceKey, D::Error> {
        let fields = ServiceKeyFields::deserialize(deserializer)?;
        Ok(ServiceKey::new(fields.namespace, fields.name))
    }
}

/// One port of a Service, by the port's name (`""` for a single unnamed port), as upstream's
/// `ServicePortName` names it (without the protocol: a name is unique within a Service).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServicePortRef {
    /// The Service.
    pub service: ServiceKey,
    /// The port's name, possibly empty.
    pub port_name: String,
}

impl fmt::Display for ServicePortRef {
    /// `namespace/name:port` as upstream logs it (`namespace/name` for an unnamed port).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port_name.is_empty() {
            write!(f, "{}", self.service)
        } else {
            write!(f, "{}:{}", self.service, self.port_name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_orders_by_namespace_then_name_and_serializes_as_its_two_fields() {
        let (a, b) = (ServiceKey::new("a", "z"), ServiceKey::new("a-b", "a"));
        // As (namespace, name): "a" < "a-b", though "a/z" > "a-b/a" as text.
        assert!(a < b);
        assert_eq!((a.namespace(), a.name(), a.to_string()), ("a", "z", "a/z".to_string()));
        assert_eq!(ServiceKey::new("", "x").namespace(), "");
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, r#"{"namespace":"a-b","name":"a"}"#);
        assert_eq!(serde_json::from_str::<ServiceKey>(&json).unwrap(), b);
        let clone = b.clone();
        assert!(Arc::ptr_eq(&clone.text, &b.text), "a clone shares the key's allocation");
    }
}
