//! `imgforge relay HOST:PORT`: the command QEMU's `guestfwd=…-cmd:` runs
//! for each connection the guest opens to a forwarded address. The
//! connection is the relay's stdin and stdout; the relay copies it to and
//! from a TCP connection to HOST:PORT (a loopback server of the test), so
//! that every connection apt opens gets its own relay.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpStream};

/// Bytes copied guest -> server and server -> guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub to_server: u64,
    pub to_guest: u64,
}

/// Connects to `target` and copies `input` to it and its answer to
/// `output` (two threads), until the server has closed its side. When the
/// guest closes its side first, the server sees the end of the request
/// (its read side is shut down) and the relay waits for its answer.
pub fn relay(
    target: SocketAddrV4,
    mut input: impl Read + Send + 'static,
    mut output: impl Write,
) -> std::io::Result<Copied> {
    let server = TcpStream::connect(target)?;
    let mut to_server = server.try_clone()?;
    let upstream = std::thread::spawn(move || {
        let copied = std::io::copy(&mut input, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
        copied.unwrap_or(0)
    });
    let mut from_server = server;
    let to_guest = std::io::copy(&mut from_server, &mut output)?;
    output.flush()?;
    // The server is done: the guest's side may still be open (keep-alive),
    // so the upstream copy is not waited for unless it already ended.
    let to_server = if upstream.is_finished() {
        upstream.join().unwrap_or(0)
    } else {
        0
    };
    Ok(Copied {
        to_server,
        to_guest,
    })
}

/// `GUESTIP:PORT=127.0.0.1:HOSTPORT`: a guest address forwarded to a
/// loopback port of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestForward {
    pub guest: SocketAddrV4,
    pub host: SocketAddrV4,
}

impl std::str::FromStr for GuestForward {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "write GUESTIP:PORT=127.0.0.1:HOSTPORT, e.g. 10.0.2.100:8080=127.0.0.1:38080";
        let (guest, host) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: no '='; {usage}"))?;
        let guest: SocketAddrV4 = guest
            .parse()
            .map_err(|_| format!("{guest:?} is not IPv4:PORT; {usage}"))?;
        let host: SocketAddrV4 = host
            .parse()
            .map_err(|_| format!("{host:?} is not IPv4:PORT; {usage}"))?;
        if !host.ip().is_loopback() {
            return Err(format!("{host} is not a loopback address: the guest may reach this machine's own services only; {usage}"));
        }
        let net = u32::from(*guest.ip()) & 0xffff_ff00;
        // slirp's own addresses: the gateway .2, DNS .3, the guest's DHCP range .15-.30.
        let last = guest.ip().octets()[3];
        if net != u32::from(std::net::Ipv4Addr::new(10, 0, 2, 0))
            || matches!(last, 0..=3 | 15..=31 | 255)
        {
            return Err(format!("{} is not a free address of QEMU's user network 10.0.2.0/24 (slirp uses .2, .3 and .15-.31); {usage}", guest.ip()));
        }
        Ok(GuestForward { guest, host })
    }
}

impl GuestForward {
    /// The `guestfwd=` value that runs `relay_exe relay HOST:PORT` per connection.
    pub fn netdev_option(&self, relay_exe: &std::path::Path) -> String {
        // QEMU's option parser takes a doubled comma as a literal one.
        let exe = relay_exe.display().to_string().replace(',', ",,");
        format!("guestfwd=tcp:{}-cmd:{exe} relay {}", self.guest, self.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn the_relay_carries_a_request_to_the_server_and_its_answer_back() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let std::net::SocketAddr::V4(addr) = listener.local_addr().expect("address") else {
            panic!("not IPv4")
        };
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().expect("the relay connects");
            let mut request = Vec::new();
            c.read_to_end(&mut request)
                .expect("the request, up to the guest's end");
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .expect("answering");
            request
        });
        let request =
            b"GET /dists/noble/InRelease HTTP/1.1\r\nHost: 10.0.2.100:8080\r\n\r\n".to_vec();
        let mut answer = Vec::new();
        let copied =
            relay(addr, std::io::Cursor::new(request.clone()), &mut answer).expect("relays");
        assert_eq!(server.join().expect("the server"), request);
        assert_eq!(answer, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(copied.to_guest, answer.len() as u64);
    }

    #[test]
    fn the_relay_ends_when_the_server_closes_while_the_guest_keeps_its_side_open() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let std::net::SocketAddr::V4(addr) = listener.local_addr().expect("address") else {
            panic!("not IPv4")
        };
        std::thread::spawn(move || {
            let (mut c, _) = listener.accept().expect("the relay connects");
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf).expect("the request");
            c.write_all(&buf[..n]).expect("echoing");
        });
        // A guest that sent its request and then waits (a pipe that never ends).
        let (reader, mut writer) = std::io::pipe().expect("a pipe");
        writer.write_all(b"ping").expect("writing");
        let mut answer = Vec::new();
        relay(addr, reader, &mut answer).expect("relays");
        assert_eq!(answer, b"ping");
        drop(writer);
    }

    #[test]
    fn a_server_that_is_not_there_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let std::net::SocketAddr::V4(addr) = listener.local_addr().expect("address") else {
            panic!("not IPv4")
        };
        drop(listener);
        assert!(relay(addr, std::io::empty(), Vec::new()).is_err());
    }

    #[test]
    fn forwards_reach_loopback_only_from_a_free_guest_address() {
        let f: GuestForward = "10.0.2.100:8080=127.0.0.1:38080".parse().expect("valid");
        assert_eq!(
            f.netdev_option(std::path::Path::new("/opt/a,b/imgforge")),
            "guestfwd=tcp:10.0.2.100:8080-cmd:/opt/a,,b/imgforge relay 127.0.0.1:38080"
        );
        assert!("10.0.2.100:8080=192.0.2.1:80"
            .parse::<GuestForward>()
            .expect_err("not loopback")
            .contains("not a loopback address"));
        for used in [
            "10.0.2.2:80",
            "10.0.2.3:53",
            "10.0.2.15:80",
            "192.168.1.5:80",
        ] {
            assert!(
                format!("{used}=127.0.0.1:80")
                    .parse::<GuestForward>()
                    .is_err(),
                "{used}"
            );
        }
        assert!("10.0.2.100:8080"
            .parse::<GuestForward>()
            .expect_err("no =")
            .contains("no '='"));
    }
}
