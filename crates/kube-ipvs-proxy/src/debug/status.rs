//! `debug status`: the kernel's IPVS table and the addresses on kube-ipvs0, as `ipvsadm -Ln`
//! prints them, or as JSON.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipvs::{Client, DummyLink, ErrorKind, Info, Table, VirtualServerId};
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::debug::{daemon, write_addresses};
use ipvs::listing::{self, ListFormat};
use serve::VirtualServerOrigin;

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
    /// Which Service port each virtual server serves, as a running daemon said; `None` when no
    /// daemon was asked or none answered.
    pub origins: Option<Vec<VirtualServerOrigin>>,
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
    Ok(Status { info, table, link: LinkStatus { name: link.to_string(), addresses }, origins: None })
}

/// Asks the daemon at `addr` which Service each virtual server serves. Not finding a daemon is
/// normal (logged at debug level); a daemon answering badly is worth a warning. Either way the
/// status is printed without the names.
pub async fn ask_daemon(addr: SocketAddr) -> Option<Vec<VirtualServerOrigin>> {
    match daemon::origins(addr, DAEMON_TIMEOUT).await {
        Ok(origins) => Some(origins),
        Err(err) if err.is_unreachable() => {
            tracing::debug!("not naming Services: {err}");
            None
        }
        Err(err) => {
            tracing::warn!("not naming Services: {err}");
            None
        }
    }
}

/// How long a local daemon has to answer: it serves the list from memory.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(2);

