//! The record of the virtual servers this proxy made on addresses it does not bind (node
//! addresses: NodePorts, and externalIPs or load balancer IPs that are node addresses). In the
//! kernel they look exactly like an operator's own, so after a restart only this record says
//! which are this proxy's to delete. It belongs under `/run`, which lives exactly as long as the
//! kernel's IPVS table: both are gone after a reboot.

use std::io;
use std::path::{Path, PathBuf};

use ipvs::VirtualServerId;

/// The record's file name inside its directory.
const FILE: &str = "virtual-servers.json";

/// A record that could not be read or written, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// Reading, writing or renaming the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file holds something else than a list of virtual servers.
    #[error("{path}: not a list of virtual servers: {source}")]
    Format {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The ownership record in one directory (the daemon's is `/run/kube-ipvs-proxy`).
#[derive(Debug, Clone)]
pub struct OwnershipRecord {
    path: PathBuf,
}

impl OwnershipRecord {
    /// The record kept in `dir`.
    pub fn in_dir(dir: impl AsRef<Path>) -> OwnershipRecord {
        OwnershipRecord { path: dir.as_ref().join(FILE) }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded virtual servers; none when there is no record yet (a first start, or a
    /// reboot since the last one).
    pub fn read(&self) -> Result<Vec<VirtualServerId>, OwnershipError> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(self.io(source)),
        };
        serde_json::from_slice(&text)
            .map_err(|source| OwnershipError::Format { path: self.path.display().to_string(), source })
    }

    /// Replaces the record with `ids`, atomically (a new file renamed over the old one), making
    /// the directory if needed.
    pub fn write<'a>(&self, ids: impl IntoIterator<Item = &'a VirtualServerId>) -> Result<(), OwnershipError> {
        let ids: Vec<&VirtualServerId> = ids.into_iter().collect();
        let text = serde_json::to_vec(&ids)
            .map_err(|source| OwnershipError::Format { path: self.path.display().to_string(), source })?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let new = self.path.with_extension("json.new");
        std::fs::write(&new, text).map_err(|e| self.io(e))?;
        std::fs::rename(&new, &self.path).map_err(|e| self.io(e))
    }

    fn io(&self, source: io::Error) -> OwnershipError {
        OwnershipError::Io { path: self.path.display().to_string(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_missing_one_is_empty() {
        let dir = std::env::temp_dir().join(format!("kip-ownership-{}", std::process::id()));
        let record = OwnershipRecord::in_dir(dir.join("nested"));
        assert_eq!(record.read().unwrap(), Vec::new(), "no file: nothing recorded");
        let ids = [
            VirtualServerId::Tuple {
                protocol: ipvs::Protocol::Tcp,
                addr: "192.168.0.10".parse().unwrap(),
                port: 30080,
            },
            VirtualServerId::Tuple { protocol: ipvs::Protocol::Udp, addr: "fd00::10".parse().unwrap(), port: 30053 },
        ];
        record.write(&ids).unwrap();
        assert_eq!(record.read().unwrap(), ids);
        std::fs::write(record.path(), "{not json").unwrap();
        assert!(record.read().unwrap_err().to_string().contains("not a list of virtual servers"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
