//! The install network of an online install: the NIC up, an optional
//! 802.1Q VLAN, an IPv4 address from DHCP (a small client of our own) or
//! the plan, the default route, the name servers, and a probe of the
//! mirror (`GET <mirror>/dists/<suite>/InRelease`). It runs before any disk
//! is touched, so a machine that cannot reach its mirror stops unchanged.
//!
//! The message formats (DHCP, DNS, the HTTP status line) are pure and
//! tested here; the few functions that touch the kernel are named for it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use imgforge_plan::{InstallAddress, InstallNetwork, OnlineSource};
use serde::Serialize;

use tracing::info;

/// The NIC must show up (its driver loaded by the modules step) within this.
const NIC_WAIT: Duration = Duration::from_secs(15);
/// Carrier (cable, switch port) within this after the link is set up.
const CARRIER_WAIT: Duration = Duration::from_secs(15);
/// DHCP gives up after this in all.
const DHCP_BUDGET: Duration = Duration::from_secs(30);
/// The mirror probe gives up after this in all (retries with backoff).
const PROBE_BUDGET: Duration = Duration::from_secs(50);
/// One connection attempt or one answer of the probe, at most.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Name servers for the target's apt, written by this step.
pub const RESOLV_CONF: &str = "/run/imgforge/resolv.conf";

/// What the network step found, for its event and the packages step.
#[derive(Debug, Clone, Serialize)]
pub struct NetUp {
    /// The NIC named in the plan.
    pub interface: String,
    /// The device that carries the address: the NIC or `<nic>.<vlan>`.
    pub device: String,
    pub mac: String,
    pub method: &'static str,
    /// Address in CIDR form.
    pub address: String,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// DHCP: the server and the lease time in seconds.
    pub dhcp_server: Option<Ipv4Addr>,
    pub lease_seconds: Option<u32>,
    /// Seconds until the carrier was up, and until the address was set.
    pub link_seconds: f64,
    pub address_seconds: f64,
    pub probe: Probe,
}

/// The mirror probe's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub url: String,
    pub attempts: u32,
    /// The first HTTP answer's status (none for https, where only the TCP
    /// connection is checked: the installer has no TLS client of its own).
    pub status: Option<u16>,
    pub seconds: f64,
    pub via_proxy: bool,
}

/// What has been tried so far, for the failure message.
#[derive(Default)]
pub struct Tried {
    pub steps: Vec<String>,
}

impl Tried {
    pub fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        info!("network: {s}");
        self.steps.push(s);
    }
}

/// The network step (online installs): the install network up and the
/// mirror answering, before any disk is touched.
pub fn step(
    online: &OnlineSource,
    hw: &mut crate::modules::Hardware,
    step: &mut crate::report::Step,
) -> Result<NetUp> {
    step.started(
        Some(format!(
            "bringing up {} to reach {}",
            online.network.interface, online.mirror
        )),
        None,
    );
    let up = bring_up(online, &mut |name| hw.load_named(name))?;
    step.done(format!(
        "{} {} ({}); {} answered {} in {:.1} s",
        up.device,
        up.address,
        up.method,
        up.probe.url,
        up.probe
            .status
            .map_or("(connected)".to_owned(), |s| format!("HTTP {s}")),
        up.probe.seconds
    ));
    step.data(serde_json::to_value(&up).unwrap_or_default());
    Ok(up)
}

/// Brings the install network up and probes the mirror; `load_module`
/// loads a kernel module by name (8021q for a VLAN).
pub fn bring_up(online: &OnlineSource, load_module: &mut dyn FnMut(&str) -> bool) -> Result<NetUp> {
    let net = &online.network;
    let mut tried = Tried::default();
    let outcome = bring_up_inner(online, net, load_module, &mut tried);
    outcome.with_context(|| {
        format!(
            "the install network on {} could not reach the mirror {} (tried: {}); nothing was written to any disk. \
             Check the cable and switch port of {}, the DHCP server or [packages.network], and that the mirror answers",
            net.interface,
            online.mirror,
            if tried.steps.is_empty() { "nothing yet".to_owned() } else { tried.steps.join("; ") },
            net.interface
        )
    })
}

fn bring_up_inner(
    online: &OnlineSource,
    net: &InstallNetwork,
    load_module: &mut dyn FnMut(&str) -> bool,
    tried: &mut Tried,
) -> Result<NetUp> {
    let mirror = parse_url(&online.mirror)
        .with_context(|| format!("the plan's mirror {:?}", online.mirror))?;
    let proxy = net
        .proxy
        .as_deref()
        .map(parse_url)
        .transpose()
        .context("the plan's proxy")?;
    let suite = online
        .suites
        .first()
        .context("the plan's online source names no suite")?;
    let rel = format!("dists/{suite}/InRelease");
    bring_up_with(net, load_module, tried, &mut |dns, tried| {
        probe_url(
            &mirror,
            proxy.as_ref(),
            &rel,
            dns,
            tried,
            "the mirror",
            "check packages.mirror and packages.suites",
        )
    })
}

