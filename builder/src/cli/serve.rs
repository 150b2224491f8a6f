//! `imgforge serve DIR`: serve a tree over HTTP, collect the installers'
//! events and show every machine; or, with `--dnsmasq`, print the
//! matching dnsmasq configuration.

use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::serve::{dnsmasq, view, Options, Server};

// No doc comment: the subcommand's help comes from its variant in `Command`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The directory whose files are served at their paths (`/`, `/events`,
    /// `/events/stream` and `/machines` are the server's own).
    dir: PathBuf,
    /// The address to listen on, exactly as given: 0.0.0.0:8080 is every
    /// interface, and every address that reaches it sees the status page.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The bearer token that POST /events needs (others on this machine can
    /// see it in the process list; prefer --token-file).
    #[arg(long, value_name = "TOKEN", group = "auth")]
    token: Option<String>,
    /// Read the bearer token from the first line of FILE.
    #[arg(long, value_name = "FILE", group = "auth")]
    token_file: Option<PathBuf>,
    /// Accept events from anyone who reaches the address, without a token.
    #[arg(long, group = "auth")]
    no_token: bool,
    /// The event log: one JSON line per stored event, synced to disk before
    /// the sender is answered; read back on start. Keep it outside DIR.
    #[arg(long, value_name = "FILE", default_value = "imgforge-events.jsonl")]
    log: PathBuf,
    /// Print each stored event as one JSON line on stdout instead of the
    /// table of machines (which is drawn only on a terminal).
    #[arg(long)]
    json: bool,
    /// Print a dnsmasq configuration for proxy DHCP and TFTP that network-boots
    /// machines from DIR/<PROFILE>-pxe/, then exit. UEFI PXE clients get
    /// bootx64.efi over TFTP with the tree as the TFTP root (shim loads the
    /// tree's network grub, which reads grub/grub.cfg, the kernel and the initrd
    /// from there); iPXE clients get boot.ipxe over HTTP from this server.
    #[arg(long, requires_all = ["pxe_profile", "dhcp_subnet"])]
    dnsmasq: bool,
    /// With --dnsmasq: the profile whose PXE tree DIR/<PROFILE>-pxe/ machines boot.
    #[arg(long, value_name = "PROFILE", requires = "dnsmasq")]
    pxe_profile: Option<String>,
    /// With --dnsmasq: the network (its address, e.g. 192.0.2.0) whose PXE clients dnsmasq answers.
    #[arg(long, value_name = "NETWORK", requires = "dnsmasq")]
    dhcp_subnet: Option<Ipv4Addr>,
    /// With --dnsmasq: the interface dnsmasq listens on (default: all).
    #[arg(long, value_name = "IFACE", requires = "dnsmasq")]
    dhcp_interface: Option<String>,
    /// With --dnsmasq: this server as the machines reach it, http://HOST[:PORT]
    /// (default: http://<--listen> when that is neither a loopback nor an
    /// unspecified address).
    #[arg(long, value_name = "URL", requires = "dnsmasq")]
    public_url: Option<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.dnsmasq {
        print!("{}", dnsmasq_config(&args)?);
        return Ok(ExitCode::SUCCESS);
    }
    let token = token(&args)?;
    let (server, reopened) = Server::bind(Options {
        tree: args.dir.clone(),
        listen: args.listen,
        token,
        log: args.log.clone(),
    })?;
    let addr = server.local_addr()?;
    if reopened.torn_bytes > 0 {
        tracing::warn!(
            "event log {}: dropped a torn last line ({} bytes, never acknowledged)",
            args.log.display(),
            reopened.torn_bytes
        );
    }
    tracing::info!(
        "event log {}: {} events read back",
        args.log.display(),
        reopened.records
    );
    tracing::info!("listening on http://{addr}/ (status page at /, events: POST /events)");
    let events = server.watch();
    let machines = server.machines_reader();
    let server = std::thread::Builder::new()
        .name("serve-accept".into())
        .spawn(move || server.run())
        .context("starting the server's thread")?;
    let table = !args.json && std::io::stdout().is_terminal();
    let header = format!(
        "imgforge serve on http://{addr}/  log {}",
        args.log.display()
    );
    let mut stdout = std::io::stdout().lock();
    let mut drawn: Option<Instant> = None;
    let mut changed = true;
    loop {
        match events.recv_timeout(Duration::from_millis(250)) {
            Ok(published) => {
                if table {
                    changed = true;
                } else {
                    writeln!(stdout, "{}", published.json).context("writing an event to stdout")?;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if server.is_finished() {
            break;
        }
        // Redrawn on change (at most 5 times a second) and every second for the ages.
        let since = drawn.map_or(Duration::MAX, |d| d.elapsed());
        if table
            && ((changed && since >= Duration::from_millis(200)) || since >= Duration::from_secs(1))
        {
            let text = view::table(
                &machines.machines(),
                &format!("{header}  {} events", machines.events()),
            );
            write!(stdout, "\x1b[H\x1b[2J{text}")
                .and_then(|()| stdout.flush())
                .context("drawing the table on stdout")?;
            drawn = Some(Instant::now());
            changed = false;
        }
    }
    match server.join() {
        Ok(result) => result.map(|()| ExitCode::SUCCESS),
        Err(_) => anyhow::bail!("the server's thread panicked"),
    }
}

/// The token from --token or --token-file; none only with --no-token.
fn token(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    if let Some(token) = &args.token {
        anyhow::ensure!(
            !token.trim().is_empty(),
            "--token is empty; give a secret token"
        );
        return Ok(Some(token.trim().to_owned()));
    }
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim();
        anyhow::ensure!(
            !token.is_empty(),
            "the token file {} is empty; write a secret token on its first line",
            path.display()
        );
        return Ok(Some(token.to_owned()));
    }
    anyhow::ensure!(
        args.no_token,
        "POST /events needs a bearer token: pass --token-file FILE (or --token TOKEN), \
         or --no-token to accept events from anyone who can reach {}",
        args.listen
    );
    Ok(None)
}

fn dnsmasq_config(args: &ServeArgs) -> anyhow::Result<String> {
    let tree = match args.dir.canonicalize() {
        Ok(dir) => dir,
        Err(_) => std::path::absolute(&args.dir)
            .with_context(|| format!("making {} an absolute path", args.dir.display()))?,
    };
    let profile = args.pxe_profile.as_deref().unwrap_or_default();
    let pxe = tree.join(dnsmasq::pxe_dir(profile));
    if !pxe.is_dir() {
        tracing::warn!(
            "{} does not exist yet; the configuration assumes bootx64.efi and boot.ipxe there",
            pxe.display()
        );
    }
    let public_url = match &args.public_url {
        Some(url) => url.clone(),
        None => {
            let ip = args.listen.ip();
            anyhow::ensure!(
                !ip.is_unspecified() && !ip.is_loopback(),
                "--listen {} is not an address other machines reach; pass --public-url http://HOST:PORT",
                args.listen
            );
            format!("http://{}", args.listen)
        }
    };
    let subnet = args
        .dhcp_subnet
        .context("--dnsmasq needs --dhcp-subnet NETWORK")?;
    dnsmasq::config(&dnsmasq::PxeSetup {
        tree: Path::new(&tree),
        profile,
        subnet,
        interface: args.dhcp_interface.as_deref(),
        public_url: &public_url,
    })
    .map_err(anyhow::Error::msg)
}
