//! Prints an IPVS table exactly as `ipvsadm -Ln` does, with any of its column options (`--stats`,
//! `--rate`, `--thresholds`, `--persistent-conn`, `--tun-info`) and `--exact`, `--nosort`.
//!
//! The format was learnt from ipvsadm 1.31's listing code and checked against its output; it is
//! re-implemented here, not translated. What matters for byte-for-byte equality:
//! - services and their destinations are sorted with ipvsadm's comparators (see the `order` module), not
//!   kept in the kernel's dump order;
//! - fixed column widths, including the trailing spaces after `InActConn` on destination lines;
//! - numbers in `--stats`/`--rate` scaled to K/M/G/T above 8 digits unless `--exact`;
//! - C `printf` quirks: a firewall mark or weight above `i32::MAX` prints negative.
//!
//! Optionally each virtual server line is followed by comment lines (`#  ...`), used to name the
//! Kubernetes Service behind it; ipvsadm never prints those, so `debug status --numeric` passes none.

mod order;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{
    Family, ForwardMethod, Info, RealServerEntry, ServiceFlags, Stats, Table, TunnelType, VirtualServer,
    VirtualServerEntry, VirtualServerId,
};

/// Which columns a listing shows after the addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Columns {
    /// Scheduler and flags; forward method, weight and connection counts (`ipvsadm -Ln`).
    #[default]
    Connections,
    /// Cumulative traffic counters (`ipvsadm -Ln --stats`).
    Stats,
    /// Rate estimates (`ipvsadm -Ln --rate`).
    Rate,
    /// Connection thresholds and counts (`ipvsadm -Ln --thresholds`).
    Thresholds,
    /// Weight, persistence templates and connection counts (`ipvsadm -Ln --persistent-conn`).
    PersistentConnections,
    /// The default columns plus the tunnel encapsulation (`ipvsadm -Ln --tun-info`).
    TunnelInfo,
}

/// How to print a listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListFormat {
    /// The columns.
    pub columns: Columns,
    /// Print counters unscaled (`--exact`); only matters for [`Columns::Stats`] and [`Columns::Rate`].
    pub exact: bool,
    /// Keep the table's order instead of sorting as ipvsadm does (`--nosort`).
    pub nosort: bool,
}

/// Renders `table` as ipvsadm lists it. With `info`, the listing starts with ipvsadm's
/// `IP Virtual Server version ...` line; without (a rendered desired state has no kernel), it
/// starts at the column titles. `comments` gives the lines to print after each virtual server's
/// line, each prefixed `#  `; pass `|_| Vec::new()` for pure ipvsadm output.
pub fn listing(
    table: &Table,
    info: Option<&Info>,
    format: ListFormat,
    comments: &dyn Fn(&VirtualServerId) -> Vec<String>,
) -> String {
    let mut out = String::new();
    if let Some(info) = info {
        // Writing to a String cannot fail; the results are ignored for that reason.
        let _ = writeln!(out, "IP Virtual Server version {} (size={})", info.version_string(), info.conn_table_size);
    }
    write_titles(&mut out, format.columns);

    let mut services: Vec<&(VirtualServerEntry, Vec<RealServerEntry>)> = table.services.iter().collect();
    if !format.nosort {
        order::glibc_merge_sort(&mut services, &|a, b| order::compare_virtual_servers(&a.0.server.id, &b.0.server.id));
    }
    for (service, reals) in services {
        write_virtual_server(&mut out, service, format);
        for comment in comments(&service.server.id) {
            let _ = writeln!(out, "#  {comment}");
        }
        let mut reals: Vec<&RealServerEntry> = reals.iter().collect();
        if !format.nosort {
            order::glibc_merge_sort(&mut reals, &|a, b| order::compare_real_servers(&a.server.id, &b.server.id));
        }
        for real in reals {
            write_real_server(&mut out, real, format);
        }
    }
    out
}

const LOCAL_TITLE: &str = "Prot LocalAddress:Port";

