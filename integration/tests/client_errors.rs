//! Refusals come back typed and naming the object, alone and inside a batch of 1,000 writes.

mod common;

use common::*;
use integration::in_netns;
use ipvs::{Client, ErrorKind, Operation, RealServer, RealServerId, VirtualServer};

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn refusals_are_typed() {
    in_netns(|| async {
        let c = Client::connect().await.unwrap();
        let id = tcp("10.96.0.1", 80);
        let vs = VirtualServer::new(id, "rr");
        let rs = RealServer::new(addr("10.244.1.2"), 8080, 1);
        let missing = tcp("10.96.0.2", 80);
        c.add_virtual_server(&vs).await.unwrap();
        c.add_real_server(&id, &rs).await.unwrap();

        // (what, error, kind, text the message must contain)
        let cases: Vec<(&str, ipvs::Error, ErrorKind, &str)> = vec![
            (
                "add vs twice",
                c.add_virtual_server(&vs).await.unwrap_err(),
                ErrorKind::Exists,
                "10.96.0.1:80",
            ),
            (
                "add rs twice",
                c.add_real_server(&id, &rs).await.unwrap_err(),
                ErrorKind::Exists,
                "10.244.1.2:8080",
            ),
            (
                "update missing vs",
                c.update_virtual_server(&VirtualServer::new(missing, "rr"))
                    .await
                    .unwrap_err(),
                ErrorKind::NoSuchVirtualServer,
                "10.96.0.2:80",
            ),
            (
                "delete missing vs",
                c.delete_virtual_server(&missing).await.unwrap_err(),
                ErrorKind::NoSuchVirtualServer,
                "10.96.0.2:80",
            ),
            (
                "get missing vs",
                c.get_virtual_server(&missing).await.unwrap_err(),
                ErrorKind::NoSuchVirtualServer,
                "10.96.0.2:80",
            ),
            (
                "add rs to missing vs",
                c.add_real_server(&missing, &rs).await.unwrap_err(),
                ErrorKind::NoSuchVirtualServer,
                "10.96.0.2:80",
            ),
            (
                "delete missing rs",
                c.delete_real_server(
                    &id,
                    &RealServerId {
                        addr: addr("10.244.7.7"),
                        port: 1,
                    },
                )
                .await
                .unwrap_err(),
                ErrorKind::NotFound,
                "10.244.7.7:1",
            ),
            (
                "update missing rs",
                c.update_real_server(&id, &RealServer::new(addr("10.244.7.8"), 1, 1))
                    .await
                    .unwrap_err(),
                ErrorKind::NotFound,
                "10.244.7.8:1",
            ),
            (
                "unknown scheduler",
                c.add_virtual_server(&VirtualServer::new(missing, "nosuchsched"))
                    .await
                    .unwrap_err(),
                ErrorKind::NotFound,
                "nosuchsched",
            ),
            (
                "weight above i32::MAX",
                c.add_real_server(&id, &RealServer::new(addr("10.244.1.3"), 8080, u32::MAX))
                    .await
                    .unwrap_err(),
                ErrorKind::OutOfRange,
                "10.244.1.3:8080",
            ),
        ];
        for (what, err, kind, text) in cases {
            assert_eq!(err.kind(), kind, "{what}: {err}");
            assert!(
                err.to_string().contains(text),
                "{what}: {err:?} does not name {text}"
            );
        }
        // None of the refusals changed anything.
        let table = c.table().await.unwrap();
        assert_eq!(config_of(&table), vec![(vs, vec![rs])]);
    });
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn batch_of_1000_reports_each_result() {
    in_netns(|| async {
        let c = Client::connect().await.unwrap();
        let mut ops: Vec<(Operation, Option<ErrorKind>)> = Vec::new();
        let mut spec = Vec::new();
        for i in 0..100u32 {
            let id = tcp(&format!("10.10.{}.{}", i / 200, i % 200 + 1), 80);
            let vs = VirtualServer::new(id, if i % 2 == 0 { "rr" } else { "wrr" });
            ops.push((Operation::AddVirtualServer(vs.clone()), None));
            let reals: Vec<RealServer> = (0..8u32)
                .map(|j| RealServer::new(addr(&format!("10.244.{i}.{}", j + 2)), 8080, j + 1))
                .collect();
            for r in &reals {
                ops.push((Operation::AddRealServer(id, *r), None));
            }
            let failing = match i % 5 {
                0 => (Operation::AddVirtualServer(vs.clone()), ErrorKind::Exists),
                1 => (
                    Operation::AddRealServer(tcp("10.20.0.1", 80), reals[0]),
                    ErrorKind::NoSuchVirtualServer,
                ),
                2 => (
                    Operation::DeleteRealServer(
                        id,
                        RealServerId {
                            addr: addr("10.99.0.1"),
                            port: 1,
                        },
                    ),
                    ErrorKind::NotFound,
                ),
                3 => (
                    Operation::AddVirtualServer(VirtualServer::new(
                        tcp("10.30.0.1", 80),
                        "nosuchsched",
                    )),
                    ErrorKind::NotFound,
                ),
                _ => (
                    Operation::AddRealServer(id, RealServer::new(addr("10.99.0.2"), 1, u32::MAX)),
                    ErrorKind::OutOfRange,
                ),
            };
            // Put the failure in the middle of this virtual server's real servers.
            ops.insert(ops.len() - 4, (failing.0, Some(failing.1)));
            spec.push((vs, reals));
        }
        assert_eq!(ops.len(), 1000);
        let just_ops: Vec<Operation> = ops.iter().map(|(op, _)| op.clone()).collect();
        let results = c.apply(&just_ops).await.unwrap();
        assert_eq!(results.len(), 1000);
        for (n, ((op, want), got)) in ops.iter().zip(&results).enumerate() {
            match (want, got) {
                (None, Ok(())) => {}
                (Some(kind), Err(e)) => assert_eq!(e.kind(), *kind, "op {n} ({op}): {e}"),
                (want, got) => panic!("op {n} ({op}): wanted {want:?}, got {got:?}"),
            }
        }
        assert_eq!(config_of(&c.table().await.unwrap()), sorted(spec.clone()));
        // The kernel agrees independently.
        let saved = integration::ipvsadm(&["-Sn"]).unwrap();
        assert_eq!(saved.lines().filter(|l| l.starts_with("-A")).count(), 100);
        assert_eq!(saved.lines().filter(|l| l.starts_with("-a")).count(), 800);
    });
}
