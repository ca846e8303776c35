//! The `nft -f` scripts: the fixed skeleton of the proxy's table, element changes, a full
//! rewrite of the sets, and the table's removal. Pure text generation; [`crate::Nft`] runs them.
//!
//! One table of family `inet` holds everything, so the proxy never touches anyone else's rules
//! and removing it is deleting the table. Each script is one `nft -f` transaction: the kernel
//! applies all of it or none of it.

use std::fmt::Write;

use ipnet::IpNet;
use ipvs::{Family, Protocol};

use crate::state::{Element, ElementChanges, FilterState, disjoint_prefixes};

/// Upstream kube-proxy's masquerade mark bit (`--masquerade-bit 14`).
pub const DEFAULT_MASQUERADE_BIT: u8 = 14;

/// The proxy's nftables settings: which table it owns, the mark bit, the cluster prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfig {
    /// The `inet` table the proxy owns entirely.
    pub table: String,
    /// The packet mark bit (0 to 31) that asks for masquerade, upstream's `masqueradeBit`.
    pub masquerade_bit: u8,
    /// The cluster's pod prefixes: for [`MasqueradeRule::OutsideClusterPrefixes`](crate::MasqueradeRule).
    pub cluster_prefixes: Vec<IpNet>,
    /// How traffic from pods is told from the rest.
    pub local: LocalTraffic,
}

/// How traffic from the node's pods is told from the rest: upstream's `detectLocalMode`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum LocalTraffic {
    /// By source: inside [`FilterConfig::cluster_prefixes`] (the cluster's, or the node's pod
    /// CIDRs); a family without one has only the node's own traffic told apart.
    #[default]
    Prefixes,
    /// By the interface it arrives on: this bridge.
    BridgeInterface(String),
    /// By the interface it arrives on: any whose name starts with this.
    InterfaceNamePrefix(String),
}

impl LocalTraffic {
    /// The match for traffic from pods (`from_pods`) or not from them, in a family whose cluster
    /// prefixes exist (`has_prefixes`); `None` when pods cannot be told in that family.
    fn matcher(&self, proto: &str, suffix: &str, has_prefixes: bool, from_pods: bool) -> Option<String> {
        let op = if from_pods { "" } else { "!= " };
        match self {
            LocalTraffic::Prefixes if has_prefixes => Some(format!("{proto} saddr {op}@cluster_prefixes_{suffix}")),
            LocalTraffic::Prefixes => None,
            LocalTraffic::BridgeInterface(name) => Some(format!("iifname {op}\"{name}\"")),
            LocalTraffic::InterfaceNamePrefix(prefix) => Some(format!("iifname {op}\"{prefix}*\"")),
        }
    }
}

impl FilterConfig {
    /// Table `kube-ipvs-proxy`, mark bit 14 (`0x4000`), the given cluster prefixes.
    pub fn new(cluster_prefixes: Vec<IpNet>) -> FilterConfig {
        FilterConfig {
            table: "kube-ipvs-proxy".into(),
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            cluster_prefixes,
            local: LocalTraffic::Prefixes,
        }
    }

    /// The mark value, e.g. `0x4000` for bit 14; `None` for a bit beyond 31.
    pub fn mark(&self) -> Option<u32> {
        1u32.checked_shl(u32::from(self.masquerade_bit))
    }
}

/// The sets holding [`Element`]s, in the order scripts list them.
pub(crate) const ELEMENT_SETS: [&str; 10] = [
    "masq_all",
    "masq_outside",
    "bound",
    "service_ports",
    "source_restricted",
    ALLOWED_SETS[0].2,
    ALLOWED_SETS[1].2,
    ALLOWED_SETS[2].2,
    "hairpin",
    "short_circuit_keys",
];