fn write_titles(out: &mut String, columns: Columns) {
    let counters = match columns {
        Columns::Connections => {
            out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
            out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
            return;
        }
        Columns::TunnelInfo => {
            out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
            out.push_str("  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n");
            return;
        }
        // These two titles are left-aligned, with the padding (and so trailing spaces) ipvsadm prints.
        Columns::Thresholds => {
            let _ = write!(
                out,
                "{LOCAL_TITLE:<33} {:<10} {:<10} {:<10} {:<10}",
                "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
            );
            out.push_str("\n  -> RemoteAddress:Port\n");
            return;
        }
        Columns::PersistentConnections => {
            let _ = write!(
                out,
                "{LOCAL_TITLE:<33} {:<9} {:<11} {:<10} {:<10}",
                "Weight", "PersistConn", "ActiveConn", "InActConn"
            );
            out.push_str("\n  -> RemoteAddress:Port\n");
            return;
        }
        Columns::Stats => ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"],
        Columns::Rate => ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"],
    };
    let _ = write!(out, "{LOCAL_TITLE:<33}");
    for title in counters {
        let _ = write!(out, " {title:>8}");
    }
    out.push_str("\n  -> RemoteAddress:Port\n");
}

/// `TCP  10.0.0.1:80`, `FWM  7`, `FWM  7 IPv6`: the first column of a virtual server line.
fn virtual_server_name(id: &VirtualServerId) -> String {
    match *id {
        // ipvsadm prints the mark with `%d`.
        VirtualServerId::Fwmark { family: Family::V4, mark } => format!("FWM  {}", mark as i32),
        VirtualServerId::Fwmark { family: Family::V6, mark } => format!("FWM  {} IPv6", mark as i32),
        VirtualServerId::Tuple { protocol, addr, port } => {
            format!("{:<4} {}", protocol.to_string(), address_port(addr, port))
        }
    }
}

/// `10.0.0.1:80` or `[fd00::1]:80`, the address written as glibc's `inet_ntop` writes it.
fn address_port(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{}]:{port}", inet_ntop6(a)),
    }
}

/// glibc writes an IPv4-compatible address (`::a.b.c.d`, first 96 bits zero, not `::` or
/// `::w`) with a dotted quad where Rust writes hex; everything else agrees.
fn inet_ntop6(addr: Ipv6Addr) -> String {
    let s = addr.segments();
    if s[..6].iter().all(|w| *w == 0) && s[6] != 0 {
        let [.., a, b, c, d] = addr.octets();
        return format!("::{}", Ipv4Addr::new(a, b, c, d));
    }
    addr.to_string()
}

fn write_virtual_server(out: &mut String, entry: &VirtualServerEntry, format: ListFormat) {
    let server = &entry.server;
    let name = virtual_server_name(&server.id);
    match format.columns {
        Columns::Connections | Columns::Thresholds | Columns::PersistentConnections | Columns::TunnelInfo => {
            let _ = write!(out, "{name} {}", server.scheduler);
            write_service_flags(out, server);
        }
        Columns::Stats => {
            let _ = write!(out, "{name:<33}");
            write_stats(out, &entry.stats, format.exact);
        }
        Columns::Rate => {
            let _ = write!(out, "{name:<33}");
            write_rates(out, &entry.stats, format.exact);
        }
    }
    out.push('\n');
}

/// ` (mh-port) persistent 360 mask 255.255.255.0 pe sip ops`, each part only when set.
fn write_service_flags(out: &mut String, server: &VirtualServer) {
    let scheduler_bits = [ServiceFlags::SCHED1, ServiceFlags::SCHED2, ServiceFlags::SCHED3];
    if scheduler_bits.iter().any(|bit| server.flags.contains(*bit)) {
        // sh and mh name their flags; for them flag 3 has no name and ipvsadm prints "()".
        let names: &[&str] = match server.scheduler.as_str() {
            "sh" => &["sh-fallback", "sh-port"],
            "mh" => &["mh-fallback", "mh-port"],
            _ => &["flag-1", "flag-2", "flag-3"],
        };
        let set: Vec<&str> =
            scheduler_bits.iter().zip(names).filter(|(bit, _)| server.flags.contains(**bit)).map(|(_, n)| *n).collect();
        let _ = write!(out, " ({})", set.join(","));
    }
    if server.flags.contains(ServiceFlags::PERSISTENT) {
        let _ = write!(out, " persistent {}", server.timeout);
        match server.id.family() {
            Family::V4 if server.netmask != u32::MAX => {
                let _ = write!(out, " mask {}", Ipv4Addr::from(server.netmask));
            }
            Family::V6 if server.netmask != 128 => {
                let _ = write!(out, " mask {}", server.netmask as i32);
            }
            _ => {}
        }
        if let Some(pe) = server.pe_name.as_deref().filter(|pe| !pe.is_empty()) {
            let _ = write!(out, " pe {pe}");
        }
    }
    if server.flags.contains(ServiceFlags::ONE_PACKET) {
        out.push_str(" ops");
    }
}

