//! `debug status`: the kernel's IPVS table and the addresses on kube-ipvs0, as `ipvsadm -Ln`
//! prints them, or as JSON.

use std::net::IpAddr;

use ipvs::{Client, DummyLink, ErrorKind, Info, Table};
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::debug::write_addresses;
use crate::ipvsadm_format::{self, Columns, ListFormat};

/// Why `debug status` could not read the kernel's state.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The process may not read IPVS (reading needs `CAP_NET_ADMIN`, like writing).
    #[error("cannot read the kernel's IPVS table: permission denied; run as root or with CAP_NET_ADMIN")]
    PermissionDenied(#[source] ipvs::Error),
    /// The kernel has no IPVS.
    #[error("cannot read the kernel's IPVS table: this kernel has no IPVS (load the ip_vs module)")]
    IpvsUnavailable(#[source] ipvs::Error),
    /// Any other failure reading the table.
    #[error("cannot read the kernel's IPVS table")]
    Table(#[source] ipvs::Error),
    /// Reading the addresses of the dummy link failed.
    #[error("cannot read the addresses of link {link}")]
    Link {
        /// The link's name.
        link: String,
        /// The failure.
        #[source]
        source: ipvs::Error,
    },
}

impl StatusError {
    /// Sorts a failure to read IPVS by what the user can do about it.
    fn reading_ipvs(err: ipvs::Error) -> StatusError {
        match err.kind() {
            ErrorKind::PermissionDenied => StatusError::PermissionDenied(err),
            ErrorKind::IpvsUnavailable => StatusError::IpvsUnavailable(err),
            _ => StatusError::Table(err),
        }
    }
}

/// What `debug status` reads: everything it prints comes from here.
#[derive(Debug, Serialize)]
pub struct Status {
    /// IPVS version and connection table size.
    pub info: Info,
    /// Every virtual server with its real servers, in the kernel's dump order.
    pub table: Table,
    /// The dummy link and its addresses.
    pub link: LinkStatus,
}

/// The dummy link holding service addresses, as read.
#[derive(Debug, Serialize)]
pub struct LinkStatus {
    /// Its name.
    pub name: String,
    /// Its addresses, or `None` when the link does not exist.
    pub addresses: Option<Vec<IpAddr>>,
}

/// Reads the IPVS info and table, then the addresses on `link`.
pub async fn read(link: &str) -> Result<Status, StatusError> {
    let client = Client::connect().await.map_err(StatusError::reading_ipvs)?;
    let info = client.info().await.map_err(StatusError::reading_ipvs)?;
    let table = client.table().await.map_err(StatusError::reading_ipvs)?;
    let link_error = |source| StatusError::Link { link: link.to_string(), source };
    let addresses = match DummyLink::open(link).await.map_err(link_error)? {
        Some(dummy) => Some(dummy.addresses().await.map_err(link_error)?),
        None => None,
    };
    Ok(Status { info, table, link: LinkStatus { name: link.to_string(), addresses } })
}

/// What `debug status` prints for `status` with `args`: pure, so tests need no kernel.
pub fn render(status: &Status, args: &StatusArgs) -> Result<String, serde_json::Error> {
    if args.json {
        let mut json = serde_json::to_string_pretty(status)?;
        json.push('\n');
        return Ok(json);
    }
    let columns = match (args.counters.stats, args.counters.rate) {
        (true, _) => Columns::Stats,
        (_, true) => Columns::Rate,
        _ => Columns::Connections,
    };
    let format = ListFormat { columns, exact: args.exact };
    // The daemon will name each virtual server's Service here (issue 4); ipvsadm never does.
    let mut out = ipvsadm_format::listing(&status.table, Some(&status.info), format, &|_| Vec::new());
    if !args.numeric {
        out.push('\n');
        write_addresses(&mut out, &status.link.name, status.link.addresses.as_deref());
    }
    Ok(out)
}
