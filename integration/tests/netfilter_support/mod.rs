//! Namespaces for the netfilter tests: a peer (a pod or an outside client) behind a veth pair,
//! running jobs inside its namespace, and a TCP server that answers with the caller's address.
#![allow(dead_code)]

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use integration::ip;

type Job = Box<dyn FnOnce() + Send>;

/// A network namespace behind the veth pair `kipn<index>` (caller's side) / `kipn<index>p`.
/// The caller's side holds `<v4>.<index>.1/24` and `fd00:<v6>:<index>::1/64`; the peer holds
/// `.2` / `::2` with default routes through them. Jobs run on a thread inside it.
pub struct Peer {
    index: u8,
    v4: [u8; 2],
    v6: u16,
    jobs: Option<mpsc::Sender<Job>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Peer {
    /// A pod: `10.244.<index>.2`, `fd00:244:<index>::2` (inside the cluster prefixes the tests use).
    pub fn pod(index: u8) -> Peer {
        Peer::start(index, [10, 244], 0x244)
    }

    /// An outside client: `192.168.<index>.2`, `fd00:168:<index>::2`.
    pub fn client(index: u8) -> Peer {
        Peer::start(index, [192, 168], 0x168)
    }

    fn start(index: u8, v4: [u8; 2], v6: u16) -> Peer {
        let near = format!("kipn{index}");
        let far = format!("kipn{index}p");
        let (n4, n6) = (format!("{}.{}.{index}", v4[0], v4[1]), format!("fd00:{v6:x}:{index}"));
        ip(&["link", "add", &near, "type", "veth", "peer", "name", &far]).unwrap();
        ip(&["addr", "add", &format!("{n4}.1/24"), "dev", &near]).unwrap();
        ip(&["addr", "add", &format!("{n6}::1/64"), "dev", &near, "nodad"]).unwrap();
        ip(&["link", "set", &near, "up"]).unwrap();
        let (tid_tx, tid_rx) = mpsc::channel::<i32>();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            // SAFETY: no pointers; moves only this thread into a new namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            for job in jobs_rx {
                job();
            }
        });
        let tid = tid_rx.recv().unwrap();
        ip(&["link", "set", &far, "netns", &tid.to_string()]).unwrap();
        let peer =
            Peer { index, v4, v6, jobs: Some(jobs_tx), stop: Arc::new(AtomicBool::new(false)), thread: Some(thread) };
        peer.run(move || {
            ip(&["link", "set", "lo", "up"]).unwrap();
            ip(&["addr", "add", &format!("{n4}.2/24"), "dev", &far]).unwrap();
            ip(&["addr", "add", &format!("{n6}::2/64"), "dev", &far, "nodad"]).unwrap();
            ip(&["link", "set", &far, "up"]).unwrap();
            ip(&["route", "add", "default", "via", &format!("{n4}.1")]).unwrap();
            ip(&["-6", "route", "add", "default", "via", &format!("{n6}::1")]).unwrap();
        });
        peer
    }

    /// The peer's address of `family_v6`'s family.
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, self.v6, u16::from(self.index), 0, 0, 0, 0, 2))
        } else {
            IpAddr::V4(Ipv4Addr::new(self.v4[0], self.v4[1], self.index, 2))
        }
    }

    /// The caller's (the node's) address on the link to this peer.
    pub fn gateway(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, self.v6, u16::from(self.index), 0, 0, 0, 0, 1))
        } else {
            IpAddr::V4(Ipv4Addr::new(self.v4[0], self.v4[1], self.index, 1))
        }
    }

    /// Runs `job` inside the peer's namespace and returns its result.
    pub fn run<R: Send + 'static>(&self, job: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        let jobs = self.jobs.as_ref().unwrap();
        jobs.send(Box::new(move || {
            let _ = tx.send(job());
        }))
        .unwrap();
        rx.recv().expect("the peer's job panicked")
    }

    /// Serves TCP `port` inside the peer until it is dropped, answering each connection with
    /// the address it came from (see [`serve_source`]).
    pub fn serve_source(&self, port: u16) {
        let stop = self.stop.clone();
        self.run(move || {
            let listener = TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).unwrap();
            std::thread::spawn(move || serve_source(listener, &stop));
        });
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers each connection on `listener` with the source address it sees, canonical (an IPv4
/// client of the dual-stack socket as `a.b.c.d`), until `stop`.
pub fn serve_source(listener: TcpListener, stop: &AtomicBool) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut stream, from)) => {
                let _ = stream.set_nonblocking(false);
                let _ = writeln!(stream, "{}", from.ip().to_canonical());
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
