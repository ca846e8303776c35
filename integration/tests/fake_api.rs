//! The fake API server driven by the real `kube::Client` and `kube::runtime::watcher`: what the
//! daemon will see. Needs no VM.

use std::time::Duration;

use futures::StreamExt;
use integration::fake_api::{FakeApiConfig, FakeApiServer, Grants, Kind};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const PROXY_SELECTOR: &str = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
const PATIENCE: Duration = Duration::from_secs(20);

async fn server(config: FakeApiConfig) -> (FakeApiServer, Client) {
    let server = FakeApiServer::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let client = Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    (server, client)
}

fn service(namespace: &str, name: &str, labels: Value, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": port, "protocol": "TCP"}]},
    })
}

fn slice(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    })
}

/// Next watcher event, failing the test instead of hanging.
async fn next<S, T>(stream: &mut S) -> T
where
    S: futures::Stream<Item = T> + Unpin,
{
    tokio::time::timeout(PATIENCE, stream.next()).await.expect("no event in time").expect("stream ended")
}

/// Drives a watcher through its initial list; returns the names it listed.
async fn initial_names<K, S>(stream: &mut S) -> Vec<String>
where
    K: kube::Resource,
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    let mut names = Vec::new();
    loop {
        match next(stream).await.unwrap() {
            Event::Init => names.clear(),
            Event::InitApply(object) => names.push(object.name_any()),
            Event::InitDone => return names,
            other => panic!("unexpected event before the list ended: {:?}", std::mem::discriminant(&other)),
        }
    }
}

#[tokio::test]
async fn lists_honour_selectors_and_namespaces() {
    let (server, client) = server(FakeApiConfig::default()).await;
    for object in [
        service("default", "web", json!({"app": "web"}), 80),
        service("default", "other-proxy", json!({"service.kubernetes.io/service-proxy-name": "x"}), 80),
        service("kube-system", "dns", json!({"app": "dns"}), 53),
        service("default", "headless", json!({"service.kubernetes.io/headless": ""}), 80),
    ] {
        server.apply(object).unwrap();
    }
    let all: Api<Service> = Api::all(client.clone());
    let kube_system: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let cases: &[(&Api<Service>, &str, &[&str])] = &[
        (&all, "", &["web", "other-proxy", "headless", "dns"]),
        (&all, PROXY_SELECTOR, &["web", "dns"]),
        (&all, "app=web", &["web"]),
        (&all, "app in (dns,web)", &["web", "dns"]),
        (&kube_system, "", &["dns"]),
        (&kube_system, "app=web", &[]),
    ];
    for (api, selector, expected) in cases {
        let list = api.list(&ListParams::default().labels(selector)).await.unwrap();
        let mut names: Vec<String> = list.items.iter().map(|s| s.name_any()).collect();
        let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        names.sort();
        expected.sort();
        assert_eq!(names, expected, "selector {selector:?}");
        assert_eq!(list.metadata.resource_version, Some(server.resource_version().to_string()));
    }
    let bad = all.list(&ListParams::default().labels("app in web")).await.unwrap_err();
    assert!(matches!(bad, kube::Error::Api(ref s) if s.code == 400), "{bad:?}");
}

#[tokio::test]
async fn watcher_pages_through_a_large_initial_list() {
    let (server, client) = server(FakeApiConfig::default()).await;
    let slices: Vec<Value> = (0..1234).map(|i| slice(&format!("web-{i:05}"), "10.244.0.2")).collect();
    let text = serde_json::to_string(&json!({"kind": "List", "items": slices})).unwrap();
    assert_eq!(server.apply_text(&text).unwrap().len(), 1234);
    let before = server.requests().lists;
    let api: Api<EndpointSlice> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default().labels(PROXY_SELECTOR)).boxed();
    let names = initial_names(&mut stream).await;
    assert_eq!(names.len(), 1234);
    assert_eq!(names.iter().collect::<std::collections::BTreeSet<_>>().len(), 1234, "a name came twice");
    assert_eq!(server.requests().lists - before, 3, "page size 500: three pages");
}

