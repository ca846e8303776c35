//! The same writes as [`ipvs::Operation`]s, spelled as `ipvsadm` arguments, so that a table can
//! be programmed once by the client and once by the real `ipvsadm` and the two compared.

use std::net::IpAddr;

use ipvs::{
    Family, ForwardMethod, Operation, Protocol, RealServer, RealServerId, ServiceFlags, TunnelType, VirtualServer,
    VirtualServerId,
};

/// The `ipvsadm` arguments performing `op` (without the program name), e.g.
/// `["-A", "-t", "10.0.0.1:80", "-s", "rr"]`. Also one line of `ipvsadm -R` input when joined
/// with spaces (see [`restore_script`]).
pub fn ipvsadm_args(op: &Operation) -> Vec<String> {
    let mut args = Vec::new();
    match op {
        Operation::AddVirtualServer(vs) | Operation::UpdateVirtualServer(vs) => {
            let verb = if matches!(op, Operation::AddVirtualServer(_)) { "-A" } else { "-E" };
            args.push(verb.to_string());
            push_service(&mut args, &vs.id);
            push_service_options(&mut args, vs);
        }
        Operation::DeleteVirtualServer(id) => {
            args.push("-D".to_string());
            push_service(&mut args, id);
        }
        Operation::AddRealServer(id, rs) | Operation::UpdateRealServer(id, rs) => {
            let verb = if matches!(op, Operation::AddRealServer(..)) { "-a" } else { "-e" };
            args.push(verb.to_string());
            push_service(&mut args, id);
            push_real_server(&mut args, rs);
        }
        Operation::DeleteRealServer(id, rs) => {
            args.push("-d".to_string());
            push_service(&mut args, id);
            args.extend(["-r".to_string(), endpoint(rs)]);
        }
    }
    args
}

/// `ipvsadm -R` input performing `ops` in order, one command a line.
pub fn restore_script(ops: &[Operation]) -> String {
    let mut script = String::new();
    for op in ops {
        script.push_str(&ipvsadm_args(op).join(" "));
        script.push('\n');
    }
    script
}

fn push_service(args: &mut Vec<String>, id: &VirtualServerId) {
    match id {
        VirtualServerId::Tuple { protocol, addr, port } => {
            let flag = match protocol {
                Protocol::Tcp => "-t",
                Protocol::Udp => "-u",
                Protocol::Sctp => "--sctp-service",
                Protocol::Other(n) => panic!("ipvsadm cannot name protocol {n}"),
            };
            args.extend([flag.to_string(), endpoint(&RealServerId { addr: *addr, port: *port })]);
        }
        VirtualServerId::Fwmark { family, mark } => {
            args.extend(["-f".to_string(), mark.to_string()]);
            if *family == Family::V6 {
                args.push("-6".to_string());
            }
        }
    }
}

fn push_service_options(args: &mut Vec<String>, vs: &VirtualServer) {
    args.extend(["-s".to_string(), vs.scheduler.to_string()]);
    if vs.flags.contains(ServiceFlags::PERSISTENT) {
        args.extend(["-p".to_string(), vs.timeout.to_string()]);
        let netmask = match vs.id.family() {
            Family::V4 => std::net::Ipv4Addr::from(vs.netmask).to_string(),
            Family::V6 => vs.netmask.to_string(),
        };
        args.extend(["-M".to_string(), netmask]);
    }
    if vs.flags.contains(ServiceFlags::ONE_PACKET) {
        args.push("-o".to_string());
    }
    let sched_flags: Vec<&str> =
        [(ServiceFlags::SCHED1, "flag-1"), (ServiceFlags::SCHED2, "flag-2"), (ServiceFlags::SCHED3, "flag-3")]
            .into_iter()
            .filter(|(flag, _)| vs.flags.contains(*flag))
            .map(|(_, name)| name)
            .collect();
    if !sched_flags.is_empty() {
        args.extend(["-b".to_string(), sched_flags.join(",")]);
    }
    if let Some(pe) = &vs.pe_name {
        args.extend(["--pe".to_string(), pe.clone()]);
    }
}

