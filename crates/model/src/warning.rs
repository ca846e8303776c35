//! Warnings about input the model could not use.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an object, or a field of it, was left out of the desired state.
///
/// `object` names it the way `kubectl` would (`Service default/web`, `EndpointSlice
/// default/web-abc12`); `reason` says what was wrong and what was done about it. A warning about a
/// whole object means the object is treated as absent; other objects are never affected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Warning {
    /// The object concerned, kind and `namespace/name`.
    pub object: String,
    /// What was wrong and what the model did.
    pub reason: String,
}

impl Warning {
    pub(crate) fn new(object: impl Into<String>, reason: impl Into<String>) -> Warning {
        Warning { object: object.into(), reason: reason.into() }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.reason)
    }
}
