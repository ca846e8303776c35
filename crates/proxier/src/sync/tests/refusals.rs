//! Kernel refusals that show the record wrong: read back and planned again, not failures that
//! repeat until the next whole read (see `sync::refusals`).

use super::*;

fn real(addr: &str) -> RealServer {
    RealServer::new(addr.parse().unwrap(), 8080, 1)
}

/// Someone else made a wanted virtual server first (another scheduler, a real server not
/// wanted): the add is refused, the next sync reads it back, takes it over and corrects it.
/// Before, the add failed every retry until the next whole read.
#[tokio::test]
async fn a_virtual_server_made_behind_the_record_is_read_back_and_corrected() {
    let kernel = MemoryKernel::default();
    let shared = cluster(1);
    listed(&shared);
    let mut sync = sync_loop(&kernel, shared.clone());
    sync.sync(true).await;
    let web = tcp("10.96.0.7");
    let (stray, wanted) = (real("10.244.9.9"), real("10.244.1.1"));
    kernel
        .mem()
        .services
        .insert(web, (VirtualServer::new(web, "wrr"), [(stray.id, stray), (wanted.id, wanted)].into()));
    shared.feed(Update::Service(Change::Apply(service("web", "10.96.0.7"))));
    shared.feed(Update::EndpointSlice(Change::Apply(slice("web", &["10.244.1.1", "10.244.1.2"]))));
    kernel.writes();

    let refused = sync.sync(false).await;
    assert_eq!((refused.failed, refused.read_failures), (0, 0), "{refused}");
    let corrected = sync.sync(false).await;
    assert_eq!((corrected.failed, corrected.read_failures), (0, 0), "{corrected}");
    let (server, reals) = kernel.mem().services[&web].clone();
    assert_eq!(server.scheduler.as_str(), "rr");
    let addrs: Vec<String> = reals.keys().map(|id| id.addr.to_string()).collect();
    assert_eq!(addrs, ["10.244.1.1", "10.244.1.2"]);
    assert!(sync.observed.is_ours(&web), "taken over: deleted with its Service");
    kernel.writes();
    let settled = sync.sync(false).await;
    assert_eq!(settled.plan_steps, 0, "{settled}");
}

/// A real server or virtual server someone else deleted, that the cluster no longer wants
/// either: the delete (or the drain before it) reaches its goal without failing.
#[tokio::test]
async fn removals_of_what_someone_else_removed_are_no_failures() {
    let kernel = MemoryKernel::default();
    let shared = cluster(2);
    listed(&shared);
    let mut sync = sync_loop(&kernel, shared.clone());
    sync.sync(true).await;
    let (svc0, svc1) = (tcp("10.96.0.1"), tcp("10.96.0.2"));
    {
        let mut m = kernel.mem();
        m.services.get_mut(&svc0).unwrap().1.remove(&real("10.244.1.2").id);
        m.services.remove(&svc1);
    }
    shared.feed(Update::EndpointSlice(Change::Apply(slice("svc0", &["10.244.1.1"]))));
    shared.feed(Update::Service(Change::Delete(service("svc1", "10.96.0.2"))));
    kernel.writes();

    for n in 0..2 {
        let report = sync.sync(false).await;
        assert_eq!((report.failed, report.read_failures), (0, 0), "sync {n}: {report}");
    }
    let addrs: Vec<String> = kernel.mem().services[&svc0].1.keys().map(|id| id.addr.to_string()).collect();
    assert_eq!(addrs, ["10.244.1.1"]);
    assert!(!kernel.mem().services.contains_key(&svc1));
    let settled = sync.sync(false).await;
    assert_eq!(settled.plan_steps, 0, "{settled}");
}
