//! The host side of vsock: a Unix socket per VM, and one Unix stream per connection.
//!
//! Host to guest: a program connects to the VM's socket and writes `CONNECT <port>\n`;
//! once the guest accepts, it reads `OK <host port>\n` and the stream is the connection.
//! Guest to host: the guest connects to CID 2, port P, and we connect to `<socket>_<P>`.
//! (The protocol Firecracker and Cloud Hypervisor use, so existing tools work.)
//!
//! Host sockets are watched by an epoll instance of our own, whose fd is the device's
//! only event source; connection sockets are edge-triggered and remembered as readable
//! until they would block, so a guest out of buffers or credit never makes us spin.
//!
//! A connection's two directions close separately (see [`super::connection`]); the host
//! side sends RST only once both are done, and answers a guest out of credit with a
//! CREDIT_REQUEST rather than waiting for it to volunteer an update.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{ConnState, Connection, BUF_ALLOC};
use super::packet::{
    Header, HOST_CID, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use crate::virtio::LogLimiter;

/// Longest `CONNECT <port>\n` line accepted.
const MAX_HANDSHAKE: usize = 32;
/// Host ports handed out for host-initiated connections start here.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// Connections one VM may hold at once.
const MAX_CONNECTIONS: usize = 1024;
/// Control packets waiting for guest receive buffers, at most.
const MAX_CONTROL: usize = 4096;

type Key = (u32, u32);

/// What the guest should receive next.
#[derive(Debug, PartialEq, Eq)]
pub enum RxPacket {
    /// A header-only packet.
    Control(Header),
    /// Data for this connection.
    Data(Key),
}

/// The connection multiplexer of one vsock device.
#[derive(Debug)]
pub struct Muxer {
    guest_cid: u64,
    path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    connections: HashMap<Key, Connection>,
    by_fd: HashMap<RawFd, Key>,
    handshakes: HashMap<RawFd, (UnixStream, Vec<u8>)>,
    control: VecDeque<Header>,
    next_local_port: u32,
    log: LogLimiter,
}

fn event(fd: RawFd, set: EventSet) -> EpollEvent {
    // Tokens are fds, which are non-negative.
    EpollEvent::new(set, fd as u64)
}

impl Muxer {
    /// Listens on `path` for host-initiated connections of a guest with `guest_cid`.
    pub fn new(guest_cid: u64, path: &Path) -> io::Result<Self> {
        let listener = match UnixListener::bind(path) {
            // A socket file nobody listens on is left over from a VM that is gone.
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse && UnixStream::connect(path).is_err() =>
            {
                std::fs::remove_file(path)?;
                UnixListener::bind(path)?
            }
            other => other?,
        };
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            event(listener.as_raw_fd(), EventSet::IN),
        )?;
        Ok(Muxer {
            guest_cid,
            path: path.to_path_buf(),
            listener,
            epoll,
            connections: HashMap::new(),
            by_fd: HashMap::new(),
            handshakes: HashMap::new(),
            control: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
            log: LogLimiter::default(),
        })
    }

    /// The epoll fd that becomes readable when a host socket needs attention.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Drops every connection (device reset); the listener stays.
    pub fn reset(&mut self) {
        for (_, conn) in self.connections.drain() {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                conn.stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        for (fd, _) in self.handshakes.drain() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
        self.by_fd.clear();
        self.control.clear();
    }

    fn header(&self, conn: &Connection, op: u16) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: conn.local_port,
            dst_port: conn.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: conn.fwd_cnt.0,
        }
    }

    fn push_control(&mut self, header: Header) {
        if self.control.len() < MAX_CONTROL {
            self.control.push_back(header);
        }
    }

    /// An RST answering a guest packet.
    fn reset_reply(&mut self, to: &Header) {
        self.push_control(Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: to.dst_port,
            dst_port: to.src_port,
            type_: TYPE_STREAM,
            op: OP_RST,
            ..Header::default()
        });
    }

    fn remove(&mut self, key: Key) {
        if let Some(conn) = self.connections.remove(&key) {
            let fd = conn.stream.as_raw_fd();
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            self.by_fd.remove(&fd);
        }
    }

    /// Sends RST and drops connection `key`.
    fn reset_connection(&mut self, key: Key) {
        if let Some(conn) = self.connections.get(&key) {
            let header = self.header(conn, OP_RST);
            self.remove(key);
            self.push_control(header);
        }
    }

    /// Closes connection `key` (RST) if both its directions are done.
    fn close_if_finished(&mut self, key: Key) {
        if self.connections.get(&key).is_some_and(Connection::finished) {
            tracing::trace!(?key, "vsock connection done both ways");
            self.reset_connection(key);
        }
    }

    fn insert(&mut self, conn: Connection) -> io::Result<()> {
        let fd = conn.stream.as_raw_fd();
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            event(fd, EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED),
        )?;
        let key = (conn.local_port, conn.peer_port);
        self.by_fd.insert(fd, key);
        self.connections.insert(key, conn);
        Ok(())
    }

    /// A packet the guest sent (header and payload).
    pub fn handle_guest_packet(&mut self, hdr: &Header, payload: &[u8]) {
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID || hdr.type_ != TYPE_STREAM {
            if let Some(suppressed) = self.log.allow() {
                tracing::warn!(
                    src_cid = hdr.src_cid,
                    dst_cid = hdr.dst_cid,
                    suppressed,
                    "vsock packet with bad addressing"
                );
            }
            if hdr.op != OP_RST {
                self.reset_reply(hdr);
            }
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        if hdr.op == OP_REQUEST {
            self.guest_connect(hdr, key);
            return;
        }
        let Some(conn) = self.connections.get_mut(&key) else {
            if hdr.op != OP_RST {
                self.reset_reply(hdr);
            }
            return;
        };
        conn.update_peer_credit(hdr.buf_alloc, hdr.fwd_cnt);
        tracing::trace!(
            ?key,
            op = hdr.op,
            len = hdr.len,
            flags = hdr.flags,
            buf_alloc = hdr.buf_alloc,
            fwd_cnt = hdr.fwd_cnt,
            "vsock packet from the guest"
        );
        match hdr.op {
            OP_RESPONSE if conn.state == ConnState::HostConnecting => {
                conn.state = ConnState::Established;
                let reply = format!("OK {}\n", conn.local_port);
                if conn.stream.write_all(reply.as_bytes()).is_err() {
                    self.reset_connection(key);
                }
            }
            // Guest data is welcome until the guest itself says it sends no more, whether
            // or not the host side has finished sending.
            OP_RW if conn.state == ConnState::Established && conn.guest_to_host_open() => {
                if !conn.push_to_host(payload) || conn.flush_to_host().is_err() {
                    self.reset_connection(key);
                    return;
                }
                if conn.credit_update_due() {
                    conn.fwd_cnt_sent = conn.fwd_cnt;
                    let header = self.header(&self.connections[&key], OP_CREDIT_UPDATE);
                    self.push_control(header);
                }
            }
            OP_CREDIT_UPDATE => {}
            OP_CREDIT_REQUEST => {
                conn.fwd_cnt_sent = conn.fwd_cnt;
                let header = self.header(&self.connections[&key], OP_CREDIT_UPDATE);
                self.push_control(header);
            }
            OP_SHUTDOWN if conn.state == ConnState::Established => {
                conn.peer_shutdown |= hdr.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                if !conn.host_to_guest_open() {
                    // The guest takes no more: whatever the host still sends is dropped,
                    // and a host writer learns so (EPIPE) instead of filling the socket.
                    conn.pending_read = false;
                    if !conn.host_eof {
                        let _ = conn.stream.shutdown(std::net::Shutdown::Read);
                    }
                }
                if !conn.guest_to_host_open() && conn.flush_to_host().is_err() {
                    self.reset_connection(key);
                    return;
                }
                self.close_if_finished(key);
            }
            OP_RST => self.remove(key),
            _ => {
                // A packet out of place for the connection's state.
                self.reset_connection(key);
            }
        }
    }

    /// The guest connects to host port `hdr.dst_port`: connect to `<socket>_<port>`.
    fn guest_connect(&mut self, hdr: &Header, key: Key) {
        if self.connections.contains_key(&key) || self.connections.len() >= MAX_CONNECTIONS {
            self.reset_reply(hdr);
            return;
        }
        let mut target = self.path.clone().into_os_string();
        target.push(format!("_{}", hdr.dst_port));
        let stream = match UnixStream::connect(&target) {
            Ok(s) => s,
            Err(_) => {
                self.reset_reply(hdr);
                return;
            }
        };
        if stream.set_nonblocking(true).is_err() {
            self.reset_reply(hdr);
            return;
        }
        let mut conn = Connection::new(stream, hdr.dst_port, hdr.src_port, ConnState::Established);
        conn.update_peer_credit(hdr.buf_alloc, hdr.fwd_cnt);
        let response = self.header(&conn, OP_RESPONSE);
        match self.insert(conn) {
            Ok(()) => self.push_control(response),
            Err(_) => self.reset_reply(hdr),
        }
    }

    /// Processes host socket events: new connections, handshakes, readable and writable
    /// connection sockets.
    pub fn handle_host_events(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "vsock epoll failed");
                    return;
                }
            };
            for ev in &events[..n] {
                // Tokens are the fds we registered.
                let fd = ev.data() as RawFd;
                let set = ev.event_set();
                if fd == self.listener.as_raw_fd() {
                    self.accept();
                } else if self.handshakes.contains_key(&fd) {
                    self.handshake(fd);
                } else if let Some(key) = self.by_fd.get(&fd).copied() {
                    self.connection_event(key, set);
                }
            }
            if n == 0 {
                return;
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.handshakes.len() + self.connections.len() >= MAX_CONNECTIONS
                        || stream.set_nonblocking(true).is_err()
                    {
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    if self
                        .epoll
                        .ctl(ControlOperation::Add, fd, event(fd, EventSet::IN))
                        .is_ok()
                    {
                        self.handshakes.insert(fd, (stream, Vec::new()));
                        // The CONNECT line may already be there.
                        self.handshake(fd);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn handshake(&mut self, fd: RawFd) {
        let Some((stream, line)) = self.handshakes.get_mut(&fd) else {
            return;
        };
        let mut byte = [0u8; 1];
        // Byte by byte: whatever follows the line is connection data.
        let done = loop {
            match stream.read(&mut byte) {
                Ok(0) => break Err(()),
                Ok(_) if byte[0] == b'\n' => break Ok(()),
                Ok(_) => {
                    line.push(byte[0]);
                    if line.len() > MAX_HANDSHAKE {
                        break Err(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break Err(()),
            }
        };
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        let Some((mut stream, line)) = self.handshakes.remove(&fd) else {
            return;
        };
        let port = done.ok().and_then(|()| {
            std::str::from_utf8(&line)
                .ok()?
                .strip_prefix("CONNECT ")?
                .trim()
                .parse::<u32>()
                .ok()
        });
        let Some(port) = port else {
            let _ = stream.write_all(b"FAILURE\n");
            return;
        };
        let local_port = self.allocate_port(port);
        let conn = Connection::new(stream, local_port, port, ConnState::HostConnecting);
        let request = self.header(&conn, OP_REQUEST);
        if self.insert(conn).is_ok() {
            self.push_control(request);
        }
    }

    fn allocate_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let port = self.next_local_port;
            self.next_local_port = self.next_local_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
            if !self.connections.contains_key(&(port, peer_port)) {
                return port;
            }
        }
    }

    fn connection_event(&mut self, key: Key, set: EventSet) {
        let Some(conn) = self.connections.get_mut(&key) else {
            return;
        };
        if conn.host_to_guest_open()
            && (set.contains(EventSet::IN)
                || set.contains(EventSet::HANG_UP)
                || set.contains(EventSet::READ_HANG_UP))
        {
            conn.pending_read = true;
        }
        if set.contains(EventSet::OUT) && conn.flush_to_host().is_err() {
            self.reset_connection(key);
            return;
        }
        // Freed space in the host socket lets the guest send more.
        if let Some(conn) = self.connections.get_mut(&key) {
            if conn.credit_update_due() {
                conn.fwd_cnt_sent = conn.fwd_cnt;
                let header = self.header(&self.connections[&key], OP_CREDIT_UPDATE);
                self.push_control(header);
            }
        }
        // The last guest bytes may just have been written.
        self.close_if_finished(key);
    }

    /// What to put in the guest's next receive buffer, if anything.
    pub fn next_rx(&mut self) -> Option<RxPacket> {
        // Host data waits on a guest without credit: ask it for an update (virtio 1.2
        // §5.10.6.3) rather than rely on it to volunteer one.
        for conn in self.connections.values_mut() {
            if conn.needs_credit() && self.control.len() < MAX_CONTROL {
                conn.credit_requested = true;
                conn.fwd_cnt_sent = conn.fwd_cnt;
                self.control.push_back(Header {
                    src_cid: HOST_CID,
                    dst_cid: self.guest_cid,
                    src_port: conn.local_port,
                    dst_port: conn.peer_port,
                    type_: TYPE_STREAM,
                    op: OP_CREDIT_REQUEST,
                    buf_alloc: BUF_ALLOC,
                    fwd_cnt: conn.fwd_cnt.0,
                    ..Header::default()
                });
            }
        }
        if let Some(h) = self.control.pop_front() {
            return Some(RxPacket::Control(h));
        }
        self.connections
            .iter()
            .find(|(_, c)| {
                c.pending_read
                    && c.state == ConnState::Established
                    && c.host_to_guest_open()
                    && c.peer_credit() > 0
            })
            .map(|(k, _)| RxPacket::Data(*k))
    }

    /// Reads host data of connection `key` into `buf` (at most the guest's credit; `buf`
    /// must not be empty) and returns the header of the RW packet to send with it. None
    /// when there was nothing to read after all; the host's end of stream sends SHUTDOWN
    /// "will not send" instead, and RST too if the guest had finished sending.
    pub fn read_data(&mut self, key: Key, buf: &mut [u8]) -> Option<(Header, usize)> {
        let conn = self.connections.get_mut(&key)?;
        let credit = conn.peer_credit() as usize;
        let want = buf.len().min(credit);
        if want == 0 {
            // A zero-length read would look like the end of the stream.
            return None;
        }
        let result = loop {
            match conn.stream.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match result {
            Ok(0) => {
                conn.pending_read = false;
                conn.host_eof = true;
                let mut h = self.header(&self.connections[&key], OP_SHUTDOWN);
                h.flags = SHUTDOWN_SEND;
                self.push_control(h);
                self.close_if_finished(key);
                None
            }
            Ok(n) => {
                // n <= buf.len(), a packet's worth.
                conn.rx_cnt += std::num::Wrapping(n as u32);
                conn.fwd_cnt_sent = conn.fwd_cnt;
                let mut h = self.header(&self.connections[&key], OP_RW);
                h.len = n as u32;
                Some((h, n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.pending_read = false;
                None
            }
            Err(_) => {
                self.reset_connection(key);
                None
            }
        }
    }

    /// Puts a control packet back at the front (the guest had no buffer for it).
    pub fn unread_control(&mut self, header: Header) {
        self.control.push_front(header);
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
