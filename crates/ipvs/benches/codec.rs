//! Codec speed: encoding the 22,000 writes that program 2,000 virtual servers with 10 real
//! servers each into batch buffers, and decoding a dump of that table (2,000 service entries
//! and 20,000 destination entries in 32 KiB datagrams, as the kernel sends them).
//!
//! `cargo bench -p ipvs`; sample sizes are small so it finishes in well under two minutes.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipvs::wire::{
    IpvsMessage, Reply, StatsAttr, dest_attrs, encode_request, frames, operation_message, real_server_entry_from_nest,
    service_attrs, virtual_server_entry,
};
use ipvs::{Family, Operation, Protocol, RealServer, VirtualServer, VirtualServerId};

const SERVICES: usize = 2000;
const DESTS: usize = 10;
/// Messages per `sendmsg` in the client's batches, about.
const WINDOW: usize = 800;
/// The kernel's dump datagrams are at most this big.
const DATAGRAM: usize = 32 * 1024;

fn id(i: usize) -> VirtualServerId {
    VirtualServerId::Tuple {
        protocol: Protocol::Tcp,
        addr: IpAddr::V4(Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 1) as u8)),
        port: 80,
    }
}

fn real(i: usize, j: usize) -> RealServer {
    RealServer::new(IpAddr::V4(Ipv4Addr::new(10, 100 + j as u8, (i / 250) as u8, (i % 250 + 1) as u8)), 8080, 1)
}

fn operations() -> Vec<Operation> {
    let mut ops = Vec::with_capacity(SERVICES * (DESTS + 1));
    for i in 0..SERVICES {
        ops.push(Operation::AddVirtualServer(VirtualServer::new(id(i), "rr")));
        ops.extend((0..DESTS).map(|j| Operation::AddRealServer(id(i), real(i, j))));
    }
    ops
}

/// Dump entries carry stats too; ten counters in each of STATS and STATS64.
fn stats() -> Vec<StatsAttr> {
    ipvs::wire::stats_to_attrs(&ipvs::Stats { conns: 12345, in_pkts: 99, in_bytes: 1 << 40, ..Default::default() })
}

/// Packs entry messages into datagrams of at most [`DATAGRAM`] bytes.
fn datagrams(messages: impl Iterator<Item = IpvsMessage>) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::with_capacity(DATAGRAM)];
    let mut one = Vec::new();
    for (seq, msg) in messages.enumerate() {
        one.clear();
        encode_request(&mut one, 0x25, seq as u32, 0x2, msg);
        if out.last().is_some_and(|d| d.len() + one.len() > DATAGRAM) {
            out.push(Vec::with_capacity(DATAGRAM));
        }
        if let Some(last) = out.last_mut() {
            last.extend_from_slice(&one);
        }
    }
    out
}

fn dump() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let services = datagrams((0..SERVICES).map(|i| {
        let mut attrs = service_attrs(&VirtualServer::new(id(i), "rr"));
        attrs.push(ipvs::wire::ServiceAttr::Stats(stats()));
        attrs.push(ipvs::wire::ServiceAttr::Stats64(stats()));
        IpvsMessage::service_entry(attrs)
    }));
    let dests = datagrams((0..SERVICES).flat_map(|i| {
        (0..DESTS).map(move |j| {
            let mut attrs = dest_attrs(&real(i, j));
            attrs.push(ipvs::wire::DestAttr::Stats(stats()));
            attrs.push(ipvs::wire::DestAttr::Stats64(stats()));
            IpvsMessage::dest_entry(attrs)
        })
    }));
    (services, dests)
}

fn encode(c: &mut Criterion) {
    let ops = operations();
    let mut group = c.benchmark_group("encode");
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(ops.len() as u64));
    let mut buf = Vec::with_capacity(128 * 1024);
    group.bench_function("22000 writes into batch buffers", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for (n, op) in ops.iter().enumerate() {
                if n % WINDOW == 0 {
                    bytes += buf.len();
                    buf.clear();
                }
                encode_request(&mut buf, 0x25, n as u32, 0x5, operation_message(op));
            }
            black_box(bytes + buf.len())
        })
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let (services, dests) = dump();
    let mut group = c.benchmark_group("decode");
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements((SERVICES * (DESTS + 1)) as u64));
    group.bench_function("dump of 2000 services and 20000 destinations", |b| {
        b.iter(|| {
            let mut n = 0;
            for d in &services {
                for frame in frames(d) {
                    if let Ok(Reply::Message(m)) = Reply::decode(&frame.unwrap()) {
                        n += virtual_server_entry(m.service().unwrap()).is_ok() as usize;
                    }
                }
            }
            // As the client does: destination entries straight from their nest.
            for d in &dests {
                for frame in frames(d) {
                    let nest = frame.unwrap().dest_nest().unwrap().unwrap();
                    n += real_server_entry_from_nest(nest, Family::V4).is_ok() as usize;
                }
            }
            assert_eq!(n, SERVICES * (DESTS + 1));
            n
        })
    });
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