/// The protocols with a set of allowed sources each: the protocol, its name in nft, and the
/// set's name (without family suffix). One set per protocol, keyed without it: in an interval
/// set's key `nft` (1.0.6, Debian 12's and the image's) loads `meta l4proto` through a
/// byte-order conversion that Linux 6.12 refuses ("Operation not supported"), which failed the
/// whole table.
const ALLOWED_SETS: [(Protocol, &str, &str); 3] = [
    (Protocol::Tcp, "tcp", "source_allowed_tcp"),
    (Protocol::Udp, "udp", "source_allowed_udp"),
    (Protocol::Sctp, "sctp", "source_allowed_sctp"),
];

/// The maps whose elements change (flushed with `flush map`).
pub(crate) const ELEMENT_MAPS: [&str; 1] = ["short_circuit"];

/// The name of the set (without family suffix) an element belongs to.
fn set_of(element: &Element) -> &'static str {
    match element {
        Element::MasqueradeAll(_) => "masq_all",
        Element::MasqueradeOutside(_) => "masq_outside",
        Element::Bound(_) => "bound",
        Element::ServicePort(_) => "service_ports",
        Element::SourceRestricted(_) => "source_restricted",
        // Another protocol has no set: the filter state makes no such element (see
        // `state::elements_of`), and the kernel would refuse a write to this name rather than
        // take it anywhere.
        Element::SourceAllowed(t, _) => {
            ALLOWED_SETS.iter().find(|(p, ..)| *p == t.protocol).map_or("source_allowed_other", |(.., set)| set)
        }
        Element::Hairpin(_) => "hairpin",
        Element::ShortCircuitKey(_) => "short_circuit_keys",
        Element::ShortCircuit(..) => "short_circuit",
    }
}

/// The suffixes of the two families' sets.
pub(crate) const FAMILY_SUFFIXES: [&str; 2] = ["v4", "v6"];

/// The name of the set `element` belongs to, family suffix included.
pub(crate) fn set_name(element: &Element) -> String {
    format!("{}_{}", set_of(element), fam(element.family()).suffix)
}

/// Whether `element` belongs to set `name` (as [`set_name`] says, without building it).
pub(crate) fn in_set(element: &Element, name: &str) -> bool {
    let (base, suffix) = (set_of(element), fam(element.family()).suffix);
    name.len() == base.len() + 1 + suffix.len()
        && name.starts_with(base)
        && name.ends_with(suffix)
        && name.as_bytes()[base.len()] == b'_'
}

/// Per family: suffix, address type, the payload keywords for its addresses.
struct Fam {
    suffix: &'static str,
    addr_type: &'static str,
    proto: &'static str,
}

const FAMILIES: [(Family, Fam); 2] = [
    (Family::V4, Fam { suffix: "v4", addr_type: "ipv4_addr", proto: "ip" }),
    (Family::V6, Fam { suffix: "v6", addr_type: "ipv6_addr", proto: "ip6" }),
];

fn fam(family: Family) -> &'static Fam {
    match family {
        Family::V4 => &FAMILIES[0].1,
        Family::V6 => &FAMILIES[1].1,
    }
}

/// The protocol as nft writes an `inet_proto` value: by name, or by number for one without.
fn protocol_name(p: Protocol) -> std::borrow::Cow<'static, str> {
    match p {
        Protocol::Tcp => "tcp".into(),
        Protocol::Udp => "udp".into(),
        Protocol::Sctp => "sctp".into(),
        Protocol::Other(n) => n.to_string().into(),
    }
}

/// The text of an element as `add element` takes it.
fn element_text(element: &Element) -> String {
    let t = |t: &crate::Target| format!("{} . {} . {}", t.addr, protocol_name(t.protocol), t.port);
    match element {
        Element::Bound(addr) => addr.to_string(),
        Element::MasqueradeAll(x) | Element::MasqueradeOutside(x) | Element::ServicePort(x) => t(x),
        Element::SourceRestricted(x) => t(x),
        Element::SourceAllowed(x, prefix) => format!("{} . {} . {prefix}", x.addr, x.port),
        // Matched after IPVS rewrote the destination: the endpoint, then its own address as source.
        Element::Hairpin(x) => format!("{} . {}", t(x), x.addr),
        Element::ShortCircuitKey(x) => t(x),
        Element::ShortCircuit(x, addr, port) => format!("{} : {addr} . {port}", t(x)),
    }
}

