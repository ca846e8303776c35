//! Backends: network namespaces behind veth pairs, each serving a TCP and a UDP port with its
//! own name.
//!
//! A backend stands in for a pod: it has its own namespace and address, reachable from the
//! test's namespace only through the veth pair, so traffic that reaches it really went through
//! the kernel's forwarding (and IPVS, when the test sends it to a virtual server).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::command::{CommandError, ip};

/// A backend that could not be set up; names the backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Creating or configuring its links failed.
    #[error("backend {name}: {source}")]
    Link {
        /// The backend's name.
        name: String,
        /// The failing `ip` command.
        #[source]
        source: CommandError,
    },
    /// Its namespace, thread or listener could not be made.
    #[error("backend {name}: {source}")]
    Io {
        /// The backend's name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A running backend; stops serving and its namespace (with the veth pair) goes away on drop.
#[derive(Debug)]
pub struct Backend {
    name: String,
    index: u8,
    port: u16,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// Starts backend number `index` (1 to 254) named `name`, serving TCP `port` on
    /// `10.244.<index>.2` and `fd00:244:<index>::2`, answering each connection with its name
    /// and a newline, and UDP `port`, answering each datagram with its name, a space and the
    /// datagram's source address (so that a test sees whether it was masqueraded). Its veth peer in the caller's namespace is `kipb<index>`, holding
    /// `10.244.<index>.1/24` and `fd00:244:<index>::1/64`, the backend's default gateways.
    ///
    /// Must be called on a thread inside the test's namespace (see [`crate::in_netns`]).
    pub fn start(name: &str, index: u8, port: u16) -> Result<Backend, BackendError> {
        Backend::start_serving(name, index, port, false)
    }

    /// As [`Backend::start`], but each connection stays open after the name line: every line
    /// the client sends is echoed back until the client closes, so a test can hold a long
    /// connection through a virtual server and check that it still carries traffic.
    pub fn start_holding(name: &str, index: u8, port: u16) -> Result<Backend, BackendError> {
        Backend::start_serving(name, index, port, true)
    }

    fn start_serving(name: &str, index: u8, port: u16, hold: bool) -> Result<Backend, BackendError> {
        let link_error = |source| BackendError::Link { name: name.to_string(), source };
        let io_error = |source| BackendError::Io { name: name.to_string(), source };
        let near = format!("kipb{index}");
        let far = format!("kipb{index}p");
        ip(&["link", "add", &near, "type", "veth", "peer", "name", &far]).map_err(link_error)?;
        ip(&["addr", "add", &format!("10.244.{index}.1/24"), "dev", &near]).map_err(link_error)?;
        ip(&["addr", "add", &format!("fd00:244:{index}::1/64"), "dev", &near, "nodad"]).map_err(link_error)?;
        ip(&["link", "set", &near, "up"]).map_err(link_error)?;

        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (tid_tx, tid_rx) = mpsc::channel::<io::Result<i32>>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), BackendError>>();
        let thread = {
            let (name, stop, served, far) = (name.to_string(), stop.clone(), served.clone(), far.clone());
            std::thread::Builder::new()
                .name(format!("backend-{name}"))
                .spawn(move || {
                    // SAFETY: no pointers; moves only this thread to a new namespace.
                    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                        let _ = tid_tx.send(Err(io::Error::last_os_error()));
                        return;
                    }
                    // SAFETY: gettid has no preconditions.
                    let _ = tid_tx.send(Ok(unsafe { libc::gettid() }));
                    if go_rx.recv().is_err() {
                        return;
                    }
                    match configure(&name, index, &far, port) {
                        Ok((listener, udp)) => {
                            let _ = ready_tx.send(Ok(()));
                            serve(&name, listener, &udp, &stop, &served, hold);
                        }
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                        }
                    }
                })
                .map_err(io_error)?
        };
        let backend = Backend { name: name.to_string(), index, port, stop, served, thread: Some(thread) };
        let tid =
            tid_rx.recv().map_err(|_| io_error(io::Error::other("backend thread ended early")))?.map_err(io_error)?;
        // A thread id names the thread's namespace for `ip link set ... netns`.
        ip(&["link", "set", &far, "netns", &tid.to_string()]).map_err(link_error)?;
        go_tx.send(()).map_err(|_| io_error(io::Error::other("backend thread ended early")))?;
        ready_rx.recv().map_err(|_| io_error(io::Error::other("backend thread ended early")))??;
        Ok(backend)
    }

    /// The backend's name, what it answers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its IPv4 address, `10.244.<index>.2`.
    pub fn addr_v4(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 244, self.index, 2))
    }

    /// Its IPv6 address, `fd00:244:<index>::2`.
    pub fn addr_v6(&self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x244, u16::from(self.index), 0, 0, 0, 0, 2))
    }

    /// The TCP port it serves.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections and datagrams it has answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Inside the backend's namespace: addresses, routes, the listener and the UDP socket.
fn configure(name: &str, index: u8, link: &str, port: u16) -> Result<(TcpListener, UdpSocket), BackendError> {
    let link_error = |source| BackendError::Link { name: name.to_string(), source };
    ip(&["link", "set", "lo", "up"]).map_err(link_error)?;
    ip(&["addr", "add", &format!("10.244.{index}.2/24"), "dev", link]).map_err(link_error)?;
    ip(&["addr", "add", &format!("fd00:244:{index}::2/64"), "dev", link, "nodad"]).map_err(link_error)?;
    ip(&["link", "set", link, "up"]).map_err(link_error)?;
    ip(&["route", "add", "default", "via", &format!("10.244.{index}.1")]).map_err(link_error)?;
    ip(&["-6", "route", "add", "default", "via", &format!("fd00:244:{index}::1")]).map_err(link_error)?;
    let io_error = |source| BackendError::Io { name: name.to_string(), source };
    let listener = TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).map_err(io_error)?;
    // Polling lets drop stop the loop without a connection from inside this namespace.
    listener.set_nonblocking(true).map_err(io_error)?;
    let udp = UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).map_err(io_error)?;
    udp.set_nonblocking(true).map_err(io_error)?;
    Ok((listener, udp))
}

fn serve(name: &str, listener: TcpListener, udp: &UdpSocket, stop: &AtomicBool, served: &AtomicU64, hold: bool) {
    let answer = format!("{name}\n");
    let mut datagram = [0u8; 512];
    while !stop.load(Ordering::SeqCst) {
        while let Ok((_, from)) = udp.recv_from(&mut datagram) {
            served.fetch_add(1, Ordering::SeqCst);
            let source = from.ip().to_canonical();
            let _ = udp.send_to(format!("{name} {source}").as_bytes(), from);
        }
        match listener.accept() {
            Ok((mut stream, _)) => {
                served.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nonblocking(false);
                let _ = stream.write_all(answer.as_bytes());
                if hold {
                    // A thread per held connection: it ends when the client closes.
                    std::thread::spawn(move || echo_lines(stream));
                } else {
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Echoes each line read from `stream` until end of input or an error.
fn echo_lines(stream: TcpStream) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = io::BufReader::new(stream);
    let mut line = String::new();
    while io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 0) {
        if writer.write_all(line.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

/// Connects to `addr`, reads the answer to the end and returns it without the trailing newline:
/// the name of the backend that answered. Gives up after `timeout` for each step.
pub fn ask_name(addr: SocketAddr, timeout: Duration) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer.trim_end().to_string())
}
