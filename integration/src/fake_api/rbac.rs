//! RBAC as the API server's authorizer applies it to one client: the rules of ClusterRoles,
//! matched on (API group, resource, verb) with `*` wildcards. Tests load the daemon's own
//! `manifests/rbac.yaml`, so a request the manifests do not grant fails as on a real cluster.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use serde_json::Value;

use super::error::FakeApiError;
use super::shared::parse_documents;

/// What the client is allowed: the union of the rules of some ClusterRoles.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    rules: Vec<PolicyRule>,
}

impl Grants {
    /// The rules of every `ClusterRole` in a multi-document YAML text; other kinds are ignored.
    pub fn from_yaml(text: &str) -> Result<Grants, FakeApiError> {
        let mut rules = Vec::new();
        for (index, document) in parse_documents(text)?.into_iter().enumerate() {
            if document.get("kind").and_then(Value::as_str) != Some("ClusterRole") {
                continue;
            }
            let role: ClusterRole = serde_json::from_value(document)
                .map_err(|e| FakeApiError::BadDocument { index, reason: e.to_string() })?;
            rules.extend(role.rules.unwrap_or_default());
        }
        Ok(Grants { rules })
    }

    /// Whether some rule grants `verb` on `resource` of API `group` (`""` for the core group).
    pub fn allows(&self, group: &str, resource: &str, verb: &str) -> bool {
        let has = |list: &[String], want: &str| list.iter().any(|item| item == "*" || item == want);
        self.rules.iter().any(|rule| {
            has(rule.api_groups.as_deref().unwrap_or_default(), group)
                && has(rule.resources.as_deref().unwrap_or_default(), resource)
                && has(&rule.verbs, verb)
        })
    }
}

/// The RBAC verb of a request, as the API server names it.
pub(crate) fn verb(method: &axum::http::Method, named: bool, watching: bool) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET | Method::HEAD if watching => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_groups_resources_and_verbs_with_wildcards() {
        let grants = Grants::from_yaml(
            "kind: ServiceAccount\nmetadata: {name: a}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules:\n\
             - apiGroups: [\"\"]\n  resources: [services]\n  verbs: [list, watch]\n\
             - apiGroups: [\"events.k8s.io\"]\n  resources: [\"*\"]\n  verbs: [create]\n",
        )
        .unwrap();
        let cases = [
            ("", "services", "list", true),
            ("", "services", "watch", true),
            ("", "services", "get", false),
            ("", "nodes", "list", false),
            ("discovery.k8s.io", "services", "list", false),
            ("events.k8s.io", "events", "create", true),
            ("events.k8s.io", "events", "patch", false),
        ];
        for (group, resource, verb, want) in cases {
            assert_eq!(grants.allows(group, resource, verb), want, "{verb} {group}/{resource}");
        }
    }
}
