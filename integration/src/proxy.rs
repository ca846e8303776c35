//! Finding the `kube-ipvs-proxy` binary the tests drive.

use std::path::PathBuf;

/// The `kube-ipvs-proxy` binary: `$KIP_PROXY_BIN` when set (integration/test sets it), else
/// the one cargo built in the same target directory as the running test binary
/// (`target/<profile>/deps/<test>` -> `target/<profile>/kube-ipvs-proxy`). Cargo offers no
/// `CARGO_BIN_EXE_*` across packages, hence the lookup. The path may not exist; callers report it.
pub fn proxy_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KIP_PROXY_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).map(PathBuf::from).unwrap_or_default();
    profile_dir.join("kube-ipvs-proxy")
}