fn forward_name(forward: &ForwardMethod) -> &'static str {
    match forward {
        ForwardMethod::Masquerade => "Masq",
        ForwardMethod::Local => "Local",
        ForwardMethod::Tunnel { .. } => "Tunnel",
        ForwardMethod::Route => "Route",
        // ipvsadm prints this for any value it does not name.
        ForwardMethod::Other(_) => "Unknown",
    }
}

/// `ipip`, `gue:PORT:FLAGS`, `gre:FLAGS` for tunnels, `n/a` otherwise. Flags are named as
/// ipvsadm names them (`-c` none, `+c` checksum, `r+c` remote checksum); ipvsadm indexes a
/// table with the raw value, so any other value has no name: `?` here.
fn tunnel_info(forward: &ForwardMethod) -> String {
    let ForwardMethod::Tunnel { tunnel, port, flags } = forward else {
        return "n/a".to_string();
    };
    let flags = match flags {
        0 => "-c",
        1 => "+c",
        2 => "r+c",
        _ => "?",
    };
    match tunnel {
        TunnelType::IpIp => "ipip".to_string(),
        TunnelType::Gue => format!("gue:{port}:{flags}"),
        TunnelType::Gre => format!("gre:{flags}"),
        TunnelType::Other(n) => format!("type-{n}"),
    }
}

fn write_real_server(out: &mut String, entry: &RealServerEntry, format: ListFormat) {
    let server = &entry.server;
    let name = address_port(server.id.addr, server.id.port);
    let _ = write!(out, "  -> {name:<28}");
    match format.columns {
        Columns::Connections => {
            // The kernel holds the weight as an int and ipvsadm prints it with %d.
            let weight = server.weight as i32;
            let _ = write!(
                out,
                " {:<7} {weight:<6} {:<10} {:<10}",
                forward_name(&server.forward),
                entry.connections.active,
                entry.connections.inactive
            );
        }
        Columns::Thresholds => {
            let _ = write!(
                out,
                " {:<10} {:<10} {:<10} {:<10}",
                server.upper_threshold, server.lower_threshold, entry.connections.active, entry.connections.inactive
            );
        }
        Columns::PersistentConnections => {
            // Here ipvsadm prints the weight with %u.
            let c = &entry.connections;
            let _ = write!(out, " {:<9} {:<11} {:<10} {:<10}", server.weight, c.persistent, c.active, c.inactive);
        }
        Columns::TunnelInfo => {
            let _ = write!(
                out,
                " {:<7} {:<13} {:<6} {:<10} {:<10}",
                forward_name(&server.forward),
                tunnel_info(&server.forward),
                server.weight as i32,
                entry.connections.active,
                entry.connections.inactive
            );
        }
        Columns::Stats => write_stats(out, &entry.stats, format.exact),
        Columns::Rate => {
            // ipvsadm prints a destination's first three rates unscaled, 8 wide.
            let s = &entry.stats;
            let _ = write!(out, " {:>8} {:>8} {:>8}", s.cps, s.in_pps, s.out_pps);
            write_number(out, s.in_bps, format.exact);
            write_number(out, s.out_bps, format.exact);
        }
    }
    out.push('\n');
}

fn write_stats(out: &mut String, s: &Stats, exact: bool) {
    for n in [s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes] {
        write_number(out, n, exact);
    }
}

fn write_rates(out: &mut String, s: &Stats, exact: bool) {
    for n in [s.cps, s.in_pps, s.out_pps, s.in_bps, s.out_bps] {
        write_number(out, n, exact);
    }
}

/// One counter column: 9 wide (a space and 8 digits); from 100 million up, scaled to a
/// truncated K/M/G/T unit unless `exact`, where the column widens to fit instead.
fn write_number(out: &mut String, n: u64, exact: bool) {
    if exact {
        let _ = write!(out, " {n:>8}");
        return;
    }
    if n < 100_000_000 {
        let _ = write!(out, "{n:>9}");
        return;
    }
    let (divisor, unit) = if n < 1_000_000_000 {
        (1_000, 'K')
    } else if n < 100_000_000_000 {
        (1_000_000, 'M')
    } else if n < 100_000_000_000_000 {
        (1_000_000_000, 'G')
    } else {
        (1_000_000_000_000, 'T')
    };
    let _ = write!(out, "{:>8}{unit}", n / divisor);
}
