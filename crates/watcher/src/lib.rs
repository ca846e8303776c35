//! Kubernetes watches and the sync loop (work in progress).
