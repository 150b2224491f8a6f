//! Network installs: the NIC the machine booted from, brought up with
//! DHCP; the payload (the verified ISO and the bundle) streamed over HTTP
//! from the PXE tree with Range requests that resume after a broken
//! connection, and checked against the plan's SHA-256 before it is used.
//!
//! Memory stays that of a USB install: nothing is held in RAM. Each file
//! is streamed twice. First in the payload step, hashed and thrown away,
//! so that a file that is not the one the installer was built with stops
//! the install before any disk is touched; then, in the download step
//! after partitioning, into the tail of the target's root partition (the
//! root filesystem is made smaller until the packages are in, then grown
//! over it), hashed again on the way (the server may have changed it
//! since), and only then attached and mounted like the install medium.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use imgforge_plan::{FileDigest, HttpPayload, InstallAddress, InstallNetwork};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::info;

use crate::disks::Medium;
use crate::modules::Hardware;
use crate::net::{self, NetUp, Url};
use crate::report::Step;

/// The NIC named by the boot loader must show up within this.
const NIC_WAIT: Duration = Duration::from_secs(20);
/// One connection attempt or read, at most.
const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// A file gives up after this many attempts in a row that brought no byte.
const STALLED_ATTEMPTS: u32 = 6;

/// The MAC of the NIC the machine booted from, from the kernel command
/// line: `imgforge.bootif=52:54:00:12:34:56` (our grub.cfg and iPXE script)
/// or pxelinux's `BOOTIF=01-52-54-00-12-34-56`. Lower case, with colons.
pub fn boot_mac(cmdline: &str) -> Option<String> {
    for word in cmdline.split_whitespace() {
        let mac = if let Some(v) = word.strip_prefix("imgforge.bootif=") {
            v.replace('-', ":")
        } else if let Some(v) = word.strip_prefix("BOOTIF=") {
            // The hardware type (01: Ethernet) comes first.
            v.split_once('-')?.1.replace('-', ":")
        } else {
            continue;
        };
        let mac = mac.to_ascii_lowercase();
        let parts: Vec<&str> = mac.split(':').collect();
        if parts.len() == 6
            && parts
                .iter()
                .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Some(mac);
        }
    }
    None
}

/// A fixed address for the network install from the kernel command line's
/// `imgforge.ip=` (or `ip=`) in the form the kernel and dracut read:
/// `<address>::<gateway>:<netmask>[:<hostname>[:<device>[:<autoconf>[:<dns0>[:<dns1>]]]]]`,
/// for networks where DHCP only serves the boot ROMs: e.g.
/// `imgforge.ip=${ip}::${gateway}:${netmask}:::off` in an iPXE script
/// (`imgforge.ip=` leaves kernels that configure `ip=` themselves alone).
/// `None` without one, or with `dhcp`.
pub fn static_address(cmdline: &str) -> Result<Option<InstallNetwork>> {
    let last = |prefix: &str| {
        cmdline
            .split_whitespace()
            .rev()
            .find_map(|w| w.strip_prefix(prefix))
    };
    let Some(value) = last("imgforge.ip=").or_else(|| last("ip=")) else {
        return Ok(None);
    };
    if matches!(value, "dhcp" | "on" | "any" | "both") {
        return Ok(None);
    }
    let fields: Vec<&str> = value.split(':').collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    let ipv4 = |what: &str, v: &str| -> Result<std::net::Ipv4Addr> {
        v.parse()
            .with_context(|| format!("ip={value}: the {what} {v:?} is not an IPv4 address"))
    };
    let address = ipv4("address", field(0))?;
    let gateway = ipv4("gateway", field(2))?;
    let mask = u32::from(ipv4("netmask", field(3))?);
    let prefix = mask.leading_ones();
    if mask.checked_shl(prefix).unwrap_or(0) != 0 || prefix == 0 {
        bail!(
            "ip={value}: the netmask {} is not a prefix such as 255.255.255.0",
            field(3)
        );
    }
    if !matches!(field(6), "" | "off" | "none" | "static") {
        bail!(
            "ip={value}: autoconf {:?} with a fixed address; write off (or ip=dhcp for DHCP)",
            field(6)
        );
    }
    let dns = [field(7), field(8)]
        .into_iter()
        .filter(|d| !d.is_empty())
        .map(|d| ipv4("name server", d).map(|a| a.to_string()))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(InstallNetwork {
        interface: field(5).to_owned(),
        vlan: None,
        address: InstallAddress::Static(format!("{address}/{prefix}")),
        gateway: Some(gateway.to_string()),
        dns,
        proxy: None,
    }))
}