/// The skeleton: the table, its sets and chains with their fixed rules, and the cluster
/// prefixes. Idempotent: on an existing table of the same shape it keeps every element set and
/// rewrites only the rules (atomically) and the cluster prefixes. `None` when the mark bit is
/// beyond 31.
pub fn skeleton_script(config: &FilterConfig) -> Option<String> {
    let mark = config.mark()?;
    let keep = !mark;
    let table = &config.table;
    let mut s = String::new();
    let _ = writeln!(s, "add table inet {table}");
    let _ = writeln!(s, "add set inet {table} {DIGEST_SET} {{ type mark . mark; }}");
    for (family, f) in &FAMILIES {
        let (sx, at) = (f.suffix, f.addr_type);
        let tuple = format!("{at} . inet_proto . inet_service");
        let _ = writeln!(s, "add set inet {table} cluster_prefixes_{sx} {{ type {at}; flags interval; }}");
        let _ = writeln!(s, "add set inet {table} masq_all_{sx} {{ type {tuple}; }}");
        let _ = writeln!(s, "add set inet {table} masq_outside_{sx} {{ type {tuple}; }}");
        let _ = writeln!(s, "add set inet {table} bound_{sx} {{ type {at}; }}");
        let _ = writeln!(s, "add set inet {table} service_ports_{sx} {{ type {tuple}; }}");
        let _ = writeln!(s, "add set inet {table} source_restricted_{sx} {{ type {tuple}; }}");
        for (_, _, set) in ALLOWED_SETS {
            let _ =
                writeln!(s, "add set inet {table} {set}_{sx} {{ type {at} . inet_service . {at}; flags interval; }}");
        }
        let _ = writeln!(s, "add set inet {table} hairpin_{sx} {{ type {tuple} . {at}; }}");
        let _ = writeln!(s, "add set inet {table} short_circuit_keys_{sx} {{ type {tuple}; }}");
        let _ = writeln!(s, "add map inet {table} short_circuit_{sx} {{ type {tuple} : {at} . inet_service; }}");
        let _ = writeln!(s, "flush set inet {table} cluster_prefixes_{sx}");
        let prefixes: Vec<String> = disjoint_prefixes(config.cluster_prefixes.iter().copied())
            .iter()
            .filter(|p| crate::state::prefix_family(p) == *family)
            .map(|p| p.to_string())
            .collect();
        if !prefixes.is_empty() {
            let _ = writeln!(s, "add element inet {table} cluster_prefixes_{sx} {{ {} }}", prefixes.join(", "));
        }
    }
    // Marks are set before IPVS sees the packet (its LOCAL_OUT hook runs at -98, LOCAL_IN at
    // 98/99) and IPVS keeps the mark when it forwards; the filter runs before IPVS too.
    let chains = [
        ("mark_prerouting", "type filter hook prerouting priority mangle; policy accept;"),
        ("mark_output", "type filter hook output priority mangle; policy accept;"),
        ("mark_masquerade", ""),
        ("filter_input", "type filter hook input priority filter; policy accept;"),
        ("source_check_v4", ""),
        ("source_check_v6", ""),
        ("nat_prerouting", "type nat hook prerouting priority dstnat; policy accept;"),
        ("nat_output", "type nat hook output priority -100; policy accept;"),
        ("nat_postrouting", "type nat hook postrouting priority srcnat; policy accept;"),
    ];
    for (name, spec) in chains {
        if spec.is_empty() {
            let _ = writeln!(s, "add chain inet {table} {name}");
        } else {
            let _ = writeln!(s, "add chain inet {table} {name} {{ {spec} }}");
        }
        let _ = writeln!(s, "flush chain inet {table} {name}");
    }
    // A table written by an earlier version has one set of allowed sources per family, with
    // the protocol in its key; its rule is gone with the flushes above (same transaction).
    for (_, f) in &FAMILIES {
        let (sx, at) = (f.suffix, f.addr_type);
        let _ = writeln!(
            s,
            "add set inet {table} source_allowed_{sx} {{ type {at} . inet_proto . inet_service . {at}; flags interval; }}"
        );
        let _ = writeln!(s, "delete set inet {table} source_allowed_{sx}");
    }
    let rule = |s: &mut String, chain: &str, text: &str| {
        let _ = writeln!(s, "add rule inet {table} {chain} {text}");
    };
    rule(&mut s, "mark_prerouting", "jump mark_masquerade");
    rule(&mut s, "mark_output", "jump mark_masquerade");
    for (family, f) in &FAMILIES {
        let (sx, p) = (f.suffix, f.proto);
        let dst = format!("{p} daddr . meta l4proto . th dport");
        let set_mark = format!("meta mark set meta mark | {mark:#x}");
        rule(&mut s, "mark_masquerade", &format!("{dst} @masq_all_{sx} {set_mark}"));
        // Not from a local pod: outside the cluster prefixes; for a family without one (no
        // way to tell pods by source), upstream's fallback: traffic whose source is the service
        // address itself, i.e. the node's own (the kernel picks a local destination as source).
        let has_prefixes = config.cluster_prefixes.iter().any(|p| crate::state::prefix_family(p) == *family);
        let non_local = match config.local.matcher(p, sx, has_prefixes, false) {
            Some(not_pods) => format!("{not_pods} {dst} @masq_outside_{sx} {set_mark}"),
            None => format!("{p} saddr . meta l4proto . th dport @masq_outside_{sx} {set_mark}"),
        };
        rule(&mut s, "mark_masquerade", &non_local);
        // A restricted service port admits its allowed sources, and drops the rest.
        rule(&mut s, "filter_input", &format!("{dst} @source_restricted_{sx} jump source_check_{sx}"));
        for (_, proto, set) in ALLOWED_SETS {
            let allowed = format!("{p} daddr . th dport . {p} saddr @{set}_{sx}");
            rule(&mut s, &format!("source_check_{sx}"), &format!("meta l4proto {proto} {allowed} return"));
        }
        rule(&mut s, &format!("source_check_{sx}"), "drop");
        // externalTrafficPolicy Local: in-cluster traffic to an external address goes to the
        // ClusterIP instead (all endpoints), before IPVS sees it; the node's own is masqueraded.
        let redirect = format!("dnat {p} to {dst} map @short_circuit_{sx}");
        if let Some(pods) = config.local.matcher(p, sx, has_prefixes, true) {
            rule(&mut s, "nat_prerouting", &format!("{pods} {dst} @short_circuit_keys_{sx} {redirect}"));
        }
        rule(&mut s, "nat_output", &format!("{dst} @short_circuit_keys_{sx} {set_mark} {redirect}"));
        rule(
            &mut s,
            "filter_input",
            &format!(
                "ct state new meta l4proto {{ tcp, udp, sctp }} {p} daddr @bound_{sx} {dst} != @service_ports_{sx} reject with icmpx port-unreachable"
            ),
        );
    }
    rule(
        &mut s,
        "nat_postrouting",
        &format!("meta mark & {mark:#x} == {mark:#x} meta mark set meta mark & {keep:#x} masquerade"),
    );
    for (_, f) in &FAMILIES {
        let (sx, p) = (f.suffix, f.proto);
        rule(
            &mut s,
            "nat_postrouting",
            &format!("{p} daddr . meta l4proto . th dport . {p} saddr @hairpin_{sx} masquerade"),
        );
    }
    Some(s)
}