/// Brings `net` up (link, VLAN, address, route, name servers), then
/// checks with `probe` that the server it is for answers.
pub fn bring_up_with(
    net: &InstallNetwork,
    load_module: &mut dyn FnMut(&str) -> bool,
    tried: &mut Tried,
    probe: &mut dyn FnMut(&[Ipv4Addr], &mut Tried) -> Result<Probe>,
) -> Result<NetUp> {
    let started = Instant::now();
    let nic = net.interface.as_str();
    wait_for_nic(nic)?;
    let mac = std::fs::read_to_string(format!("/sys/class/net/{nic}/address"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    set_up("lo")?;
    set_up(nic)?;
    let carrier = wait_for_carrier(nic);
    let link_seconds = started.elapsed().as_secs_f64();
    match carrier {
        Ok(()) => tried.note(format!("{nic} ({mac}) link up after {link_seconds:.1} s")),
        Err(e) => {
            tried.note(format!(
                "{nic} ({mac}): no carrier after {:.0} s",
                CARRIER_WAIT.as_secs_f64()
            ));
            return Err(e);
        }
    }
    let device = match net.vlan {
        Some(vlan) => {
            if !Path::new("/proc/net/vlan/config").exists() && !load_module("8021q") {
                tried.note("the 8021q module could not be loaded");
                bail!("VLAN {vlan} needs the kernel module 8021q, which this installer's kernel does not have");
            }
            let dev = add_vlan(nic, vlan)?;
            set_up(&dev)?;
            tried.note(format!("VLAN device {dev} up"));
            dev
        }
        None => nic.to_owned(),
    };
    let (address, prefix, mut gateway, mut dns, dhcp_server, lease_seconds, method) =
        match &net.address {
            InstallAddress::Dhcp => {
                let mac_bytes = parse_mac(&mac)
                    .with_context(|| format!("{nic} has no usable MAC address ({mac:?})"))?;
                let lease = dhcp(&device, mac_bytes, tried)?;
                (
                    lease.address,
                    lease.prefix,
                    lease.router,
                    lease.dns,
                    Some(lease.server),
                    lease.lease_seconds,
                    "dhcp",
                )
            }
            InstallAddress::Static(cidr) => {
                let (a, p) =
                    parse_cidr(cidr).with_context(|| format!("the plan's address {cidr:?}"))?;
                (a, p, None, Vec::new(), None, None, "static")
            }
        };
    if let Some(g) = &net.gateway {
        gateway = Some(
            g.parse()
                .with_context(|| format!("the plan's gateway {g:?}"))?,
        );
    }
    if !net.dns.is_empty() {
        dns = net
            .dns
            .iter()
            .map(|d| {
                d.parse()
                    .with_context(|| format!("the plan's name server {d:?}"))
            })
            .collect::<Result<_>>()?;
    }
    set_address(&device, address, prefix)
        .with_context(|| format!("setting {address}/{prefix} on {device}"))?;
    if let Some(gw) = gateway {
        add_default_route(&device, gw)
            .with_context(|| format!("adding the default route via {gw} on {device}"))?;
    }
    let address_seconds = started.elapsed().as_secs_f64();
    tried.note(format!(
        "{method} address {address}/{prefix} on {device}{}{} after {address_seconds:.1} s",
        gateway
            .map(|g| format!(", gateway {g}"))
            .unwrap_or_default(),
        if dns.is_empty() {
            String::new()
        } else {
            format!(
                ", name servers {}",
                dns.iter()
                    .map(Ipv4Addr::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    ));
    let resolv: String = dns
        .iter()
        .take(3)
        .map(|d| format!("nameserver {d}\n"))
        .collect();
    std::fs::create_dir_all("/run/imgforge").context("creating /run/imgforge")?;
    std::fs::write(RESOLV_CONF, &resolv).with_context(|| format!("writing {RESOLV_CONF}"))?;
    let _ = std::fs::write("/etc/resolv.conf", &resolv);
    let probe = probe(&dns, tried)?;
    Ok(NetUp {
        interface: nic.to_owned(),
        device,
        mac,
        method,
        address: format!("{address}/{prefix}"),
        gateway,
        dns,
        dhcp_server,
        lease_seconds,
        link_seconds,
        address_seconds,
        probe,
    })
}

// ---- the kernel side: links, addresses, routes ----

fn wait_for_nic(nic: &str) -> Result<()> {
    let start = Instant::now();
    while !Path::new("/sys/class/net").join(nic).exists() {
        if start.elapsed() > NIC_WAIT {
            let mut present: Vec<String> = std::fs::read_dir("/sys/class/net")
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n != "lo")
                        .collect()
                })
                .unwrap_or_default();
            present.sort();
            bail!(
                "there is no network interface {nic} after {} s (interfaces: {}); set packages.network.interface to one of them, or check that the installer's kernel has the NIC's driver",
                NIC_WAIT.as_secs(),
                if present.is_empty() { "none".to_owned() } else { present.join(", ") }
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn wait_for_carrier(nic: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        // Reading `carrier` fails (EINVAL) while the link is down.
        if std::fs::read_to_string(format!("/sys/class/net/{nic}/carrier"))
            .is_ok_and(|s| s.trim() == "1")
        {
            return Ok(());
        }
        if start.elapsed() > CARRIER_WAIT {
            let state = std::fs::read_to_string(format!("/sys/class/net/{nic}/operstate"))
                .unwrap_or_default();
            bail!("{nic} has no link (operstate {:?}) after {} s: no cable, or the switch port is down", state.trim(), CARRIER_WAIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn inet_socket() -> Result<std::fs::File> {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned by the File.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening an AF_INET socket");
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

fn if_name(name: &str) -> Result<[u8; 16]> {
    let mut out = [0u8; 16];
    if name.is_empty() || name.len() > 15 || name.contains('\0') {
        bail!("{name:?} is not an interface name");
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// `struct ifreq` with the address member of its union (40 bytes).
#[repr(C)]
struct IfreqAddr {
    name: [u8; 16],
    addr: libc::sockaddr_in,
    _pad: [u8; 8],
}

/// `struct ifreq` with the flags member of its union.
#[repr(C)]
struct IfreqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn ioctl<T>(sock: &std::fs::File, request: libc::c_ulong, arg: &mut T, what: &str) -> Result<()> {
    // SAFETY: every caller passes the structure the kernel expects for `request`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, arg as *mut T) } != 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_owned());
    }
    Ok(())
}

fn set_up(dev: &str) -> Result<()> {
    let sock = inet_socket()?;
    let mut req = IfreqFlags {
        name: if_name(dev)?,
        flags: 0,
        _pad: [0; 22],
    };
    ioctl(
        &sock,
        libc::SIOCGIFFLAGS,
        &mut req,
        &format!("reading the flags of {dev}"),
    )?;
    req.flags |= libc::IFF_UP as libc::c_short;
    ioctl(
        &sock,
        libc::SIOCSIFFLAGS,
        &mut req,
        &format!("setting {dev} up"),
    )
}

fn set_address(dev: &str, address: Ipv4Addr, prefix: u8) -> Result<()> {
    let sock = inet_socket()?;
    let mut req = IfreqAddr {
        name: if_name(dev)?,
        addr: sockaddr(address),
        _pad: [0; 8],
    };
    ioctl(&sock, libc::SIOCSIFADDR, &mut req, "SIOCSIFADDR")?;
    let mut req = IfreqAddr {
        name: if_name(dev)?,
        addr: sockaddr(prefix_mask(prefix)),
        _pad: [0; 8],
    };
    ioctl(&sock, libc::SIOCSIFNETMASK, &mut req, "SIOCSIFNETMASK")?;
    let mut req = IfreqAddr {
        name: if_name(dev)?,
        addr: sockaddr(broadcast(address, prefix)),
        _pad: [0; 8],
    };
    ioctl(&sock, libc::SIOCSIFBRDADDR, &mut req, "SIOCSIFBRDADDR")
}

/// `struct rtentry` (linux/route.h), which the C library of this build does not declare.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr_in,
    rt_gateway: libc::sockaddr_in,
    rt_genmask: libc::sockaddr_in,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn add_default_route(dev: &str, gateway: Ipv4Addr) -> Result<()> {
    const RTF_UP: libc::c_ushort = 0x0001;
    const RTF_GATEWAY: libc::c_ushort = 0x0002;
    let sock = inet_socket()?;
    let mut name = [0 as libc::c_char; 16];
    for (d, s) in name.iter_mut().zip(if_name(dev)?) {
        *d = s as libc::c_char;
    }
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr(gateway),
        rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_flags: RTF_UP | RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: name.as_mut_ptr(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    ioctl(&sock, libc::SIOCADDRT, &mut rt, "SIOCADDRT")
}

/// `struct vlan_ioctl_args` (linux/if_vlan.h) for ADD_VLAN_CMD.
#[repr(C)]
struct VlanIoctlArgs {
    cmd: libc::c_int,
    device1: [u8; 24],
    vid: libc::c_int,
    _union_rest: [u8; 20],
    vlan_qos: libc::c_short,
}

/// Adds the VLAN device `<nic>.<vlan>` (the kernel's default naming).
fn add_vlan(nic: &str, vlan: u16) -> Result<String> {
    const ADD_VLAN_CMD: libc::c_int = 0;
    const SIOCSIFVLAN: libc::c_ulong = 0x8983;
    let dev = format!("{nic}.{vlan}");
    if Path::new("/sys/class/net").join(&dev).exists() {
        return Ok(dev);
    }
    let sock = inet_socket()?;
    let mut device1 = [0u8; 24];
    device1[..16].copy_from_slice(&if_name(nic)?);
    let mut args = VlanIoctlArgs {
        cmd: ADD_VLAN_CMD,
        device1,
        vid: libc::c_int::from(vlan),
        _union_rest: [0; 20],
        vlan_qos: 0,
    };
    ioctl(
        &sock,
        SIOCSIFVLAN,
        &mut args,
        &format!("adding VLAN {vlan} on {nic}"),
    )?;
    Ok(dev)
}

// ---- DHCP (RFC 2131, options RFC 2132) ----

pub const DHCP_DISCOVER: u8 = 1;
pub const DHCP_OFFER: u8 = 2;
pub const DHCP_REQUEST: u8 = 3;
pub const DHCP_ACK: u8 = 5;
pub const DHCP_NAK: u8 = 6;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// A client message: DISCOVER, or REQUEST for an offered address.
pub fn dhcp_client_message(
    kind: u8,
    xid: u32,
    mac: [u8; 6],
    secs: u16,
    request: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let mut m = vec![0u8; 236];
    m[0] = 1; // BOOTREQUEST
    m[1] = 1; // Ethernet
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[8..10].copy_from_slice(&secs.to_be_bytes());
    // BROADCAST: the client has no address yet and cannot take a unicast answer.
    m[10..12].copy_from_slice(&0x8000u16.to_be_bytes());
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&MAGIC_COOKIE);
    m.extend_from_slice(&[53, 1, kind]);
    let mut client_id = vec![61, 7, 1];
    client_id.extend_from_slice(&mac);
    m.extend_from_slice(&client_id);
    if let Some((address, server)) = request {
        m.extend_from_slice(&[50, 4]);
        m.extend_from_slice(&address.octets());
        m.extend_from_slice(&[54, 4]);
        m.extend_from_slice(&server.octets());
    }
    // Subnet mask, router, name servers, lease time, server id.
    m.extend_from_slice(&[55, 5, 1, 3, 6, 51, 54]);
    m.push(255);
    // Some servers drop messages shorter than a BOOTP packet (300 bytes).
    if m.len() < 300 {
        m.resize(300, 0);
    }
    m
}

/// A server's answer, as far as the client needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpReply {
    pub kind: u8,
    pub xid: u32,
    pub yiaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub subnet_mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub lease_seconds: Option<u32>,
    pub server: Option<Ipv4Addr>,
}

fn addresses(value: &[u8]) -> Vec<Ipv4Addr> {
    value
        .chunks_exact(4)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        .collect()
}

/// Parses a BOOTREPLY with its DHCP options; `Err` says why it is not one.
pub fn parse_dhcp_reply(b: &[u8]) -> std::result::Result<DhcpReply, String> {
    if b.len() < 240 {
        return Err(format!("{} bytes, shorter than a DHCP message", b.len()));
    }
    if b[0] != 2 {
        return Err("not a BOOTREPLY".into());
    }
    if b[236..240] != MAGIC_COOKIE {
        return Err("no DHCP magic cookie".into());
    }
    let mut r = DhcpReply {
        kind: 0,
        xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        yiaddr: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        chaddr: [b[28], b[29], b[30], b[31], b[32], b[33]],
        subnet_mask: None,
        routers: Vec::new(),
        dns: Vec::new(),
        lease_seconds: None,
        server: None,
    };
    let mut i = 240;
    while i < b.len() {
        let code = b[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = *b.get(i + 1).ok_or("an option without a length")? as usize;
        let value = b
            .get(i + 2..i + 2 + len)
            .ok_or(format!("option {code} runs past the end"))?;
        match (code, len) {
            (53, 1) => r.kind = value[0],
            (1, 4) => r.subnet_mask = addresses(value).first().copied(),
            (3, _) => r.routers = addresses(value),
            (6, _) => r.dns = addresses(value),
            (51, 4) => {
                r.lease_seconds = Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]]))
            }
            (54, 4) => r.server = addresses(value).first().copied(),
            _ => {}
        }
        i += 2 + len;
    }
    if r.kind == 0 {
        return Err("no DHCP message type".into());
    }
    Ok(r)
}

/// An acknowledged lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_seconds: Option<u32>,
}

/// The lease an ACK grants. Without a subnet mask option the classful
/// default applies, as RFC 2131 clients do.
pub fn lease_from(ack: &DhcpReply, server: Ipv4Addr) -> std::result::Result<Lease, String> {
    if ack.yiaddr.is_unspecified() || ack.yiaddr.is_broadcast() {
        return Err(format!("the ACK grants the address {}", ack.yiaddr));
    }
    let prefix = match ack.subnet_mask {
        Some(mask) => {
            mask_prefix(mask).ok_or(format!("the subnet mask {mask} is not contiguous"))?
        }
        None => match ack.yiaddr.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
    };
    Ok(Lease {
        address: ack.yiaddr,
        prefix,
        router: ack.routers.first().copied(),
        dns: ack.dns.clone(),
        server: ack.server.unwrap_or(server),
        lease_seconds: ack.lease_seconds,
    })
}

fn dhcp_socket(dev: &str) -> Result<UdpSocket> {
    // SAFETY: socket(2) with constant arguments; the descriptor goes straight into a UdpSocket.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening the DHCP socket");
    }
    // SAFETY: fd is fresh and owned by nothing else.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let set = |level, name, value: *const libc::c_void, len: usize, what: &str| -> Result<()> {
        // SAFETY: value points to len readable bytes for the duration of the call.
        if unsafe { libc::setsockopt(fd, level, name, value, len as libc::socklen_t) } != 0 {
            return Err(std::io::Error::last_os_error()).context(what.to_owned());
        }
        Ok(())
    };
    let ptr = &one as *const libc::c_int as *const libc::c_void;
    set(
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        ptr,
        std::mem::size_of::<libc::c_int>(),
        "SO_REUSEADDR",
    )?;
    set(
        libc::SOL_SOCKET,
        libc::SO_BROADCAST,
        ptr,
        std::mem::size_of::<libc::c_int>(),
        "SO_BROADCAST",
    )?;
    // Only this device: the answer must come from the network the NIC is on.
    set(
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        dev.as_ptr() as *const libc::c_void,
        dev.len(),
        &format!("SO_BINDTODEVICE {dev}"),
    )?;
    let addr = sockaddr_port(Ipv4Addr::UNSPECIFIED, 68);
    // SAFETY: addr is a valid sockaddr_in of the given length.
    if unsafe {
        libc::bind(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error()).context("binding the DHCP client port 68");
    }
    Ok(sock)
}

fn sockaddr_port(a: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_port: port.to_be(),
        ..sockaddr(a)
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u32::from_ne_bytes(b);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x1f2e3d4c, |d| d.subsec_nanos())
}

/// Waits for a reply of one of `kinds` to `xid` until `until`.
fn await_reply(
    sock: &UdpSocket,
    xid: u32,
    mac: [u8; 6],
    kinds: &[u8],
    until: Instant,
) -> Option<DhcpReply> {
    let mut buf = [0u8; 1500];
    loop {
        let left = until.checked_duration_since(Instant::now())?;
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            return None;
        };
        match parse_dhcp_reply(&buf[..n]) {
            Ok(r) if r.xid == xid && r.chaddr == mac && kinds.contains(&r.kind) => return Some(r),
            Ok(_) => {}
            Err(why) => info!("network: ignoring a datagram from {from}: {why}"),
        }
    }
}

/// DISCOVER, OFFER, REQUEST, ACK; retransmits with backoff (2, 4, 8 s …)
/// within [`DHCP_BUDGET`].
fn dhcp(dev: &str, mac: [u8; 6], tried: &mut Tried) -> Result<Lease> {
    let sock = dhcp_socket(dev)?;
    let to = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, 67));
    let start = Instant::now();
    let deadline = start + DHCP_BUDGET;
    let xid = random_u32();
    let mut discovers = 0u32;
    let mut wait = Duration::from_secs(2);
    while Instant::now() < deadline {
        discovers += 1;
        let secs = u16::try_from(start.elapsed().as_secs()).unwrap_or(u16::MAX);
        sock.send_to(
            &dhcp_client_message(DHCP_DISCOVER, xid, mac, secs, None),
            to,
        )
        .with_context(|| format!("sending DHCPDISCOVER on {dev}"))?;
        let until = (Instant::now() + wait).min(deadline);
        wait = (wait * 2).min(Duration::from_secs(8));
        let Some(offer) = await_reply(&sock, xid, mac, &[DHCP_OFFER], until) else {
            continue;
        };
        let server = offer
            .server
            .context("the DHCP offer names no server (option 54)")?;
        info!("network: DHCPOFFER {} from {server}", offer.yiaddr);
        let request =
            dhcp_client_message(DHCP_REQUEST, xid, mac, secs, Some((offer.yiaddr, server)));
        for _ in 0..3 {
            sock.send_to(&request, to)
                .with_context(|| format!("sending DHCPREQUEST on {dev}"))?;
            let until = (Instant::now() + Duration::from_secs(3)).min(deadline);
            match await_reply(&sock, xid, mac, &[DHCP_ACK, DHCP_NAK], until) {
                Some(r) if r.kind == DHCP_ACK => {
                    let lease = lease_from(&r, server).map_err(anyhow::Error::msg)?;
                    tried.note(format!(
                        "DHCP on {dev}: lease {}/{} from {} after {discovers} DISCOVER(s), {:.1} s",
                        lease.address,
                        lease.prefix,
                        lease.server,
                        start.elapsed().as_secs_f64()
                    ));
                    return Ok(lease);
                }
                Some(_) => {
                    tried.note(format!(
                        "DHCP on {dev}: {server} refused {} (NAK)",
                        offer.yiaddr
                    ));
                    break;
                }
                None => {}
            }
        }
    }
    tried.note(format!(
        "DHCP on {dev}: {discovers} DISCOVER(s) over {:.0} s, no lease",
        start.elapsed().as_secs_f64()
    ));
    bail!(
        "no DHCP server gave {dev} an address within {} s",
        DHCP_BUDGET.as_secs()
    )
}