#[tokio::test]
async fn watcher_follows_additions_changes_and_deletions() {
    let (server, client) = server(FakeApiConfig::default()).await;
    server.apply(service("default", "web", json!({}), 80)).unwrap();
    let api: Api<Service> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default().labels(PROXY_SELECTOR)).boxed();
    assert_eq!(initial_names(&mut stream).await, ["web"]);

    let proxied_elsewhere = json!({"service.kubernetes.io/service-proxy-name": "other"});
    // (object to apply, or None to delete `name`; expected event; name; expected port)
    let steps: Vec<(Option<Value>, &str, &str, Option<i32>)> = vec![
        (Some(service("default", "db", json!({}), 5432)), "apply", "db", Some(5432)),
        (Some(service("default", "web", json!({}), 81)), "apply", "web", Some(81)),
        (None, "delete", "db", None),
        // Leaving the selection looks like a deletion to the watch, entering it like an addition.
        (Some(service("default", "web", proxied_elsewhere, 81)), "delete", "web", None),
        (Some(service("default", "web", json!({}), 82)), "apply", "web", Some(82)),
    ];
    for (change, kind, name, port) in steps {
        match change {
            Some(object) => assert_ne!(server.apply(object).unwrap().outcome, "unchanged"),
            None => assert!(server.delete(Kind::Service, "default", name).is_ok()),
        }
        let (seen_kind, object) = match next(&mut stream).await.unwrap() {
            Event::Apply(object) => ("apply", object),
            Event::Delete(object) => ("delete", object),
            _ => panic!("unexpected event after the list"),
        };
        assert_eq!((seen_kind, object.name_any().as_str()), (kind, name));
        if let Some(port) = port {
            let ports = object.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
            assert_eq!(ports.first().map(|p| p.port), Some(port));
        }
        assert_eq!(object.resource_version(), Some(server.resource_version().to_string()));
    }
}