/// One transaction making the element sets hold exactly the elements of `state` (the cluster
/// prefixes are the skeleton's): every set flushed, then refilled.
pub fn full_script(table: &str, state: &FilterState) -> String {
    let mut s = String::new();
    for (_, f) in &FAMILIES {
        for set in ELEMENT_SETS {
            let _ = writeln!(s, "flush set inet {table} {set}_{}", f.suffix);
        }
        for map in ELEMENT_MAPS {
            let _ = writeln!(s, "flush map inet {table} {map}_{}", f.suffix);
        }
    }
    write_elements(&mut s, "add", table, state.elements());
    s
}

/// The set holding one element, the [`table_digest`] of what the proxy last wrote whole or
/// changed, split in two 32-bit halves: a restart that finds it equal to the digest of what it
/// wants adopts the table without writing. A set rather than the table's comment because the
/// kernel does not update the comment of an existing table.
pub const DIGEST_SET: &str = "state_digest";

/// FNV-1a, 64 bits: fully specified, so a digest written by one build is read the same by the next.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The digest of one element, as its set and text: stable across runs and builds.
fn element_digest(element: &Element) -> u64 {
    fnv1a(format!("{}_{} {}", set_of(element), fam(element.family()).suffix, element_text(element)).as_bytes())
}

/// The digest of a table holding the skeleton of `config` and the elements of `state`: the
/// skeleton text's hash plus (wrapping) each element's, so that a change moves it at the cost of
/// the change ([`changes_digest`]) and the element order does not matter. `None` when the mark
/// bit is beyond 31. A cache key, not a security measure: it guards against staleness, not forgery.
pub fn table_digest(config: &FilterConfig, state: &FilterState) -> Option<u64> {
    let skeleton = fnv1a(skeleton_script(config)?.as_bytes());
    Some(state.elements().fold(skeleton, |d, e| d.wrapping_add(element_digest(e))))
}

