//! The node-address source on the VM kernel: the first update is the complete list, an address
//! added to or removed from a host interface is followed within a second (rtnetlink
//! notifications, no polling), and the dummy link's addresses, loopback and IPv6 link-local ones
//! never count.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use integration::{in_netns, ip};
use ipvs::DummyLink;
use model::Update;

/// How long a change may take to arrive (the bound for following node addresses).
const FOLLOW: Duration = Duration::from_secs(1);

async fn next_addresses(updates: &mut (impl futures::Stream<Item = Update> + Unpin)) -> Vec<IpAddr> {
    match tokio::time::timeout(FOLLOW, updates.next()).await {
        Ok(Some(Update::NodeAddresses(addrs))) => addrs,
        other => panic!("no node addresses within {FOLLOW:?}: {other:?}"),
    }
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn node_addresses_are_followed_by_notification() {
    in_netns(|| async {
        ip(&["link", "add", "eth9", "type", "dummy"]).unwrap();
        ip(&["link", "set", "eth9", "up"]).unwrap();
        ip(&["addr", "add", "192.0.2.10/24", "dev", "eth9"]).unwrap();
        ip(&["addr", "add", "2001:db8::10/64", "dev", "eth9", "nodad"]).unwrap();
        let link = DummyLink::ensure("kube-ipvs0").await.unwrap();
        link.add_address(addr("10.96.0.1")).await.unwrap();

        let once = sources::node_addresses("kube-ipvs0").await.unwrap();
        let mut updates = sources::node_address_updates("kube-ipvs0").boxed();
        let first = next_addresses(&mut updates).await;
        assert_eq!(first, vec![addr("192.0.2.10"), addr("2001:db8::10")], "loopback, link-local, kube-ipvs0 left out");
        assert_eq!(once, first, "the one-shot read agrees");

        ip(&["addr", "add", "198.51.100.7/24", "dev", "eth9"]).unwrap();
        assert_eq!(
            next_addresses(&mut updates).await,
            [addr("192.0.2.10"), addr("198.51.100.7"), addr("2001:db8::10")]
        );

        // The dummy link's addresses change nothing: the next update is the removal below.
        for i in 2..50u8 {
            link.add_address(IpAddr::from([10, 96, 0, i])).await.unwrap();
        }
        ip(&["addr", "del", "192.0.2.10/24", "dev", "eth9"]).unwrap();
        assert_eq!(next_addresses(&mut updates).await, [addr("198.51.100.7"), addr("2001:db8::10")]);

        // An address removed from the dummy link is reported, whoever removed it, so that the
        // proxy can bind it again.
        link.remove_address(IpAddr::from([10, 96, 0, 2])).await.unwrap();
        match tokio::time::timeout(FOLLOW, updates.next()).await {
            Ok(Some(Update::Unbound(addrs))) => assert_eq!(addrs, [IpAddr::from([10, 96, 0, 2])]),
            other => panic!("no unbound address within {FOLLOW:?}: {other:?}"),
        }

        // A link that goes takes its addresses with it.
        ip(&["link", "del", "eth9"]).unwrap();
        assert_eq!(next_addresses(&mut updates).await, Vec::<IpAddr>::new());
    });
}