fn push_real_server(args: &mut Vec<String>, rs: &RealServer) {
    args.extend(["-r".to_string(), endpoint(&rs.id)]);
    match rs.forward {
        ForwardMethod::Masquerade => args.push("-m".to_string()),
        ForwardMethod::Route | ForwardMethod::Local => args.push("-g".to_string()),
        ForwardMethod::Other(bits) => panic!("ipvsadm cannot name forwarding method {bits:#x}"),
        ForwardMethod::Tunnel { tunnel, port, flags } => {
            args.push("-i".to_string());
            match tunnel {
                TunnelType::IpIp => {}
                TunnelType::Other(n) => panic!("ipvsadm cannot name tunnel type {n}"),
                TunnelType::Gue | TunnelType::Gre => {
                    let name = if tunnel == TunnelType::Gue { "gue" } else { "gre" };
                    args.extend(["--tun-type".to_string(), name.to_string()]);
                    if tunnel == TunnelType::Gue {
                        args.extend(["--tun-port".to_string(), port.to_string()]);
                    }
                    args.push(
                        match flags {
                            0 => "--tun-nocsum",
                            0x1 => "--tun-csum",
                            _ => "--tun-remcsum",
                        }
                        .to_string(),
                    );
                }
            }
        }
    }
    args.extend(["-w".to_string(), rs.weight.to_string()]);
    args.extend(["-x".to_string(), rs.upper_threshold.to_string(), "-y".to_string(), rs.lower_threshold.to_string()]);
}

fn endpoint(id: &RealServerId) -> String {
    match id.addr {
        IpAddr::V4(a) => format!("{a}:{}", id.port),
        IpAddr::V6(a) => format!("[{a}]:{}", id.port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(addr: &str, port: u16) -> VirtualServerId {
        VirtualServerId::Tuple { protocol: Protocol::Tcp, addr: addr.parse().unwrap(), port }
    }

    #[test]
    fn operations_spell_as_ipvsadm_does() {
        let mut persistent = VirtualServer::new(tcp("10.0.0.1", 80), "sh");
        persistent.flags = ServiceFlags::PERSISTENT | ServiceFlags::SCHED2;
        persistent.timeout = 300;
        persistent.netmask = 0xffff_ff00;
        let mut gue = RealServer::new("10.1.0.1".parse().unwrap(), 8080, 70000);
        gue.forward = ForwardMethod::Tunnel { tunnel: TunnelType::Gue, port: 6080, flags: 1 };
        let v6 = VirtualServerId::Tuple { protocol: Protocol::Sctp, addr: "fd00::1".parse().unwrap(), port: 9 };
        let cases = [
            (Operation::AddVirtualServer(VirtualServer::new(tcp("10.0.0.1", 80), "rr")), "-A -t 10.0.0.1:80 -s rr"),
            (Operation::UpdateVirtualServer(persistent), "-E -t 10.0.0.1:80 -s sh -p 300 -M 255.255.255.0 -b flag-2"),
            (
                Operation::AddVirtualServer(VirtualServer::new(
                    VirtualServerId::Fwmark { family: Family::V6, mark: 7 },
                    "wlc",
                )),
                "-A -f 7 -6 -s wlc",
            ),
            (Operation::DeleteVirtualServer(v6), "-D --sctp-service [fd00::1]:9"),
            (
                Operation::AddRealServer(tcp("10.0.0.1", 80), gue),
                "-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -i --tun-type gue --tun-port 6080 --tun-csum -w 70000 -x 0 -y 0",
            ),
            (Operation::DeleteRealServer(tcp("10.0.0.1", 80), gue.id), "-d -t 10.0.0.1:80 -r 10.1.0.1:8080"),
        ];
        for (op, want) in cases {
            assert_eq!(ipvsadm_args(&op).join(" "), want, "{op}");
        }
    }
}