/// The NIC to install over: the one with the boot loader's MAC, or the only
/// NIC there is; loads drivers for devices that show up late.
fn boot_nic(wanted: Option<&str>, hw: &mut Hardware) -> Result<(String, String)> {
    let start = Instant::now();
    loop {
        let all = crate::identify::physical_nics(std::path::Path::new(crate::identify::SYSFS));
        let pick = match wanted {
            Some(mac) => all.iter().find(|(_, m)| m == mac).cloned(),
            None if all.len() == 1 => all.first().cloned(),
            None => None,
        };
        if let Some(nic) = pick {
            return Ok(nic);
        }
        if start.elapsed() > NIC_WAIT {
            let seen = if all.is_empty() {
                "no NIC".to_owned()
            } else {
                all.iter()
                    .map(|(n, m)| format!("{n} ({m})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match wanted {
                Some(mac) => bail!(
                    "the machine booted from the NIC with MAC {mac}, and after {} s the installer sees {seen}: \
                     its driver is not in the ISO's kernel modules; nothing was written to any disk",
                    NIC_WAIT.as_secs()
                ),
                None => bail!(
                    "the boot loader did not say which NIC the machine booted from (no imgforge.bootif= or BOOTIF= \
                     on the kernel command line) and the installer sees {seen}; boot with the tree's boot.ipxe or \
                     grub/grub.cfg, which pass it; nothing was written to any disk"
                ),
            }
        }
        hw.coldplug();
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The network step of a network install: the NIC the machine booted
/// from, its DHCP lease, and the tree's first HTTP answer, with timings.
pub fn network(http: &HttpPayload, hw: &mut Hardware, step: &mut Step) -> Result<NetUp> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let wanted = boot_mac(&cmdline);
    let fixed = static_address(&cmdline)?;
    let (nic, mac) = boot_nic(wanted.as_deref(), hw)?;
    step.started(
        Some(format!(
            "bringing up {nic} ({mac}), the NIC the machine booted from, to reach {}",
            http.url
        )),
        None,
    );
    let base =
        net::parse_url(&http.url).with_context(|| format!("the plan's URL {:?}", http.url))?;
    let config = match fixed {
        Some(fixed) => {
            if !fixed.interface.is_empty() && fixed.interface != nic {
                bail!(
                    "the kernel's ip= names the device {}, but the machine booted from {nic} ({mac}); nothing was written to any disk. \
                     Leave the device out of ip= (the installer uses the NIC it booted from)",
                    fixed.interface
                );
            }
            InstallNetwork {
                interface: nic.clone(),
                ..fixed
            }
        }
        None => InstallNetwork {
            interface: nic.clone(),
            vlan: None,
            address: InstallAddress::Dhcp,
            gateway: None,
            dns: Vec::new(),
            proxy: None,
        },
    };
    let mut tried = net::Tried::default();
    let up = net::bring_up_with(
        &config,
        &mut |name| hw.load_named(name),
        &mut tried,
        &mut |dns, tried| {
            net::probe_url(
                &base,
                None,
                &http.iso.path,
                dns,
                tried,
                "the PXE tree's server",
                "check that it serves the tree this installer was built for at pxe.url",
            )
        },
    )
    .with_context(|| {
        format!(
            "the network install could not reach {} over {nic} ({mac}) (tried: {}); nothing was written to any disk. \
             Check the cable and switch port, the DHCP server, and that the server serves the tree",
            http.url,
            if tried.steps.is_empty() { "nothing yet".to_owned() } else { tried.steps.join("; ") }
        )
    })?;
    step.done(format!(
        "{} {} ({}) after {:.1} s (link {:.1} s); {} answered HTTP {} after {:.1} s",
        up.device,
        up.address,
        up.method,
        up.address_seconds,
        up.link_seconds,
        up.probe.url,
        up.probe.status.unwrap_or_default(),
        up.probe.seconds
    ));
    step.data(serde_json::to_value(&up).unwrap_or_default());
    Ok(up)
}

/// The medium of a network install: none to keep out of the disk
/// selection; the ISO is fetched over HTTP.
pub fn medium(http: &HttpPayload, up: &NetUp) -> Medium {
    Medium {
        disk: None,
        partition_device: String::new(),
        carriers: Vec::new(),
        boot_device: format!("network: {} ({})", up.interface, up.mac),
        how: format!("booted from the network; the ISO comes from {}", http.url),
    }
}

/// The payload step of a network install: every payload file streamed
/// once and checked against the plan; nothing is kept, nothing is written.
pub fn verify_remote(http: &HttpPayload, up: &NetUp, step: &mut Step) -> Result<()> {
    let base = net::parse_url(&http.url)?;
    let files = payload_files(http);
    let total: u64 = files.iter().map(|f| f.size).sum();
    step.started(
        Some(format!(
            "checking {} over HTTP against the plan before any disk is touched",
            files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>()
                .join(" and ")
        )),
        Some(total),
    );
    let started = Instant::now();
    let mut meter = Meter::new(total);
    for f in &files {
        fetch(&base, f, &up.dns, &mut |_| Ok(()), &mut |n| {
            if let Some(p) = meter.add(n) {
                step.progress(p, meter.done);
            }
        })
        .map_err(|e| e.context("nothing was written to any disk"))?;
    }
    let secs = started.elapsed().as_secs_f64();
    step.bytes(total);
    step.done(format!(
        "{} checked over HTTP: {total} bytes in {secs:.1} s",
        files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>()
            .join(" and ")
    ));
    step.data(json!({
        "url": http.url,
        "files": files,
        "seconds": secs,
        "bytes_per_second": total as f64 / secs.max(1e-6),
    }));
    Ok(())
}

/// The ISO first, then the bundle.
fn payload_files(http: &HttpPayload) -> Vec<FileDigest> {
    std::iter::once(http.iso.clone())
        .chain(http.bundle.clone())
        .collect()
}

/// Where the payload goes on the target: the tail of the root partition,
/// which the root filesystem leaves free until the payload is released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scratch {
    /// Byte offset of the ISO in the root partition (1 MiB aligned).
    pub iso_offset: u64,
    /// Byte offset of the bundle, after the ISO (1 MiB aligned).
    pub bundle_offset: Option<u64>,
    /// The root filesystem's size while the payload is there: up to the ISO.
    pub fs_bytes: u64,
}

const MIB: u64 = 1 << 20;
/// The installed system needs at least this much beside the payload.
const MIN_SYSTEM: u64 = 4 << 30;

/// Places the payload at the end of a root partition of `root_bytes`.
pub fn scratch(http: &HttpPayload, root_bytes: u64) -> Result<Scratch> {
    let iso_len = http.iso.size.next_multiple_of(MIB);
    let bundle_len = http
        .bundle
        .as_ref()
        .map_or(0, |b| b.size.next_multiple_of(MIB));
    let need = iso_len + bundle_len;
    if root_bytes < need + MIN_SYSTEM {
        bail!(
            "the root partition has {root_bytes} bytes; a network install keeps the payload ({need} bytes) at its end \
             until the packages are in, and the system needs {MIN_SYSTEM} more: use a larger disk (the profile's disk rules)"
        );
    }
    let iso_offset = (root_bytes - need) / MIB * MIB;
    Ok(Scratch {
        iso_offset,
        bundle_offset: http.bundle.as_ref().map(|_| iso_offset + iso_len),
        fs_bytes: iso_offset,
    })
}

/// The download step: each payload file streamed into its place in the
/// root partition `device`, hashed on the way and checked before
/// anything reads it.
pub fn download(
    http: &HttpPayload,
    up: &NetUp,
    device: &str,
    at: &Scratch,
    step: &mut Step,
) -> Result<()> {
    let base = net::parse_url(&http.url)?;
    let files: Vec<(FileDigest, u64)> = std::iter::once((http.iso.clone(), at.iso_offset))
        .chain(http.bundle.clone().zip(at.bundle_offset))
        .collect();
    let total: u64 = files.iter().map(|(f, _)| f.size).sum();
    step.started(
        Some(format!(
            "fetching {total} bytes from {} into the end of {device} (free until the packages are in)",
            http.url
        )),
        Some(total),
    );
    let started = Instant::now();
    let mut meter = Meter::new(total);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .with_context(|| format!("opening {device}"))?;
    for (f, offset) in &files {
        std::io::Seek::seek(&mut out, std::io::SeekFrom::Start(*offset))
            .with_context(|| format!("seeking {device} to {offset}"))?;
        fetch(
            &base,
            f,
            &up.dns,
            &mut |chunk| {
                out.write_all(chunk)
                    .with_context(|| format!("writing {device}"))
            },
            &mut |n| {
                if let Some(p) = meter.add(n) {
                    step.progress(p, meter.done);
                }
            },
        )?;
        // Zeros up to the next MiB, as on the stick's partition, where
        // readers of the archive may look past its last byte.
        let pad = (f.size.next_multiple_of(MIB) - f.size) as usize;
        out.write_all(&vec![0u8; pad])
            .with_context(|| format!("writing {device}"))?;
        info!(
            "{} at byte {offset} of {device}: SHA-256 {} checked",
            f.path, f.sha256
        );
    }
    out.sync_all()
        .with_context(|| format!("flushing {device}"))?;
    let secs = started.elapsed().as_secs_f64();
    step.bytes(total);
    step.done(format!("{total} bytes fetched and checked in {secs:.1} s"));
    step.data(json!({
        "url": http.url,
        "device": device,
        "iso_offset": at.iso_offset,
        "bundle_offset": at.bundle_offset,
        "files": files.iter().map(|(f, _)| f).collect::<Vec<_>>(),
        "seconds": secs,
        "bytes_per_second": total as f64 / secs.max(1e-6),
    }));
    Ok(())
}

/// Progress in tenths.
struct Meter {
    total: u64,
    done: u64,
    next: f64,
}

impl Meter {
    fn new(total: u64) -> Self {
        Meter {
            total,
            done: 0,
            next: 10.0,
        }
    }

    /// Counts `n` more bytes; the percentage when another tenth is reached.
    fn add(&mut self, n: u64) -> Option<f64> {
        self.done += n;
        let p = self.done as f64 * 100.0 / self.total.max(1) as f64;
        (p >= self.next).then(|| {
            self.next += 10.0;
            p
        })
    }
}

/// The head of an HTTP answer: the status, Content-Length and where a
/// partial answer starts.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub length: Option<u64>,
    pub range_start: Option<u64>,
    pub chunked: bool,
}

/// Parses an HTTP/1.x answer head (up to the blank line).
pub fn parse_head(head: &str) -> std::result::Result<Head, String> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = net::status_of(status_line)
        .ok_or_else(|| format!("{status_line:?} is not an HTTP status line"))?;
    let mut out = Head {
        status,
        length: None,
        range_start: None,
        chunked: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                out.length = Some(
                    value
                        .parse()
                        .map_err(|_| format!("Content-Length {value:?}"))?,
                )
            }
            "content-range" => {
                let start = value
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(s, _)| s.parse().ok())
                    .ok_or_else(|| format!("Content-Range {value:?}"))?;
                out.range_start = Some(start);
            }
            "transfer-encoding" => out.chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    Ok(out)
}