/// The [`table_digest`] after `changes` are applied to a table of digest `digest`.
pub fn changes_digest(digest: u64, changes: &ElementChanges) -> u64 {
    let removed = changes.removed.iter().fold(digest, |d, e| d.wrapping_sub(element_digest(e)));
    changes.added.iter().fold(removed, |d, e| d.wrapping_add(element_digest(e)))
}

/// The lines recording `digest` in [`DIGEST_SET`]; appended to every script that writes
/// elements, so the recorded digest is never stale (same transaction).
pub fn digest_script(table: &str, digest: u64) -> String {
    format!(
        "flush set inet {table} {DIGEST_SET}\nadd element inet {table} {DIGEST_SET} {{ {:#010x} . {:#010x} }}\n",
        digest >> 32,
        digest & 0xffff_ffff
    )
}

/// The digest in `nft list set inet <table> state_digest` output (`elements = { 0x.. . 0x.. }`);
/// `None` when the set is empty or the text is not of that shape.
pub fn parse_digest(listing: &str) -> Option<u64> {
    let rest = listing.split_once("elements = {")?.1;
    let inner = rest.split_once('}')?.0;
    let (high, low) = inner.split_once(" . ")?;
    let half = |t: &str| u32::from_str_radix(t.trim().strip_prefix("0x")?, 16).ok();
    Some((u64::from(half(high)?) << 32) | u64::from(half(low)?))
}

/// Removes the proxy's table and everything in it.
pub fn delete_table_script(table: &str) -> String {
    format!("delete table inet {table}\n")
}

/// `verb element` lines, one per set and family with all its elements.
fn write_elements<'a>(s: &mut String, verb: &str, table: &str, elements: impl Iterator<Item = &'a Element>) {
    let mut by_set: std::collections::BTreeMap<(&str, &str), Vec<String>> = Default::default();
    for e in elements {
        by_set.entry((set_of(e), fam(e.family()).suffix)).or_default().push(element_text(e));
    }
    // Scripts list sets (then maps) in a fixed order, whatever the element order.
    for set in ELEMENT_SETS.iter().chain(&ELEMENT_MAPS) {
        for (_, f) in &FAMILIES {
            if let Some(items) = by_set.get(&(set, f.suffix)) {
                let _ = writeln!(s, "{verb} element inet {table} {set}_{} {{ {} }}", f.suffix, items.join(", "));
            }
        }
    }
}
