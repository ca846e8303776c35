//! The order `ipvsadm -L` lists in: its comparators, applied by the merge sort glibc's `qsort`
//! uses, so that even the comparators' quirks come out the same.
//!
//! ipvsadm compares 32-bit fields by subtracting them as unsigned numbers and reading the
//! difference as a signed `int`. Addresses more than 2^31 apart therefore compare "backwards"
//! (`192.168.0.1` sorts before `10.0.0.1`), and the relation is not transitive. A textbook sort
//! would then disagree with ipvsadm; replaying glibc's top-down merge sort (the algorithm behind
//! `qsort` in the glibc ipvsadm is built against) on the same comparator does not.

use std::net::IpAddr;

use crate::{Family, Protocol, RealServerId, VirtualServerId};

/// `AF_INET` and `AF_INET6` as ipvsadm compares them.
fn family_number(family: Family) -> i32 {
    match family {
        Family::V4 => 2,
        Family::V6 => 10,
    }
}

/// The IP protocol number ipvsadm compares; fwmark services carry none (0).
fn protocol_number(protocol: Protocol) -> i32 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
        Protocol::Other(n) => i32::from(n),
    }
}

/// An address as the four host-order words of the kernel's `nf_inet_addr` union: an IPv4
/// address fills the first word only.
fn address_words(addr: Option<IpAddr>) -> [u32; 4] {
    match addr {
        None => [0; 4],
        Some(IpAddr::V4(a)) => [u32::from(a), 0, 0, 0],
        Some(IpAddr::V6(a)) => {
            let s = a.segments();
            let word = |i: usize| (u32::from(s[2 * i]) << 16) | u32::from(s[2 * i + 1]);
            [word(0), word(1), word(2), word(3)]
        }
    }
}

/// `a - b` computed on unsigned 32-bit words and read as a C `int`, as ipvsadm does.
fn c_difference(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// Compares addresses as ipvsadm does: all four words if the *first* operand is IPv6, else the
/// first word only.
fn compare_addresses(a: Option<IpAddr>, b: Option<IpAddr>, a_is_v6: bool) -> i32 {
    let (wa, wb) = (address_words(a), address_words(b));
    let words = if a_is_v6 { 4 } else { 1 };
    wa.iter().zip(wb.iter()).take(words).map(|(x, y)| c_difference(*x, *y)).find(|r| *r != 0).unwrap_or(0)
}

/// ipvsadm's service comparator: fwmark, family, protocol, address, port.
pub(super) fn compare_virtual_servers(a: &VirtualServerId, b: &VirtualServerId) -> i32 {
    let fields = |id: &VirtualServerId| match *id {
        VirtualServerId::Tuple { protocol, addr, port } => (0, protocol_number(protocol), Some(addr), port),
        VirtualServerId::Fwmark { mark, .. } => (mark, 0, None, 0),
    };
    let (mark_a, proto_a, addr_a, port_a) = fields(a);
    let (mark_b, proto_b, addr_b, port_b) = fields(b);
    let r = c_difference(mark_a, mark_b);
    if r != 0 {
        return r;
    }
    let r = family_number(a.family()) - family_number(b.family());
    if r != 0 {
        return r;
    }
    let r = proto_a - proto_b;
    if r != 0 {
        return r;
    }
    let r = compare_addresses(addr_a, addr_b, a.family() == Family::V6);
    if r != 0 {
        return r;
    }
    i32::from(port_a) - i32::from(port_b)
}

/// ipvsadm's destination comparator: address (in the first operand's family), then port.
pub(super) fn compare_real_servers(a: &RealServerId, b: &RealServerId) -> i32 {
    match compare_addresses(Some(a.addr), Some(b.addr), a.addr.is_ipv6()) {
        0 => i32::from(a.port) - i32::from(b.port),
        r => r,
    }
}

/// Sorts as glibc's `qsort` does for ipvsadm: a stable top-down merge sort that splits `n` into
/// `n / 2` and the rest, and takes from the left run while `compare(left, right) <= 0`.
pub(super) fn glibc_merge_sort<T: Copy>(items: &mut [T], compare: &impl Fn(&T, &T) -> i32) {
    if items.len() < 2 {
        return;
    }
    let (left, right) = items.split_at_mut(items.len() / 2);
    glibc_merge_sort(left, compare);
    glibc_merge_sort(right, compare);
    let mut merged = Vec::with_capacity(left.len() + right.len());
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        if compare(&left[i], &right[j]) <= 0 {
            merged.push(left[i]);
            i += 1;
        } else {
            merged.push(right[j]);
            j += 1;
        }
    }
    merged.extend_from_slice(&left[i..]);
    merged.extend_from_slice(&right[j..]);
    items.copy_from_slice(&merged);
}
