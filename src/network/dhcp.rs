//! The in-process DHCPv4 server of the default network: one thread per bridge
//! (`dhcp-<bridge>`), a UDP socket on port 67 bound to that bridge only, answers built
//! with dhcproto. Every MAC gets its stable address from the [`LeaseTable`], with the
//! gateway (the bridge's address), subnet mask, DNS servers and lease time.
//!
//! Replies go to the client's address when it has one (renewals, INFORM) and to the
//! broadcast address otherwise; the socket is bound to the bridge, so a broadcast never
//! leaves it.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

use super::lease::LeaseTable;
use super::mac::Mac;

/// Server and client UDP ports.
const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
/// BOOTP's minimum message size; some clients drop shorter replies.
const MIN_REPLY: usize = 300;

/// Errors starting the server.
#[derive(Debug, Error)]
pub enum DhcpError {
    /// The socket could not be set up on the bridge.
    #[error("Failed to open the DHCP socket on {0}")]
    Socket(String, #[source] io::Error),
    /// The server thread could not be started.
    #[error("Failed to start the DHCP thread")]
    Thread(#[source] io::Error),
}

/// What the server hands out besides the address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The bridge to serve on.
    pub interface: String,
    /// DNS servers for the guests.
    pub dns: Vec<Ipv4Addr>,
    /// Lease time.
    pub lease_time: Duration,
}

/// A running server; stops (and joins its thread) on drop.
pub struct DhcpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    interface: String,
}

impl DhcpServer {
    /// Opens the socket (in the calling thread's network namespace) and starts serving.
    pub fn start(config: DhcpConfig, leases: Arc<Mutex<LeaseTable>>) -> Result<Self, DhcpError> {
        let sock_err = |e| DhcpError::Socket(config.interface.clone(), e);
        let socket =
            Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(sock_err)?;
        socket.set_reuse_address(true).map_err(sock_err)?;
        socket
            .bind_device(Some(config.interface.as_bytes()))
            .map_err(sock_err)?;
        socket.set_broadcast(true).map_err(sock_err)?;
        socket
            .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, SERVER_PORT)).into())
            .map_err(sock_err)?;
        // The read timeout is how often the thread looks at the stop flag.
        socket
            .set_read_timeout(Some(Duration::from_millis(250)))
            .map_err(sock_err)?;
        let socket: UdpSocket = socket.into();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let interface = config.interface.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dhcp-{}", config.interface))
            .spawn(move || serve(socket, config, leases, flag))
            .map_err(DhcpError::Thread)?;
        Ok(DhcpServer {
            stop,
            thread: Some(thread),
            interface,
        })
    }

    /// The bridge served.
    pub fn interface(&self) -> &str {
        &self.interface
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    socket: UdpSocket,
    config: DhcpConfig,
    leases: Arc<Mutex<LeaseTable>>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let n = match socket.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!(bridge = %config.interface, "DHCP receive failed: {e}");
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
        };
        let Ok(request) = Message::decode(&mut Decoder::new(&buf[..n])) else {
            tracing::trace!(bridge = %config.interface, "ignoring a malformed DHCP packet");
            continue;
        };
        let reply = {
            let mut table = leases
                .lock()
                .expect("lease table lock is never poisoned by a panic here");
            answer(&request, &config, &mut table)
        };
        let Some((reply, dest)) = reply else { continue };
        let mut out = Vec::with_capacity(MIN_REPLY);
        if reply.encode(&mut Encoder::new(&mut out)).is_err() {
            continue;
        }
        if out.len() < MIN_REPLY {
            out.resize(MIN_REPLY, 0);
        }
        if let Err(e) = socket.send_to(&out, dest) {
            tracing::warn!(bridge = %config.interface, "DHCP send to {dest} failed: {e}");
        }
    }
}