/// The GET of `path` under `base` from byte `from` on.
pub fn range_request(base: &Url, path: &str, from: u64) -> String {
    let mut req = net::get_request(base, path, false);
    if from > 0 {
        // Before the blank line that ends the head.
        req.truncate(req.len() - 2);
        req.push_str(&format!("Range: bytes={from}-\r\n\r\n"));
    }
    req
}

/// Streams one file: `sink` gets the bytes in order, `progress` their
/// count; a broken connection resumes where it stopped (Range), with
/// backoff, until [`STALLED_ATTEMPTS`] attempts in a row bring nothing.
/// The whole file must have the plan's size and SHA-256.
fn fetch(
    base: &Url,
    file: &FileDigest,
    dns: &[Ipv4Addr],
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let url = base.join(&file.path);
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let mut stalled = 0u32;
    let mut backoff = Duration::from_millis(500);
    let mut buf = vec![0u8; 1 << 20];
    while done < file.size {
        let before = done;
        let outcome = (|| -> std::result::Result<(), Attempt> {
            let addr = net::resolve(&base.host, base.port, dns).map_err(Attempt::Retry)?;
            let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
                .with_context(|| format!("connecting to {addr}"))
                .map_err(Attempt::Retry)?;
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
            stream
                .write_all(range_request(base, &file.path, done).as_bytes())
                .context("sending the request")
                .map_err(Attempt::Retry)?;
            let (head, rest) = read_head(&mut stream).map_err(Attempt::Retry)?;
            let head = parse_head(&head)
                .map_err(|e| anyhow::anyhow!("{url}: {e}"))
                .map_err(Attempt::Fatal)?;
            match (head.status, head.range_start) {
                (200, _) if done == 0 => {}
                (206, Some(start)) if start == done => {}
                (200, _) => return Err(Attempt::Fatal(anyhow::anyhow!(
                    "{url}: HTTP 200 for bytes {done}-: the server ignores Range requests, so the broken download cannot resume; \
                     serve the tree with a server that honours Range (imgforge serve does)"
                ))),
                (s @ 500..=599, _) => return Err(Attempt::Retry(anyhow::anyhow!("{url}: HTTP {s}"))),
                (s, _) => return Err(Attempt::Fatal(anyhow::anyhow!(
                    "{url}: HTTP {s} for bytes {done}-: the server does not serve the tree this installer was built for"
                ))),
            }
            if head.chunked {
                return Err(Attempt::Fatal(anyhow::anyhow!("{url}: the answer is chunked; serve the tree as static files (with Content-Length)")));
            }
            let mut take = |chunk: &[u8], done: &mut u64| -> std::result::Result<(), Attempt> {
                let room = (file.size - *done) as usize;
                if chunk.len() > room {
                    return Err(Attempt::Fatal(anyhow::anyhow!(
                        "{url} is longer than the {} bytes in the plan: the server has another file; it was not used",
                        file.size
                    )));
                }
                hasher.update(chunk);
                sink(chunk).map_err(Attempt::Fatal)?;
                *done += chunk.len() as u64;
                progress(chunk.len() as u64);
                Ok(())
            };
            take(&rest, &mut done)?;
            loop {
                let n = stream
                    .read(&mut buf)
                    .context("reading the answer")
                    .map_err(Attempt::Retry)?;
                if n == 0 {
                    break;
                }
                take(&buf[..n], &mut done)?;
            }
            Ok(())
        })();
        match outcome {
            Ok(()) if done == file.size => break,
            Ok(()) => info!(
                "{url}: the connection ended after {done} of {} bytes; resuming",
                file.size
            ),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(e)) => info!("{url}: {e:#}; resuming at byte {done}"),
        }
        if done > before {
            stalled = 0;
            backoff = Duration::from_millis(500);
        } else {
            stalled += 1;
            if stalled >= STALLED_ATTEMPTS {
                bail!("{url}: no data in {STALLED_ATTEMPTS} attempts in a row after byte {done} of {}", file.size);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(8));
        }
    }
    let got = hex(&hasher.finalize());
    if got != file.sha256 {
        bail!(
            "{url} has SHA-256 {got}, but the plan says {}: the server's file is not the one this installer was built with \
             (rebuild the tree, or copy it again; it was not used)",
            file.sha256
        );
    }
    Ok(())
}