#[tokio::test]
async fn idle_watches_get_bookmarks_at_the_current_version() {
    let config = FakeApiConfig { bookmark_interval: Duration::from_millis(50), ..FakeApiConfig::default() };
    let (server, client) = server(config).await;
    server.apply(service("default", "web", json!({}), 80)).unwrap();
    let version = server.resource_version().to_string();
    let api: Api<Service> = Api::all(client);
    let mut events = api.watch(&WatchParams::default(), &version).await.unwrap().boxed();
    match next(&mut events).await.unwrap() {
        WatchEvent::Bookmark(bookmark) => assert_eq!(bookmark.metadata.resource_version, version),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    let mut quiet = api.watch(&WatchParams::default().disable_bookmarks().timeout(1), &version).await.unwrap().boxed();
    let first = tokio::time::timeout(PATIENCE, quiet.next()).await.unwrap();
    assert!(first.is_none(), "a watch without bookmarks stays silent until its timeout ends it");
}

#[tokio::test]
async fn watches_from_version_zero_start_with_the_current_objects() {
    let (server, client) = server(FakeApiConfig::default()).await;
    for name in ["a", "b"] {
        server.apply(service("default", name, json!({}), 80)).unwrap();
    }
    let api: Api<Service> = Api::all(client);
    let mut events = api.watch(&WatchParams::default().disable_bookmarks(), "0").await.unwrap().boxed();
    for expected in ["a", "b"] {
        match next(&mut events).await.unwrap() {
            WatchEvent::Added(object) => assert_eq!(object.name_any(), expected),
            other => panic!("expected ADDED {expected}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn compaction_makes_watchers_relist() {
    let (server, client) = server(FakeApiConfig::default()).await;
    server.apply(service("default", "web", json!({}), 80)).unwrap();
    let old_version = server.resource_version().to_string();
    let api: Api<Service> = Api::all(client);
    let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    assert_eq!(initial_names(&mut stream).await, ["web"]);
    let lists = server.requests().lists;

    server.apply(service("default", "db", json!({}), 5432)).unwrap();
    assert!(matches!(next(&mut stream).await, Ok(Event::Apply(_))));
    server.compact();
    match next(&mut stream).await {
        Err(watcher::Error::WatchError(status)) => assert_eq!((status.code, status.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 watch error, got {:?}", other.map(|e| std::mem::discriminant(&e))),
    }
    let mut relisted = initial_names(&mut stream).await;
    relisted.sort();
    assert_eq!(relisted, ["db", "web"]);
    assert_eq!(server.requests().lists, lists + 1, "one relist");

    // A plain watch from a version older than the history gets the same ERROR event.
    let mut events = api.watch(&WatchParams::default(), &old_version).await.unwrap().boxed();
    match next(&mut events).await.unwrap() {
        WatchEvent::Error(status) => assert_eq!((status.code, status.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn hung_up_watches_resume_without_relisting() {
    let (server, client) = server(FakeApiConfig::default()).await;
    let api: Api<Service> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    assert!(initial_names(&mut stream).await.is_empty());
    let lists = server.requests().lists;
    server.hang_up_watches();
    server.apply(service("default", "web", json!({}), 80)).unwrap();
    assert!(matches!(next(&mut stream).await, Ok(Event::Apply(s)) if s.name_any() == "web"));
    assert_eq!(server.requests().lists, lists);
}

#[tokio::test]
async fn node_watch_by_field_selector_sees_only_its_node() {
    let (server, client) = server(FakeApiConfig::default()).await;
    let node = |name: &str, zone: &str| {
        json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}})
    };
    server.apply_text(&format!("{}\n---\n{}", node("node-a", "z1"), node("node-b", "z1"))).unwrap();
    let api: Api<Node> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default().fields("metadata.name=node-a")).boxed();
    assert_eq!(initial_names(&mut stream).await, ["node-a"]);
    server.apply(node("node-b", "z2")).unwrap();
    server.apply(node("node-a", "z2")).unwrap();
    match next(&mut stream).await.unwrap() {
        Event::Apply(node) => assert_eq!(
            (node.name_any(), node.labels()["topology.kubernetes.io/zone"].as_str()),
            ("node-a".into(), "z2")
        ),
        _ => panic!("expected node-a's change"),
    }
}

#[tokio::test]
async fn a_stopped_server_refuses_and_comes_back_with_its_state() {
    let (mut server, client) = server(FakeApiConfig::default()).await;
    server.apply(service("default", "web", json!({}), 80)).unwrap();
    let api: Api<Service> = Api::all(client);
    let version = api.list(&ListParams::default()).await.unwrap().metadata.resource_version;
    server.stop().await;
    assert!(api.list(&ListParams::default()).await.is_err(), "a stopped server answered");
    server.resume().await.unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!((list.items.len(), list.metadata.resource_version), (1, version));
}

#[tokio::test]
async fn control_api_applies_and_deletes_over_http() {
    use axum::http::Request;
    let (server, client) = server(FakeApiConfig::default()).await;
    let yaml = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n---\n\
                apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: prod\nspec: {}\n";
    let post = |path: &str, body: &str| Request::post(path).body(body.as_bytes().to_vec()).unwrap();
    let applied: Value = client.request(post("/fake/apply", yaml)).await.unwrap();
    assert_eq!(applied[1]["outcome"], "created");
    assert_eq!(applied[1]["namespace"], "prod");
    let again: Value = client.request(post("/fake/apply", yaml)).await.unwrap();
    assert_eq!(again[0]["outcome"], "unchanged");
    let refused = client.request_text(post("/fake/apply", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")).await;
    assert!(matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 400), "{refused:?}");

    let delete = |path: &str| Request::delete(path).body(Vec::new()).unwrap();
    client.request_text(delete("/fake/objects/services/prod/web")).await.unwrap();
    client.request_text(delete("/fake/objects/node/n1")).await.unwrap();
    let missing = client.request_text(delete("/fake/objects/services/prod/web")).await;
    assert!(matches!(missing, Err(kube::Error::Api(ref s)) if s.code == 404), "{missing:?}");
    let services: Api<Service> = Api::all(client.clone());
    assert!(services.list(&ListParams::default()).await.unwrap().items.is_empty());
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let _ = server;
}

#[tokio::test]
async fn stale_continue_tokens_expire() {
    let (server, client) = server(FakeApiConfig::default()).await;
    for i in 0..3 {
        server.apply(service("default", &format!("s{i}"), json!({}), 80)).unwrap();
    }
    let api: Api<Service> = Api::all(client);
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().unwrap();
    server.compact();
    let stale = api.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap_err();
    assert!(matches!(stale, kube::Error::Api(ref s) if s.code == 410), "{stale:?}");
}

/// Held, the continuation of a paginated list waits (the first page is answered) until let go.
#[tokio::test]
async fn continued_lists_wait_while_held() {
    let (server, client) = server(FakeApiConfig::default()).await;
    for i in 0..3 {
        server.apply(service("default", &format!("s{i}"), json!({}), 80)).unwrap();
    }
    server.hold_continued_lists(true);
    let api: Api<Service> = Api::all(client);
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2, "the first page is not held");
    let token = first.metadata.continue_.clone().unwrap();
    let rest = tokio::spawn(async move { api.list(&ListParams::default().limit(2).continue_token(&token)).await });
    while server.requests().held_lists == 0 {
        tokio::task::yield_now().await;
    }
    assert!(!rest.is_finished());
    server.hold_continued_lists(false);
    let rest = rest.await.unwrap().unwrap();
    assert_eq!(rest.items.iter().map(|s| s.name_any()).collect::<Vec<_>>(), ["s2"]);
    assert_eq!(server.requests().held_lists, 0);
}

#[tokio::test]
async fn the_demo_manifest_is_served_as_typed_objects() {
    let (server, client) = server(FakeApiConfig::default()).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/examples/demo.yaml");
    server.apply_text(&std::fs::read_to_string(path).unwrap()).unwrap();
    let services = Api::<Service>::all(client.clone()).list(&ListParams::default()).await.unwrap();
    let slices = Api::<EndpointSlice>::all(client.clone()).list(&ListParams::default()).await.unwrap();
    let nodes = Api::<Node>::all(client).list(&ListParams::default()).await.unwrap();
    assert_eq!((services.items.len(), slices.items.len(), nodes.items.len()), (7, 7, 1));
    for slice in &slices.items {
        let owner = slice.labels().get("kubernetes.io/service-name").unwrap();
        assert!(services.items.iter().any(|s| &s.name_any() == owner), "{owner} has no Service");
    }
}

#[tokio::test]
async fn streaming_lists_end_their_initial_events_with_the_annotated_bookmark() {
    let (server, client) = server(FakeApiConfig::default()).await;
    for name in ["a", "b"] {
        server.apply(service("default", name, json!({}), 80)).unwrap();
    }
    let api: Api<Service> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default().streaming_lists()).boxed();
    assert_eq!(initial_names(&mut stream).await, ["a", "b"]);
    assert_eq!(server.requests().lists, 0, "a streaming list needs no list request");
    server.apply(service("default", "c", json!({}), 80)).unwrap();
    assert!(matches!(next(&mut stream).await, Ok(Event::Apply(s)) if s.name_any() == "c"));
}

/// With the manifests' RBAC, the fake server refuses what a real cluster would refuse the
/// daemon (403 Forbidden) and serves what it grants: lists and watches, not gets or writes.
#[tokio::test]
async fn rbac_of_the_manifests_is_enforced() {
    let rbac = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/rbac.yaml")).unwrap();
    let config = FakeApiConfig { rbac: Some(Grants::from_yaml(&rbac).unwrap()), ..FakeApiConfig::default() };
    let (server, client) = server(config).await;
    server.apply(service("default", "web", json!({}), 80)).unwrap();
    let services: Api<Service> = Api::all(client.clone());
    assert_eq!(services.list(&ListParams::default()).await.unwrap().items.len(), 1);
    let mut stream = watcher::watcher(services, watcher::Config::default()).boxed();
    assert_eq!(initial_names(&mut stream).await, ["web"]);

    let forbidden = |result: Result<_, kube::Error>| match result {
        Err(kube::Error::Api(status)) => status.code == 403 && status.reason == "Forbidden",
        _ => false,
    };
    let namespaced: Api<Service> = Api::namespaced(client.clone(), "default");
    assert!(forbidden(namespaced.get("web").await.map(|_| ())), "get is not granted");
    let nodes: Api<Node> = Api::all(client.clone());
    assert!(forbidden(nodes.delete("node-a", &Default::default()).await.map(|_| ())), "delete is not granted");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, "default");
    let event = serde_json::from_value(json!({"metadata": {"name": "e"}, "involvedObject": {}})).unwrap();
    assert!(forbidden(events.create(&Default::default(), &event).await.map(|_| ())), "no Events are granted");
}

/// A kubeconfig as kubeadm writes for kube-proxy: the server's CA and the service account's
/// token as files, the control-plane endpoint as the server.
fn kubeadm_style_kubeconfig(dir: &std::path::Path, server: &str, ca_pem: &str, token: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
    std::fs::write(dir.join("token"), token).unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    certificate-authority: {}\n    server: {server}\n\
         contexts:\n- name: default\n  context:\n    cluster: default\n    namespace: default\n    user: default\n\
         current-context: default\nusers:\n- name: default\n  user:\n    tokenFile: {}\n",
        dir.join("ca.crt").display(),
        dir.join("token").display()
    );
    let path = dir.join("kubeconfig.conf");
    std::fs::write(&path, kubeconfig).unwrap();
    path
}

async fn client_from(path: &std::path::Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// With a TLS identity the server speaks HTTPS with its own CA and wants the bearer token, as a
/// real API server behind kubeadm's kube-proxy kubeconfig: such a client lists; a client with
/// another token gets 401, one that does not trust the CA cannot connect.
#[tokio::test]
async fn tls_and_a_bearer_token_as_a_kubeadm_kubeconfig_expects() {
    let identity = integration::fake_api::TlsIdentity::new("127.0.0.1".parse().unwrap(), "s3cret").unwrap();
    let config = FakeApiConfig { tls: Some(identity.clone()), ..FakeApiConfig::default() };
    let (server, _) = server(config).await;
    server.apply_text("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n").unwrap();
    assert!(server.url().starts_with("https://"), "{}", server.url());
    let dir = std::env::temp_dir().join(format!("fake-api-tls-{}", std::process::id()));

    let good = kubeadm_style_kubeconfig(&dir.join("good"), &server.url(), identity.ca_pem(), "s3cret");
    let nodes = Api::<Node>::all(client_from(&good).await).list(&ListParams::default()).await.unwrap();
    assert_eq!(nodes.items.len(), 1);

    let wrong = kubeadm_style_kubeconfig(&dir.join("wrong"), &server.url(), identity.ca_pem(), "guess");
    let refused = Api::<Node>::all(client_from(&wrong).await).list(&ListParams::default()).await.unwrap_err();
    assert!(matches!(&refused, kube::Error::Api(s) if s.code == 401), "{refused:?}");

    let other_ca = integration::fake_api::TlsIdentity::new("127.0.0.1".parse().unwrap(), "s3cret").unwrap();
    let untrusted = kubeadm_style_kubeconfig(&dir.join("untrusted"), &server.url(), other_ca.ca_pem(), "s3cret");
    assert!(Api::<Node>::all(client_from(&untrusted).await).list(&ListParams::default()).await.is_err());
    let _ = std::fs::remove_dir_all(dir);
}
