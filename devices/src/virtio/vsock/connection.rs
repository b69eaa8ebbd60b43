//! One vsock stream between a guest port and a host Unix socket, with the virtio-vsock
//! credit accounting in both directions and its two half-closes.
//!
//! Each direction ends on its own, as a TCP or Linux vsock stream does (virtio 1.2
//! §5.10.6.6): the host side's end of stream becomes a SHUTDOWN "will not send" to the
//! guest, while guest data keeps flowing to the host socket; the guest's SHUTDOWN "will
//! not send" becomes a write shutdown of the host socket once its queued data is written.
//! The connection goes away (RST) only when both directions are done.

use std::io::{self, Write};
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use super::packet::{SHUTDOWN_RCV, SHUTDOWN_SEND};

/// Receive buffer we advertise to the guest for each connection: the most guest data we
/// hold for a host socket that does not read.
pub const BUF_ALLOC: u32 = 256 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// The host connected and asked for a guest port; REQUEST sent, RESPONSE awaited.
    HostConnecting,
    /// Data flows (in the directions that have not shut down).
    Established,
}

/// A connection.
#[derive(Debug)]
pub struct Connection {
    /// The host side.
    pub stream: UnixStream,
    /// Port on the host (CID 2) side.
    pub local_port: u32,
    /// Port on the guest side.
    pub peer_port: u32,
    /// Life cycle.
    pub state: ConnState,
    /// The guest's receive buffer for this connection.
    pub peer_buf_alloc: u32,
    /// Bytes the guest has consumed.
    pub peer_fwd_cnt: Wrapping<u32>,
    /// Bytes we sent to the guest.
    pub rx_cnt: Wrapping<u32>,
    /// Bytes from the guest we handed to the host socket.
    pub fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as last told to the guest.
    pub fwd_cnt_sent: Wrapping<u32>,
    /// Guest data the host socket has not taken yet (at most BUF_ALLOC bytes).
    pub to_host: Vec<u8>,
    /// The host socket may have data (edge-triggered: set on EPOLLIN, cleared on EAGAIN).
    pub pending_read: bool,
    /// SHUTDOWN flags the guest sent (`SHUTDOWN_RCV`, `SHUTDOWN_SEND`).
    pub peer_shutdown: u32,
    /// The host socket reached its end and the guest was told SHUTDOWN_SEND.
    pub host_eof: bool,
    /// A CREDIT_REQUEST went to the guest and no packet of its has answered yet.
    pub credit_requested: bool,
    /// The host socket's write side is shut (the guest's data ended there).
    pub host_write_shut: bool,
}

impl Connection {
    /// A connection in `state`.
    pub fn new(stream: UnixStream, local_port: u32, peer_port: u32, state: ConnState) -> Self {
        Connection {
            stream,
            local_port,
            peer_port,
            state,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            fwd_cnt_sent: Wrapping(0),
            to_host: Vec::new(),
            pending_read: false,
            peer_shutdown: 0,
            host_eof: false,
            credit_requested: false,
            host_write_shut: false,
        }
    }

    /// Bytes we may still send the guest before it has to free buffer space.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Records the guest's credit information from one of its packets (each answers a
    /// CREDIT_REQUEST).
    pub fn update_peer_credit(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = Wrapping(fwd_cnt);
        self.credit_requested = false;
    }

    /// Whether host data may still go to the guest: the host socket has not ended and the
    /// guest has not said it receives no more.
    pub fn host_to_guest_open(&self) -> bool {
        !self.host_eof && self.peer_shutdown & SHUTDOWN_RCV == 0
    }

    /// Whether guest data may still come: the guest has not said it sends no more.
    pub fn guest_to_host_open(&self) -> bool {
        self.peer_shutdown & SHUTDOWN_SEND == 0
    }

    /// Whether the guest wants host data now and has no room for it: time to ask for
    /// credit (once until it answers).
    pub fn needs_credit(&self) -> bool {
        self.state == ConnState::Established
            && self.pending_read
            && self.host_to_guest_open()
            && self.peer_credit() == 0
            && !self.credit_requested
    }

    /// Both directions are done and every byte the guest sent reached the host socket:
    /// the connection can go.
    pub fn finished(&self) -> bool {
        !self.host_to_guest_open() && !self.guest_to_host_open() && self.to_host.is_empty()
    }

    /// Queues guest data for the host socket; false if the guest overran its credit.
    pub fn push_to_host(&mut self, data: &[u8]) -> bool {
        if self.to_host.len() + data.len() > BUF_ALLOC as usize {
            return false;
        }
        self.to_host.extend_from_slice(data);
        true
    }

    /// Writes as much queued guest data to the host socket as it takes.
    pub fn flush_to_host(&mut self) -> io::Result<()> {
        while !self.to_host.is_empty() {
            match self.stream.write(&self.to_host) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.to_host.drain(..n);
                    // n <= to_host.len() <= BUF_ALLOC, far below u32::MAX.
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        if !self.guest_to_host_open() && !self.host_write_shut {
            // Everything the guest sent is written: the host reads its end of stream. Once:
            // every shutdown wakes the socket, which the edge-triggered epoll reports.
            self.host_write_shut = true;
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }

    /// Whether the guest should hear about freed buffer space now (half the window).
    pub fn credit_update_due(&self) -> bool {
        (self.fwd_cnt - self.fwd_cnt_sent).0 >= BUF_ALLOC / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_accounting_wraps() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = Connection::new(a, 1, 2, ConnState::Established);
        assert_eq!(c.peer_credit(), 0);
        c.update_peer_credit(1000, u32::MAX - 10);
        c.rx_cnt = Wrapping(u32::MAX - 10) + Wrapping(400);
        assert_eq!(c.peer_credit(), 600);
        c.rx_cnt += Wrapping(700);
        assert_eq!(c.peer_credit(), 0);
    }

    #[test]
    fn guest_cannot_overrun_its_credit() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = Connection::new(a, 1, 2, ConnState::Established);
        assert!(c.push_to_host(&vec![0u8; BUF_ALLOC as usize]));
        assert!(!c.push_to_host(&[0u8]));
    }
}
