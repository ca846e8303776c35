//! The image is what runs (issue 9): the OCI archive `image/build` writes is unpacked with
//! Debian's `umoci` and the daemon runs from its root file system (chroot), with kubeadm's
//! command line (`/usr/local/bin/kube-proxy --config=... --hostname-override=...`) and kubeadm's
//! KubeProxyConfiguration, serving a Service end to end: nothing but what the image holds
//! (the binary, `nft`, their libraries) is used.

mod daemon_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use daemon_support::*;
use integration::{in_netns, run};

const PATIENCE: Duration = Duration::from_secs(60);

/// The archive `image/build` writes.
fn archive() -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/image/kube-ipvs-proxy.oci.tar");
    assert!(path.exists(), "{} is missing: run image/build first (the README's test command does)", path.display());
    path
}

/// The `PATH` the image's configuration sets (umoci writes it into the bundle's config.json).
fn image_path(bundle: &std::path::Path) -> String {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap();
    let env = config["process"]["env"].as_array().expect("the image sets an environment");
    let path = env.iter().filter_map(|e| e.as_str()?.strip_prefix("PATH=")).next();
    path.expect("the image sets PATH").to_string()
}

#[test]
#[ignore = "needs the VM kernel: run integration/test"]
fn the_image_serves_a_service_with_kubeadms_command_line_and_configuration() {
    in_netns(|| async {
        let (b1, cluster) = web_with_one_backend();
        // Unpacked where the VM can write (its /tmp is a tmpfs).
        let dir = std::env::temp_dir().join(format!("kip-image-{}", std::process::id()));
        let layout = dir.join("layout");
        std::fs::create_dir_all(&layout).unwrap();
        run("tar", &["-xf", archive().to_str().unwrap(), "-C", layout.to_str().unwrap()], None).unwrap();
        let image = format!("{}:kube-ipvs-proxy:0.1.0", layout.display());
        let bundle = dir.join("bundle");
        run("umoci", &["unpack", "--image", &image, bundle.to_str().unwrap()], None).unwrap();
        let rootfs = bundle.join("rootfs");
        // Exactly the binary, its kube-proxy name, nft and libraries: no shell.
        assert!(!rootfs.join("bin/sh").exists() && !rootfs.join("usr/bin/sh").exists(), "a shell in the image");
        assert_eq!(
            std::fs::read_link(rootfs.join("usr/local/bin/kube-proxy")).unwrap().to_str(),
            Some("kube-ipvs-proxy")
        );

        // What kubeadm's DaemonSet mounts: the ConfigMap at /var/lib/kube-proxy, /proc.
        let config = rootfs.join("var/lib/kube-proxy");
        std::fs::create_dir_all(&config).unwrap();
        let kubeadm =
            concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/kube-ipvs-proxy/tests/fixtures/kubeadm-config.conf");
        std::fs::copy(kubeadm, config.join("config.conf")).unwrap();
        // Its kubeconfig names the service account's CA and token, mounted where pods get them.
        let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
        let kubeconfig = cluster
            .kubeconfig_under(&rootfs, &format!("{sa}/ca.crt"), &format!("{sa}/token"))
            .expect("the cluster speaks HTTPS");
        std::fs::write(config.join("kubeconfig.conf"), kubeconfig).unwrap();
        std::fs::create_dir_all(rootfs.join("proc")).unwrap();
        run("mount", &["-t", "proc", "proc", rootfs.join("proc").to_str().unwrap()], None).unwrap();
        let log = dir.join("daemon.log");
        let mut daemon = Command::new("/usr/sbin/chroot")
            .arg(&rootfs)
            .args([
                "/usr/local/bin/kube-proxy",
                "--config=/var/lib/kube-proxy/config.conf",
                "--hostname-override=node-a",
            ])
            // What a container runtime gives it: the image's environment (its PATH) and no more.
            .env_clear()
            .env("PATH", image_path(&bundle))
            .env("KUBE_IPVS_PROXY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually("web programmed by the image's daemon", PATIENCE, || {
                (serving_reals("TCP  10.96.0.10:80")? == reals(&[&b1])).then_some(())
            });
            // nft from the image made the table, then its elements went in one batch (after
            // the IPVS entries, which are added while the lists arrive).
            let element = "get element inet kube-ipvs-proxy service_ports_v4 { 10.96.0.10 . tcp . 80 }\n";
            eventually("the table and its elements", PATIENCE, || {
                run("nft", &["-f", "-"], Some(element)).ok().map(|_| ())
            });
            assert_eq!(ask_many(&format!("{NODE_IP}:30080"), 1), ["b1"]);
        }));
        let _ = daemon.kill();
        let _ = daemon.wait();
        let _ = run("umount", &[rootfs.join("proc").to_str().unwrap()], None);
        if let Err(panic) = served {
            eprintln!("---- daemon log ----\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            std::panic::resume_unwind(panic);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