// ---- addresses ----

pub fn prefix_mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    })
}

fn broadcast(address: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(address) | !u32::from(prefix_mask(prefix)))
}

pub fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/').context("no /prefix")?;
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .context("the prefix is not 0 to 32")?;
    Ok((a.parse().context("not an IPv4 address")?, prefix))
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    parts.try_into().ok()
}

// ---- the mirror probe ----

/// The parts of an http:// or https:// URL (checked by the builder; here
/// only split).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Starts with '/'.
    pub path: String,
}

pub fn parse_url(s: &str) -> Result<Url> {
    let (https, rest) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => bail!("{s:?} is not an http:// or https:// URL"),
    };
    let (authority, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .with_context(|| format!("the port of {s:?}"))?,
        ),
        None => (authority, if https { 443 } else { 80 }),
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
    {
        bail!("{s:?} has no usable host");
    }
    if path.chars().any(|c| c.is_control() || c == ' ') {
        bail!("{s:?} has a path that cannot go into a request line");
    }
    Ok(Url {
        https,
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

impl Url {
    pub fn join(&self, rel: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let default = if self.https { 443 } else { 80 };
        let port = if self.port == default {
            String::new()
        } else {
            format!(":{}", self.port)
        };
        format!(
            "{scheme}://{}{port}{}/{rel}",
            self.host,
            self.path.trim_end_matches('/')
        )
    }

    fn host_header(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The request line and headers of a GET for `url` (absolute-form when
/// sent to a proxy).
pub fn get_request(url: &Url, rel: &str, via_proxy: bool) -> String {
    let target = if via_proxy {
        url.join(rel)
    } else {
        format!("{}/{rel}", url.path.trim_end_matches('/'))
    };
    format!("GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: imgforge-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n", url.host_header())
}

/// The status code of an HTTP/1.x status line.
pub fn status_of(line: &str) -> Option<u16> {
    let mut words = line.split_whitespace();
    let version = words.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    words
        .next()?
        .parse()
        .ok()
        .filter(|s| (100..600).contains(s))
}

/// A DNS query for the A records of `name`.
pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The A records of a DNS answer to query `id`.
pub fn dns_answers(id: u16, b: &[u8]) -> std::result::Result<Vec<Ipv4Addr>, String> {
    if b.len() < 12 || u16::from_be_bytes([b[0], b[1]]) != id {
        return Err("not an answer to this query".into());
    }
    let rcode = b[3] & 0x0f;
    if rcode != 0 {
        return Err(format!("the name server answered with error code {rcode}"));
    }
    let (qd, an) = (
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]),
    );
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let len = *b.get(i)? as usize;
            match len {
                0 => return Some(i + 1),
                l if l & 0xc0 == 0xc0 => return Some(i + 2),
                l => i += l + 1,
            }
        }
    };
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(i).ok_or("a truncated question")? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(i).ok_or("a truncated answer")?;
        let head = b.get(i..i + 10).ok_or("a truncated answer")?;
        let (kind, len) = (
            u16::from_be_bytes([head[0], head[1]]),
            u16::from_be_bytes([head[8], head[9]]) as usize,
        );
        let data = b.get(i + 10..i + 10 + len).ok_or("a truncated answer")?;
        if kind == 1 && len == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        i += 10 + len;
    }
    Ok(out)
}