/// How one attempt of a download failed: worth another, or not.
enum Attempt {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads up to the blank line; returns the head and the body bytes read past it.
fn read_head(stream: &mut TcpStream) -> Result<(String, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..i]).into_owned();
            return Ok((head, got[i + 4..].to_vec()));
        }
        if got.len() > 64 * 1024 {
            bail!("the answer's head is longer than 64 KiB");
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            bail!("the server closed the connection before the answer's head ended");
        }
        got.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_address_comes_from_the_kernels_ip_argument() {
        let cmdline = "console=ttyS0 ip=10.0.2.60::10.0.2.2:255.255.255.0:hv02::off:10.0.2.3 quiet";
        let fixed = static_address(cmdline).unwrap().expect("a fixed address");
        assert_eq!(fixed.address, InstallAddress::Static("10.0.2.60/24".into()));
        assert_eq!(fixed.gateway.as_deref(), Some("10.0.2.2"));
        assert_eq!(fixed.dns, ["10.0.2.3"]);
        assert_eq!(fixed.interface, "");
        let named = static_address("ip=192.0.2.9::192.0.2.1:255.255.254.0::eth1:none")
            .unwrap()
            .unwrap();
        assert_eq!(named.address, InstallAddress::Static("192.0.2.9/23".into()));
        assert_eq!(named.interface, "eth1");
        assert!(named.dns.is_empty());
        let ours = static_address("ip=dhcp imgforge.ip=10.0.2.61::10.0.2.2:255.255.255.0")
            .unwrap()
            .unwrap();
        assert_eq!(ours.address, InstallAddress::Static("10.0.2.61/24".into()));
        for dhcp in ["", "console=ttyS0", "ip=dhcp", "ip=on", "imgforge.ip=dhcp"] {
            assert!(static_address(dhcp).unwrap().is_none(), "{dhcp}");
        }
        for (bad, says) in [
            (
                "ip=10.0.2.60::10.0.2.2:255.0.255.0:::off",
                "is not a prefix",
            ),
            ("ip=10.0.2.60::10.0.2.2:0.0.0.0:::off", "is not a prefix"),
            (
                "ip=10.0.2.60::10.0.2.2:255.255.255.0:::dhcp",
                "autoconf \"dhcp\"",
            ),
            (
                "ip=10.0.2.600::10.0.2.2:255.255.255.0",
                "address \"10.0.2.600\"",
            ),
            ("ip=10.0.2.60:::255.255.255.0", "gateway \"\""),
            (
                "ip=10.0.2.60::10.0.2.2:255.255.255.0:::off:x",
                "name server \"x\"",
            ),
        ] {
            let err = format!("{:#}", static_address(bad).unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_boot_nic_comes_from_either_kernel_argument() {
        assert_eq!(
            boot_mac("console=ttyS0 imgforge.bootif=52:54:00:12:34:0A ---").as_deref(),
            Some("52:54:00:12:34:0a")
        );
        assert_eq!(
            boot_mac("BOOTIF=01-52-54-00-12-34-01 quiet").as_deref(),
            Some("52:54:00:12:34:01")
        );
        assert_eq!(
            boot_mac("imgforge.bootif= x"),
            None,
            "an empty value (grub without a network)"
        );
        assert_eq!(boot_mac("imgforge.bootif=52:54:00:12:34"), None);
        assert_eq!(boot_mac("imgforge.bootif=zz:54:00:12:34:01"), None);
        assert_eq!(boot_mac("quiet"), None);
    }

    #[test]
    fn the_payload_sits_at_the_end_of_the_root_partition() {
        let file = |size| FileDigest {
            path: "x".into(),
            sha256: String::new(),
            size,
        };
        let http = HttpPayload {
            url: "http://10.0.2.100/hv-pxe/".into(),
            iso: file(220_950_528),
            bundle: Some(file(42_539_564)),
        };
        let root = 40u64 << 30;
        let at = scratch(&http, root).unwrap();
        assert_eq!(at.iso_offset % MIB, 0);
        assert_eq!(at.fs_bytes, at.iso_offset);
        assert_eq!(at.bundle_offset, Some(at.iso_offset + 211 * MIB));
        assert_eq!(
            at.bundle_offset.unwrap() + 41 * MIB,
            root,
            "the bundle ends the partition"
        );
        let err = scratch(&http, 4 << 30).unwrap_err().to_string();
        assert!(err.contains("use a larger disk"), "{err}");
    }

    #[test]
    fn range_requests_resume_and_heads_are_read() {
        let base = net::parse_url("http://10.0.2.100:8080/hv-pxe/").unwrap();
        assert_eq!(
            range_request(&base, "install.iso", 0),
            "GET /hv-pxe/install.iso HTTP/1.1\r\nHost: 10.0.2.100:8080\r\nUser-Agent: imgforge-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            range_request(&base, "install.iso", 4096),
            "GET /hv-pxe/install.iso HTTP/1.1\r\nHost: 10.0.2.100:8080\r\nUser-Agent: imgforge-agent\r\nAccept: */*\r\nConnection: close\r\nRange: bytes=4096-\r\n\r\n"
        );
        assert_eq!(
            parse_head("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 4096-9999/10000\r\ncontent-length: 5904"),
            Ok(Head { status: 206, length: Some(5904), range_start: Some(4096), chunked: false })
        );
        assert_eq!(
            parse_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"),
            Ok(Head {
                status: 200,
                length: None,
                range_start: None,
                chunked: true
            })
        );
        assert!(parse_head("SSH-2.0-OpenSSH").is_err());
        assert!(parse_head("HTTP/1.1 206 x\r\nContent-Range: items 1-2").is_err());
    }

    /// A server that answers each connection with the next canned reply.
    fn serve(replies: Vec<Vec<u8>>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for reply in replies {
                let (mut s, _) = listener.accept().unwrap();
                let mut req = Vec::new();
                let mut b = [0u8; 1];
                while !req.ends_with(b"\r\n\r\n") {
                    s.read_exact(&mut b).unwrap();
                    req.push(b[0]);
                }
                requests.push(String::from_utf8(req).unwrap());
                let _ = s.write_all(&reply);
            }
            requests
        });
        (port, handle)
    }

    fn digest(body: &[u8]) -> FileDigest {
        FileDigest {
            path: "install.iso".into(),
            sha256: hex(&Sha256::digest(body)),
            size: body.len() as u64,
        }
    }

    #[test]
    fn a_broken_download_resumes_with_a_range_and_the_whole_is_checked() {
        let body = b"0123456789abcdefghij".to_vec();
        let replies = vec![
            // Cut after 8 of 20 bytes.
            [b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n".as_slice(), &body[..8]].concat(),
            [b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 8-19/20\r\nContent-Length: 12\r\n\r\n".as_slice(), &body[8..]].concat(),
        ];
        let (port, server) = serve(replies);
        let base = net::parse_url(&format!("http://127.0.0.1:{port}/t/")).unwrap();
        let mut got = Vec::new();
        let mut counted = 0;
        fetch(
            &base,
            &digest(&body),
            &[],
            &mut |c| {
                got.extend_from_slice(c);
                Ok(())
            },
            &mut |n| counted += n,
        )
        .unwrap();
        assert_eq!(got, body);
        assert_eq!(counted, 20);
        let requests = server.join().unwrap();
        assert!(!requests[0].contains("Range:"), "{requests:?}");
        assert!(requests[1].contains("Range: bytes=8-\r\n"), "{requests:?}");
    }

    #[test]
    fn a_file_that_differs_from_the_plan_is_refused() {
        let body = b"0123456789abcdefghij".to_vec();
        let mut bad = body.clone();
        bad[3] ^= 1;
        let (port, server) = serve(vec![[
            b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n".as_slice(),
            &bad,
        ]
        .concat()]);
        let base = net::parse_url(&format!("http://127.0.0.1:{port}/t/")).unwrap();
        let err = fetch(&base, &digest(&body), &[], &mut |_| Ok(()), &mut |_| {}).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("has SHA-256") && text.contains("but the plan says"),
            "{text}"
        );
        server.join().unwrap();

        let longer = [body.as_slice(), b"!"].concat();
        let (port, server) = serve(vec![
            [b"HTTP/1.1 200 OK\r\n\r\n".as_slice(), &longer].concat()
        ]);
        let base = net::parse_url(&format!("http://127.0.0.1:{port}/t/")).unwrap();
        let err = fetch(&base, &digest(&body), &[], &mut |_| Ok(()), &mut |_| {}).unwrap_err();
        assert!(
            format!("{err:#}").contains("is longer than the 20 bytes in the plan"),
            "{err:#}"
        );
        server.join().unwrap();
    }

    #[test]
    fn a_server_that_ignores_the_range_is_not_appended() {
        let body = b"0123456789abcdefghij".to_vec();
        let replies = vec![
            [
                b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n".as_slice(),
                &body[..8],
            ]
            .concat(),
            // Python's http.server: the whole file again, 200.
            [
                b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n".as_slice(),
                &body,
            ]
            .concat(),
        ];
        let (port, server) = serve(replies);
        let base = net::parse_url(&format!("http://127.0.0.1:{port}/t/")).unwrap();
        let err = fetch(&base, &digest(&body), &[], &mut |_| Ok(()), &mut |_| {}).unwrap_err();
        assert!(
            format!("{err:#}").contains("HTTP 200 for bytes 8-: the server ignores Range requests"),
            "{err:#}"
        );
        server.join().unwrap();
    }
}