/// What `debug status` prints for `status` with `args`: pure, so tests need no kernel.
pub fn render(status: &Status, args: &StatusArgs) -> Result<String, serde_json::Error> {
    if args.json {
        let mut json = serde_json::to_string_pretty(status)?;
        json.push('\n');
        return Ok(json);
    }
    let format = ListFormat { columns: args.counters.columns(), exact: args.exact, nosort: args.nosort };
    // ipvsadm never names Services, so --numeric prints no comment lines.
    let comments = match (&status.origins, args.numeric) {
        (Some(origins), false) => daemon::comments_by_virtual_server(origins),
        _ => HashMap::new(),
    };
    let comment_lines = |id: &VirtualServerId| comments.get(id.to_string().as_str()).cloned().unwrap_or_default();
    let mut out = listing::listing(&status.table, Some(&status.info), format, &comment_lines);
    if !args.numeric {
        out.push('\n');
        write_addresses(&mut out, &status.link.name, status.link.addresses.as_deref());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use ipvs::{RealServer, RealServerEntry, Stats, VirtualServer, VirtualServerEntry};

    use super::*;
    use crate::cli::{Cli, Command, DebugCommand};

    fn args(flags: &[&str]) -> StatusArgs {
        let argv = ["kube-ipvs-proxy", "debug", "status"].iter().chain(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Debug(DebugCommand::Status(args)) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn status(addresses: Option<Vec<IpAddr>>) -> Status {
        let id =
            VirtualServerId::Tuple { protocol: ipvs::Protocol::Tcp, addr: "10.96.0.10".parse().unwrap(), port: 80 };
        let mut real = RealServerEntry {
            server: RealServer::new("10.244.1.5".parse().unwrap(), 8080, 1),
            connections: Default::default(),
            stats: Stats::default(),
        };
        real.stats.conns = 250_000_000;
        let service = VirtualServerEntry { server: VirtualServer::new(id, "rr"), stats: Stats::default() };
        Status {
            info: Info { version: 0x0001_0201, conn_table_size: 4096 },
            table: Table { services: vec![(service, vec![real])] },
            link: LinkStatus { name: "kube-ipvs0".to_string(), addresses },
            origins: None,
        }
    }

    const LISTING: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
        Prot LocalAddress:Port Scheduler Flags\n  \
        -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
        TCP  10.96.0.10:80 rr\n  \
        -> 10.244.1.5:8080              Masq    1      0          0         \n";

    #[test]
    fn each_flag_prints_its_view() {
        let two = Some(vec!["fd00::10".parse().unwrap(), "10.96.0.10".parse().unwrap()]);
        type Case = (&'static [&'static str], Option<Vec<IpAddr>>, String);
        let cases: Vec<Case> = vec![
            (&["--numeric"], two.clone(), LISTING.to_string()),
            (&[], two.clone(), format!("{LISTING}\nkube-ipvs0 addresses (2):\n  10.96.0.10\n  fd00::10\n")),
            (&["-n"], None, LISTING.to_string()),
            (&[], None, format!("{LISTING}\nkube-ipvs0: no such link\n")),
        ];
        for (flags, addresses, expected) in cases {
            assert_eq!(render(&status(addresses), &args(flags)).unwrap(), expected, "flags {flags:?}");
        }
    }

    /// With the daemon's list, each virtual server it knows is followed by its Service; ipvsadm's
    /// own view (--numeric) never shows them.
    #[test]
    fn services_named_by_the_daemon_follow_their_virtual_server() {
        let mut state = status(Some(vec![]));
        let origin = |vs: &str| VirtualServerOrigin {
            virtual_server: vs.to_string(),
            service: "default/web".to_string(),
            port: "http".to_string(),
        };
        state.origins = Some(vec![origin("TCP 10.96.0.10:80"), origin("TCP 10.96.0.99:80")]);
        let named = "TCP  10.96.0.10:80 rr\n#  service default/web:http\n  -> 10.244.1.5:8080 ";
        assert!(render(&state, &args(&[])).unwrap().contains(named));
        assert_eq!(render(&state, &args(&["--numeric"])).unwrap(), LISTING);
        assert!(render(&state, &args(&["--stats"])).unwrap().contains("\n#  service default/web:http\n"));
    }

    #[test]
    fn daemon_flags() {
        assert_eq!(args(&[]).daemon_address(), Some("127.0.0.1:10249".parse().unwrap()));
        assert_eq!(args(&["--daemon", "[::1]:9999"]).daemon_address(), Some("[::1]:9999".parse().unwrap()));
        assert_eq!(args(&["--no-daemon"]).daemon_address(), None);
    }

    #[test]
    fn counters_flags_pick_the_columns() {
        let stats = render(&status(None), &args(&["--numeric", "--stats"])).unwrap();
        assert!(stats.contains("Conns   InPkts") && stats.contains("  250000K"), "{stats}");
        let exact = render(&status(None), &args(&["--numeric", "--stats", "--exact"])).unwrap();
        assert!(exact.contains(" 250000000"), "{exact}");
        let rate = render(&status(None), &args(&["--numeric", "--rate"])).unwrap();
        assert!(rate.contains("CPS    InPPS"), "{rate}");
        assert!(Cli::try_parse_from(["kube-ipvs-proxy", "debug", "status", "--stats", "--rate"]).is_err());
        assert!(Cli::try_parse_from(["kube-ipvs-proxy", "debug", "status", "--json", "--numeric"]).is_err());
    }

    #[test]
    fn json_round_trips_the_table() {
        let printed = render(&status(Some(vec!["10.96.0.10".parse().unwrap()])), &args(&["--json"])).unwrap();
        let value: serde_json::Value = serde_json::from_str(&printed).unwrap();
        let table: Table = serde_json::from_value(value["table"].clone()).unwrap();
        assert_eq!(table, status(None).table);
        assert_eq!(value["info"]["conn_table_size"], 4096);
        assert_eq!(value["link"], serde_json::json!({"name": "kube-ipvs0", "addresses": ["10.96.0.10"]}));
    }

    #[test]
    fn read_failures_say_what_to_do() {
        let cases = [
            (
                ipvs::Error::new(ErrorKind::PermissionDenied, "get IPVS info", "denied"),
                "run as root or with CAP_NET_ADMIN",
            ),
            (ipvs::Error::new(ErrorKind::IpvsUnavailable, "connect", "none"), "this kernel has no IPVS"),
            (ipvs::Error::new(ErrorKind::Io, "dump", "reset"), "cannot read the kernel's IPVS table"),
        ];
        for (err, expected) in cases {
            let message = StatusError::reading_ipvs(err).to_string();
            assert!(message.contains(expected), "{message}");
        }
    }
}