pub fn resolve(host: &str, port: u16, dns: &[Ipv4Addr]) -> Result<SocketAddr> {
    if let Ok(a) = host.parse::<Ipv4Addr>() {
        return Ok(SocketAddr::V4(SocketAddrV4::new(a, port)));
    }
    if dns.is_empty() {
        bail!("{host} is a name, and there is no name server (set packages.network.dns, or have DHCP hand one out)");
    }
    let mut last = String::new();
    for server in dns {
        let id = (random_u32() & 0xffff) as u16;
        let outcome = (|| -> Result<Vec<Ipv4Addr>> {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            sock.set_read_timeout(Some(Duration::from_secs(3)))?;
            sock.send_to(&dns_query(id, host), (*server, 53))?;
            let mut buf = [0u8; 1500];
            let (n, _) = sock.recv_from(&mut buf)?;
            dns_answers(id, &buf[..n]).map_err(anyhow::Error::msg)
        })();
        match outcome {
            Ok(a) if !a.is_empty() => return Ok(SocketAddr::V4(SocketAddrV4::new(a[0], port))),
            Ok(_) => last = format!("{server}: no A record"),
            Err(e) => last = format!("{server}: {e:#}"),
        }
    }
    bail!("looking up {host}: {last}")
}

/// One attempt: the status of the first answer (none for https: connected only).
fn probe_once(
    mirror: &Url,
    proxy: Option<&Url>,
    rel: &str,
    dns: &[Ipv4Addr],
) -> Result<Option<u16>> {
    let (host, port) = match proxy {
        Some(p) => (p.host.as_str(), p.port),
        None => (mirror.host.as_str(), mirror.port),
    };
    let addr = resolve(host, port, dns)?;
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    // https goes through TLS (apt's, through the proxy by CONNECT): the
    // installer checks that the connection is made, not the answer.
    if mirror.https {
        return Ok(None);
    }
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    stream
        .write_all(get_request(mirror, rel, proxy.is_some()).as_bytes())
        .with_context(|| format!("sending the request to {addr}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 1024 {
        match stream.read(&mut byte) {
            Ok(0) => bail!("{addr} closed the connection before an HTTP answer"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                bail!("{addr} closed the connection before an HTTP answer (reset)")
            }
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e).with_context(|| format!("waiting for {addr}'s answer")),
        }
    }
    let line = String::from_utf8_lossy(&head).trim_end().to_owned();
    status_of(&line)
        .map(Some)
        .with_context(|| format!("{addr} answered {line:?}, not HTTP"))
}

