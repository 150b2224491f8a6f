//! `imgforge serve --dnsmasq`: a dnsmasq configuration that network-boots
//! machines into a profile's installer from this server, next to the
//! network's own DHCP server (proxy DHCP: dnsmasq hands out no addresses,
//! only where to boot from).
//!
//! The PXE tree is assumed to be `DIR/<profile>-pxe/` holding
//! `bootx64.efi` (shim, which UEFI firmware loads over TFTP; it loads the
//! tree's network grub, which reads `grub/grub.cfg` from the TFTP root,
//! so the tree is that root) and `boot.ipxe` (the iPXE script, fetched
//! over HTTP from this server by clients that already run iPXE).

use std::net::Ipv4Addr;
use std::path::Path;

/// What the configuration points at.
#[derive(Debug, Clone)]
pub struct PxeSetup<'a> {
    /// The served directory (absolute).
    pub tree: &'a Path,
    /// The profile whose `<profile>-pxe/` tree machines boot.
    pub profile: &'a str,
    /// The network (its address) on which dnsmasq answers PXE clients.
    pub subnet: Ipv4Addr,
    /// The interface dnsmasq listens on; every interface when `None`.
    pub interface: Option<&'a str>,
    /// This server as the machines reach it, `http://HOST[:PORT]`.
    pub public_url: &'a str,
}

/// The name of a profile's PXE directory under the served tree.
pub fn pxe_dir(profile: &str) -> String {
    format!("{profile}-pxe")
}

/// The configuration file's text. Every value is checked against what a
/// dnsmasq option line can carry (no commas, quotes, spaces or newlines).
pub fn config(setup: &PxeSetup<'_>) -> Result<String, String> {
    let PxeSetup {
        tree,
        profile,
        subnet,
        interface,
        public_url,
    } = setup;
    if profile.is_empty()
        || profile.starts_with(['.', '-'])
        || !profile
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "--pxe-profile {profile:?}: write the profile's name (letters, digits, '.', '_', '-')"
        ));
    }
    if let Some(iface) = interface {
        if iface.is_empty()
            || iface.len() > 15
            || !iface
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(format!(
                "--dhcp-interface {iface:?}: write a network interface name such as eth0 (at most 15 letters, digits, '.', '_', '-')"
            ));
        }
    }
    let url = public_url.trim_end_matches('/');
    let host = url.strip_prefix("http://").unwrap_or("");
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    {
        return Err(format!(
            "--public-url {public_url:?}: write http://HOST[:PORT], the address machines reach this server at (iPXE fetches plain HTTP)"
        ));
    }
    let root = tree.join(pxe_dir(profile));
    let root = root
        .to_str()
        .filter(|r| r.starts_with('/') && !r.contains([',', '"', '\n', '\r', '#']) && !r.contains(char::is_whitespace))
        .ok_or_else(|| {
            format!(
                "the PXE tree {} must be an absolute path without spaces, commas, quotes or '#' for dnsmasq's tftp-root",
                root.display()
            )
        })?;
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line(&format!(
        "# dnsmasq configuration from `imgforge serve --dnsmasq` for profile {profile}."
    ));
    line("# Proxy DHCP: the network's DHCP server still hands out the addresses;");
    line("# dnsmasq only tells PXE clients what to boot. Run (as root, for ports 67, 69, 4011):");
    line("#   dnsmasq --keep-in-foreground --conf-file=THIS_FILE");
    line(&format!(
        "# Assumed PXE tree: {root}/ with bootx64.efi (shim, over TFTP) and boot.ipxe (over HTTP)."
    ));
    line("");
    line("# No DNS service.");
    line("port=0");
    if let Some(iface) = interface {
        line(&format!("interface={iface}"));
        line("bind-interfaces");
    }
    line(&format!("dhcp-range={subnet},proxy"));
    line("log-dhcp");
    line("");
    line("# UEFI firmware (client architectures 7 and 9) loads shim over TFTP; shim loads");
    line("# grubx64.efi beside it, which reads /grub/grub.cfg: the tree is the TFTP root.");
    line("enable-tftp");
    line(&format!("tftp-root={root}"));
    line("");
    line("# A client that runs iPXE says so in its user class: it gets the script over HTTP.");
    line("dhcp-userclass=set:ipxe,iPXE");
    for arch in ["x86-64_EFI", "BC_EFI"] {
        line(&format!(
            "pxe-service=tag:!ipxe,{arch},\"imgforge {profile}\",bootx64.efi"
        ));
        line(&format!(
            "pxe-service=tag:ipxe,{arch},\"imgforge {profile} (iPXE)\",{url}/{}/boot.ipxe",
            pxe_dir(profile)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn setup<'a>(profile: &'a str, iface: Option<&'a str>, url: &'a str) -> PxeSetup<'a> {
        PxeSetup {
            tree: Path::new("/srv/imgforge"),
            profile,
            subnet: Ipv4Addr::new(192, 0, 2, 0),
            interface: iface,
            public_url: url,
        }
    }

    #[test]
    fn the_configuration_points_at_the_pxe_tree_and_this_server() {
        let text = config(&setup("hypervisor", Some("eth0"), "http://192.0.2.5:8080/")).unwrap();
        for want in [
            "port=0\n",
            "interface=eth0\nbind-interfaces\n",
            "dhcp-range=192.0.2.0,proxy\n",
            "tftp-root=/srv/imgforge/hypervisor-pxe\n",
            "pxe-service=tag:!ipxe,x86-64_EFI,\"imgforge hypervisor\",bootx64.efi\n",
            "pxe-service=tag:ipxe,BC_EFI,\"imgforge hypervisor (iPXE)\",http://192.0.2.5:8080/hypervisor-pxe/boot.ipxe\n",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        let without = config(&setup("hypervisor", None, "http://pxe.example")).unwrap();
        assert!(!without.contains("interface="), "{without}");
    }

    #[test]
    fn values_that_would_break_an_option_line_are_refused() {
        for (profile, iface, url) in [
            ("a,b", None, "http://h"),
            ("../x", None, "http://h"),
            ("ok", Some("eth0\nport=53"), "http://h"),
            ("ok", None, "https://h"),
            ("ok", None, "http://h/x,y"),
            ("ok", None, "http://"),
        ] {
            assert!(
                config(&setup(profile, iface, url)).is_err(),
                "{profile} {iface:?} {url}"
            );
        }
    }
}
