//! The service-state model (work in progress).