/// The answer to one client message and where to send it, or `None` to stay silent.
pub fn answer(
    request: &Message,
    config: &DhcpConfig,
    table: &mut LeaseTable,
) -> Option<(Message, SocketAddrV4)> {
    if request.opcode() != Opcode::BootRequest
        || request.htype() != HType::Eth
        || request.hlen() != 6
    {
        return None;
    }
    // Relayed requests would need the relay's subnet: only directly attached clients.
    if !request.giaddr().is_unspecified() {
        return None;
    }
    let mut octets = [0u8; 6];
    octets.copy_from_slice(&request.chaddr()[..6]);
    let mac = Mac(octets);
    let server = table.gateway();
    let opts = request.opts();
    if let Some(DhcpOption::ServerIdentifier(id)) = opts.get(OptionCode::ServerIdentifier) {
        if *id != server {
            // The client picked another server.
            return None;
        }
    }
    let requested = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let (kind, yiaddr) = match opts.msg_type()? {
        MessageType::Discover => (MessageType::Offer, table.address_for(mac).ok()?),
        MessageType::Request => {
            let wanted = requested.unwrap_or(request.ciaddr());
            let ip = table.address_for(mac).ok()?;
            if wanted == ip {
                table.touch(&mac);
                (MessageType::Ack, ip)
            } else {
                (MessageType::Nak, Ipv4Addr::UNSPECIFIED)
            }
        }
        MessageType::Inform => (MessageType::Ack, Ipv4Addr::UNSPECIFIED),
        MessageType::Decline => {
            tracing::warn!(%mac, "a guest declined its address (conflict on the bridge?)");
            return None;
        }
        // The address stays the MAC's: nothing to do on release.
        _ => return None,
    };

    let mut reply = Message::new_with_id(
        request.xid(),
        if kind == MessageType::Inform {
            request.ciaddr()
        } else {
            Ipv4Addr::UNSPECIFIED
        },
        yiaddr,
        server,
        Ipv4Addr::UNSPECIFIED,
        &octets,
    );
    reply.set_opcode(Opcode::BootReply);
    reply.set_flags(request.flags());
    let o = reply.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(server));
    if kind != MessageType::Nak {
        let subnet = table.subnet();
        o.insert(DhcpOption::SubnetMask(subnet.netmask()));
        o.insert(DhcpOption::BroadcastAddr(subnet.broadcast()));
        o.insert(DhcpOption::Router(vec![server]));
        if !config.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(config.dns.clone()));
        }
        if kind != MessageType::Ack || !yiaddr.is_unspecified() {
            let secs = u32::try_from(config.lease_time.as_secs()).unwrap_or(u32::MAX);
            o.insert(DhcpOption::AddressLeaseTime(secs));
            o.insert(DhcpOption::Renewal(secs / 2));
            o.insert(DhcpOption::Rebinding(secs / 8 * 7));
        }
    }
    let ciaddr = request.ciaddr();
    let dest = if kind != MessageType::Nak && !ciaddr.is_unspecified() {
        SocketAddrV4::new(ciaddr, CLIENT_PORT)
    } else {
        SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
    };
    if dest.ip().is_broadcast() {
        reply.set_flags(Flags::default().set_broadcast());
    }
    Some((reply, dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DhcpConfig {
        DhcpConfig {
            interface: "mvbr0".into(),
            dns: vec![Ipv4Addr::new(192, 0, 2, 53)],
            lease_time: Duration::from_secs(3600),
        }
    }

    fn table() -> LeaseTable {
        LeaseTable::new(
            "10.0.2.0/24".parse().expect("cidr"),
            Ipv4Addr::new(10, 0, 2, 1),
        )
    }

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 7];

    fn request(kind: MessageType, extra: &[DhcpOption]) -> Message {
        let mut m = Message::new_with_id(
            0x1234,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in extra {
            m.opts_mut().insert(o.clone());
        }
        // Through the wire format, as the server sees it.
        let mut bytes = Vec::new();
        m.encode(&mut Encoder::new(&mut bytes)).expect("encode");
        Message::decode(&mut Decoder::new(&bytes)).expect("decode")
    }

    #[test]
    fn discover_request_ack_with_a_stable_address() {
        let mut t = table();
        let (offer, dest) =
            answer(&request(MessageType::Discover, &[]), &config(), &mut t).expect("offer");
        assert_eq!(dest, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
        assert_eq!(offer.opcode(), Opcode::BootReply);
        assert_eq!(offer.xid(), 0x1234);
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        let ip = offer.yiaddr();
        assert_eq!(ip, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(
            offer.opts().get(OptionCode::Router),
            Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 1)]))
        );
        assert_eq!(
            offer.opts().get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            offer.opts().get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(3600))
        );
        let (ack, _) = answer(
            &request(
                MessageType::Request,
                &[
                    DhcpOption::RequestedIpAddress(ip),
                    DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 1)),
                ],
            ),
            &config(),
            &mut t,
        )
        .expect("ack");
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), ip);
        // Asking again later gives the same address.
        let (again, _) =
            answer(&request(MessageType::Discover, &[]), &config(), &mut t).expect("offer");
        assert_eq!(again.yiaddr(), ip);
    }

    #[test]
    fn wrong_address_is_nakked_and_other_servers_are_left_alone() {
        let mut t = table();
        let (nak, dest) = answer(
            &request(
                MessageType::Request,
                &[DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 2, 99))],
            ),
            &config(),
            &mut t,
        )
        .expect("nak");
        assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(dest.ip(), &Ipv4Addr::BROADCAST);
        assert!(answer(
            &request(
                MessageType::Request,
                &[DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 254))]
            ),
            &config(),
            &mut t
        )
        .is_none());
        assert!(answer(&request(MessageType::Release, &[]), &config(), &mut t).is_none());
    }

    #[test]
    fn renewals_are_unicast() {
        let mut t = table();
        let ip = t.address_for(Mac(MAC)).expect("free");
        let mut m = request(MessageType::Request, &[]);
        m.set_ciaddr(ip);
        let (ack, dest) = answer(&m, &config(), &mut t).expect("ack");
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(dest, SocketAddrV4::new(ip, 68));
    }
}
