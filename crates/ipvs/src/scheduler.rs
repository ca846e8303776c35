//! A virtual server's scheduler name, held without an allocation of its own when it is one of
//! the kernel's: a table holds tens of thousands of virtual servers, nearly all on one scheduler.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use serde::{Deserialize, Serialize};

/// The schedulers the kernel ships (its `ip_vs_<name>` modules).
pub const KNOWN_SCHEDULERS: &[&str] =
    &["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"];

/// A scheduler name (`rr`, `wrr`, `mh`, ...). Any name is kept as given (a table read back may
/// name someone else's module); compared, ordered, hashed and printed as its text.
#[derive(Clone)]
pub struct Scheduler(Name);

#[derive(Clone)]
enum Name {
    Known(&'static str),
    Other(Box<str>),
}

impl Scheduler {
    /// The scheduler called `name`.
    pub fn new(name: &str) -> Scheduler {
        match KNOWN_SCHEDULERS.iter().find(|known| **known == name) {
            Some(known) => Scheduler(Name::Known(known)),
            None => Scheduler(Name::Other(name.into())),
        }
    }

    /// Its name.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Name::Known(name) => name,
            Name::Other(name) => name,
        }
    }
}

impl Deref for Scheduler {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Scheduler {
    fn from(name: &str) -> Scheduler {
        Scheduler::new(name)
    }
}

impl From<String> for Scheduler {
    fn from(name: String) -> Scheduler {
        Scheduler::new(&name)
    }
}

impl From<&String> for Scheduler {
    fn from(name: &String) -> Scheduler {
        Scheduler::new(name)
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Scheduler {
    fn eq(&self, other: &Scheduler) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Scheduler {}

impl PartialEq<str> for Scheduler {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Scheduler {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for Scheduler {
    fn partial_cmp(&self, other: &Scheduler) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduler {
    fn cmp(&self, other: &Scheduler) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Scheduler {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// As its name.
impl Serialize for Scheduler {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scheduler {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Scheduler, D::Error> {
        String::deserialize(deserializer).map(Scheduler::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_schedulers_need_no_allocation_and_others_are_kept() {
        for name in KNOWN_SCHEDULERS {
            assert!(matches!(Scheduler::new(name).0, Name::Known(_)), "{name}");
        }
        let theirs = Scheduler::new("my-sched");
        assert!(matches!(theirs.0, Name::Other(_)));
        assert_eq!(theirs, "my-sched");
        assert_eq!(theirs.to_string(), "my-sched");
        assert_eq!(Scheduler::new(""), "");
        // Compared by name whichever way it is held.
        assert_eq!(Scheduler(Name::Other("rr".into())), Scheduler::new("rr"));
        assert!(Scheduler::new("lc") < Scheduler::new("rr"));
        let json = serde_json::to_string(&Scheduler::new("wrr")).unwrap();
        assert_eq!(json, "\"wrr\"");
        assert_eq!(serde_json::from_str::<Scheduler>("\"x\"").unwrap(), "x");
    }
}