/// GETs `rel` under `base` until it answers, with backoff within
/// [`PROBE_BUDGET`]; `what` names the server and `fix` says what to check
/// when it answers 4xx.
pub fn probe_url(
    base: &Url,
    proxy: Option<&Url>,
    rel: &str,
    dns: &[Ipv4Addr],
    tried: &mut Tried,
    what: &str,
    fix: &str,
) -> Result<Probe> {
    let mirror = base;
    let url = mirror.join(rel);
    let start = Instant::now();
    let mut backoff = Duration::from_secs(1);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let outcome = probe_once(mirror, proxy, rel, dns);
        let seconds = start.elapsed().as_secs_f64();
        let last = match outcome {
            Ok(status @ (None | Some(200..=299))) => {
                let answer = status.map_or(
                    "connected (https: the TLS session is apt's)".to_owned(),
                    |s| format!("HTTP {s}"),
                );
                tried.note(format!(
                    "GET {url}{}: {answer} after {attempts} attempt(s), {seconds:.1} s",
                    if proxy.is_some() {
                        " via the proxy"
                    } else {
                        ""
                    }
                ));
                return Ok(Probe {
                    url,
                    attempts,
                    status,
                    seconds,
                    via_proxy: proxy.is_some(),
                });
            }
            Ok(Some(s @ 400..=499)) => {
                tried.note(format!("GET {url}: HTTP {s}"));
                bail!("{what} answered HTTP {s} for {url}: {fix}");
            }
            Ok(Some(s)) => format!("HTTP {s}"),
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() + backoff >= PROBE_BUDGET {
            tried.note(format!(
                "GET {url}: {attempts} attempt(s) over {seconds:.0} s, last: {last}"
            ));
            bail!(
                "{what} did not answer {url} within {} s: {last}",
                PROBE_BUDGET.as_secs()
            );
        }
        info!(
            "network: GET {url} (attempt {attempts}): {last}; again in {} s",
            backoff.as_secs()
        );
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(16));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// A server message as slirp (QEMU's user networking) sends it, built
    /// byte by byte after RFC 2131 section 2 and RFC 2132.
    fn server_message(kind: u8, xid: u32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&[2, 1, 6, 0]); // op BOOTREPLY, htype Ethernet, hlen 6, hops
        m.extend_from_slice(&xid.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0x80, 0]); // secs, flags BROADCAST
        m.extend_from_slice(&[0, 0, 0, 0]); // ciaddr
        m.extend_from_slice(&[10, 0, 2, 15]); // yiaddr
        m.extend_from_slice(&[10, 0, 2, 2]); // siaddr
        m.extend_from_slice(&[0, 0, 0, 0]); // giaddr
        m.extend_from_slice(&MAC);
        m.extend_from_slice(&[0; 10]); // rest of chaddr
        m.extend_from_slice(&[0; 64]); // sname
        m.extend_from_slice(&[0; 128]); // file
        m.extend_from_slice(&[99, 130, 83, 99]);
        m.extend_from_slice(&[53, 1, kind]);
        m.extend_from_slice(&[54, 4, 10, 0, 2, 2]);
        m.extend_from_slice(&[51, 4, 0, 1, 0x51, 0x80]); // 86400 s
        m.extend_from_slice(&[1, 4, 255, 255, 255, 0]);
        m.extend_from_slice(&[0]); // a pad option in between
        m.extend_from_slice(&[3, 4, 10, 0, 2, 2]);
        m.extend_from_slice(&[6, 8, 10, 0, 2, 3, 192, 0, 2, 53]);
        m.push(255);
        m.resize(548, 0);
        m
    }

    #[test]
    fn an_offer_and_an_ack_give_the_lease_with_router_and_name_servers() {
        let offer = parse_dhcp_reply(&server_message(DHCP_OFFER, 0xdead_beef)).expect("parses");
        assert_eq!(offer.kind, DHCP_OFFER);
        assert_eq!(offer.xid, 0xdead_beef);
        assert_eq!(offer.chaddr, MAC);
        assert_eq!(offer.yiaddr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(offer.server, Some(Ipv4Addr::new(10, 0, 2, 2)));
        let ack = parse_dhcp_reply(&server_message(DHCP_ACK, 7)).expect("parses");
        let lease = lease_from(&ack, Ipv4Addr::new(10, 0, 2, 2)).expect("a lease");
        assert_eq!(
            lease,
            Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(192, 0, 2, 53)],
                server: Ipv4Addr::new(10, 0, 2, 2),
                lease_seconds: Some(86400),
            }
        );
    }

    #[test]
    fn replies_that_are_not_dhcp_are_refused_with_the_reason() {
        let good = server_message(DHCP_ACK, 1);
        assert!(parse_dhcp_reply(&good[..200])
            .expect_err("short")
            .contains("shorter than a DHCP message"));
        let mut request = good.clone();
        request[0] = 1;
        assert!(parse_dhcp_reply(&request)
            .expect_err("op")
            .contains("BOOTREPLY"));
        let mut cookie = good.clone();
        cookie[236] = 0;
        assert!(parse_dhcp_reply(&cookie)
            .expect_err("cookie")
            .contains("magic cookie"));
        let mut overrun = good[..240].to_vec();
        overrun.extend_from_slice(&[53, 1, 5, 6, 8, 10, 0]);
        assert!(parse_dhcp_reply(&overrun)
            .expect_err("overrun")
            .contains("option 6 runs past the end"));
        let mut bad_mask = parse_dhcp_reply(&good).expect("parses");
        bad_mask.subnet_mask = Some(Ipv4Addr::new(255, 0, 255, 0));
        assert!(lease_from(&bad_mask, Ipv4Addr::LOCALHOST)
            .expect_err("mask")
            .contains("not contiguous"));
    }

    #[test]
    fn client_messages_follow_rfc_2131() {
        let m = dhcp_client_message(
            DHCP_REQUEST,
            0x0102_0304,
            MAC,
            3,
            Some((Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(10, 0, 2, 2))),
        );
        assert_eq!(m.len(), 300);
        assert_eq!(&m[..4], &[1, 1, 6, 0]);
        assert_eq!(&m[4..8], &[1, 2, 3, 4]);
        assert_eq!(&m[8..10], &[0, 3]);
        assert_eq!(&m[10..12], &[0x80, 0], "the BROADCAST flag");
        assert_eq!(
            &m[12..28],
            &[0; 16],
            "ciaddr, yiaddr, siaddr, giaddr are zero"
        );
        assert_eq!(&m[28..34], &MAC);
        assert_eq!(&m[236..240], &MAGIC_COOKIE);
        let options = &m[240..];
        assert_eq!(&options[..3], &[53, 1, DHCP_REQUEST]);
        let find = |code: u8| {
            let mut i = 0;
            while options[i] != 255 {
                if options[i] == code {
                    return Some(options[i + 2..i + 2 + options[i + 1] as usize].to_vec());
                }
                i += 2 + options[i + 1] as usize;
            }
            None
        };
        assert_eq!(find(50), Some(vec![10, 0, 2, 15]), "requested address");
        assert_eq!(find(54), Some(vec![10, 0, 2, 2]), "server identifier");
        assert_eq!(
            find(55),
            Some(vec![1, 3, 6, 51, 54]),
            "parameter request list"
        );
        let discover = dhcp_client_message(DHCP_DISCOVER, 9, MAC, 0, None);
        assert_eq!(&discover[240..243], &[53, 1, DHCP_DISCOVER]);
        assert!(
            discover[243..].windows(2).all(|w| w != [50, 4]),
            "a DISCOVER requests no address"
        );
    }

    #[test]
    fn masks_prefixes_and_cidrs() {
        assert_eq!(prefix_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(prefix_mask(32), Ipv4Addr::BROADCAST);
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(
            broadcast(Ipv4Addr::new(10, 0, 2, 15), 24),
            Ipv4Addr::new(10, 0, 2, 255)
        );
        assert_eq!(
            parse_cidr("192.0.2.10/24").expect("parses"),
            (Ipv4Addr::new(192, 0, 2, 10), 24)
        );
        assert!(parse_cidr("192.0.2.10").is_err() && parse_cidr("192.0.2.10/33").is_err());
        assert_eq!(parse_mac("52:54:00:12:34:56"), Some(MAC));
        assert_eq!(parse_mac("52:54:00"), None);
    }

    #[test]
    fn the_probe_asks_for_the_suites_inrelease_directly_or_through_the_proxy() {
        let mirror = parse_url("http://10.0.2.100:8080/").expect("parses");
        assert_eq!(
            mirror.join("dists/noble/InRelease"),
            "http://10.0.2.100:8080/dists/noble/InRelease"
        );
        assert_eq!(
            get_request(&mirror, "dists/noble/InRelease", false),
            "GET /dists/noble/InRelease HTTP/1.1\r\nHost: 10.0.2.100:8080\r\nUser-Agent: imgforge-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let ubuntu = parse_url("http://archive.ubuntu.com/ubuntu").expect("parses");
        let via = get_request(&ubuntu, "dists/noble/InRelease", true);
        assert!(via.starts_with("GET http://archive.ubuntu.com/ubuntu/dists/noble/InRelease HTTP/1.1\r\nHost: archive.ubuntu.com\r\n"), "{via}");
        assert_eq!(parse_url("https://m.example/u/").expect("parses").port, 443);
        assert!(
            parse_url("ftp://m/").is_err()
                && parse_url("http://a b/").is_err()
                && parse_url("http://m/\r\nX: y").is_err()
        );
        assert_eq!(status_of("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_of("HTTP/1.0 404 Not Found"), Some(404));
        assert_eq!(status_of("SSH-2.0-OpenSSH"), None);
        assert_eq!(status_of("HTTP/1.1 abc"), None);
    }

    #[test]
    fn dns_queries_and_answers() {
        let q = dns_query(0x1234, "archive.ubuntu.com");
        assert_eq!(&q[..12], &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            &q[12..],
            b"\x07archive\x06ubuntu\x03com\x00\x00\x01\x00\x01"
        );
        // The answer repeats the question and points back at its name (0xc00c).
        let mut a = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        a.extend_from_slice(&q[12..]);
        a.extend_from_slice(&[0xc0, 0x0c, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 0x0c]); // a CNAME, skipped
        a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 185, 125, 190, 36]);
        assert_eq!(
            dns_answers(0x1234, &a),
            Ok(vec![Ipv4Addr::new(185, 125, 190, 36)])
        );
        assert!(dns_answers(0x4321, &a).is_err());
        let mut nx = a.clone();
        nx[3] = 0x83;
        assert!(dns_answers(0x1234, &nx)
            .expect_err("NXDOMAIN")
            .contains("error code 3"));
        assert!(dns_answers(0x1234, &a[..a.len() - 2])
            .expect_err("truncated")
            .contains("truncated"));
    }

    #[test]
    fn the_probe_reads_the_status_of_a_real_http_answer_and_names_a_silent_close() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("address").port();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().expect("the probe connects");
            let mut buf = [0u8; 1024];
            let n = c.read(&mut buf).expect("the request");
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .expect("answering");
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            drop(c);
            let (c, _) = listener.accept().expect("the second probe connects");
            drop(c);
            request
        });
        let mirror = parse_url(&format!("http://127.0.0.1:{port}/ubuntu/")).expect("parses");
        assert_eq!(
            probe_once(&mirror, None, "dists/noble/InRelease", &[]).expect("answers"),
            Some(200)
        );
        let err = probe_once(&mirror, None, "dists/noble/InRelease", &[]).expect_err("closed");
        assert!(
            format!("{err:#}").contains("closed the connection before an HTTP answer"),
            "{err:#}"
        );
        let request = server.join().expect("the server");
        assert!(
            request.starts_with("GET /ubuntu/dists/noble/InRelease HTTP/1.1\r\n"),
            "{request}"
        );
    }
}
