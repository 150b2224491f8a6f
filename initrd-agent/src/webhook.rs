//! Events over HTTP: every event the installer (or the first boot) emits
//! also goes into a queue that a sender thread POSTs to the plan's
//! `report.webhook` in batches (`imgforge serve`'s `POST /events`
//! protocol). An event leaves the queue only when the server answered 2xx
//! for the batch that held it; until then it is retried with backoff, and
//! once the target disk is mounted it is also in a spool there, which the
//! installed system's first boot replays. Delivery is at-least-once: a
//! resend carries the same (machine, boot, seq), and the server dedupes.
//!
//! The console is always written first and never depends on any of this;
//! failures here are quiet (one log line per change of state).

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use imgforge_plan::{Event, Identity, ReportPlan};
use tracing::{info, warn};

use crate::net::{self, Url};

/// The spool on the installed system; the installer writes it under the
/// target's mount point.
pub const SPOOL_DIR: &str = "/var/spool/imgforge";
/// Every event not acknowledged when it was spooled, one JSON object a line.
pub const EVENTS_FILE: &str = "events.jsonl";
/// The highest acknowledged seq of each boot: `{"<boot>": seq, …}`.
pub const ACKED_FILE: &str = "acked";
/// How long the installer (and the first boot) waits for the queue to
/// drain before its final action; what is left stays in the spool.
pub const FLUSH_WAIT: Duration = Duration::from_secs(20);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
// Tests retry fast; the schedule's shape is the same.
const BACKOFF_FIRST: Duration = Duration::from_millis(if cfg!(test) { 20 } else { 500 });
const BACKOFF_MAX: Duration = Duration::from_millis(if cfg!(test) { 200 } else { 8000 });
/// A batch stays well under serve's 1 MiB body limit.
const BATCH_EVENTS: usize = 64;
const BATCH_BYTES: usize = 256 << 10;
/// Events kept in memory at most; older ones beyond it are only in the spool.
const MAX_QUEUED: usize = 10_000;
/// Where the spool's filesystem is mounted again when the target was
/// already unmounted before the last events could be written.
const REMOUNT_AT: &str = "/run/imgforge/spool-remount";

/// Where events go: the webhook's URL and its bearer token.
#[derive(Clone)]
pub struct Endpoint {
    pub url: Url,
    pub token: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.display())
    }
}

impl Endpoint {
    /// The plan's webhook, when it has one (the builder checked the URL).
    pub fn from_plan(report: &ReportPlan) -> Option<Endpoint> {
        let raw = report.webhook.as_deref()?;
        match net::parse_url(raw) {
            Ok(url) if !url.https => Some(Endpoint {
                url,
                token: report.token.as_ref().map(|t| t.0.clone()),
            }),
            Ok(_) => {
                warn!("webhook {raw}: https is not supported; events stay on the console");
                None
            }
            Err(e) => {
                warn!("webhook {raw}: {e:#}; events stay on the console");
                None
            }
        }
    }

    /// The URL as logs show it (never the token).
    pub fn display(&self) -> String {
        format!("http://{}{}", self.host_header(), self.url.path)
    }

    fn host_header(&self) -> String {
        if self.url.port == 80 {
            self.url.host.clone()
        } else {
            format!("{}:{}", self.url.host, self.url.port)
        }
    }
}

/// The bytes of one POST of `body` (a JSON array of events).
pub fn request(endpoint: &Endpoint, body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: imgforge-agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        endpoint.url.path,
        endpoint.host_header(),
        body.len()
    );
    if let Some(token) = &endpoint.token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// What the server made of one batch.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// 2xx: every event of the batch is stored (or was before).
    Acknowledged,
    /// The server will never take this batch as it is (400, 413, 422, …).
    Refused(String),
    /// Not now: no network, no answer, 401, 5xx, … Sent again later.
    NotYet(String),
}

/// The kind of a problem, for logging once per change.
fn problem_kind(why: &str) -> String {
    why.split(':').next().unwrap_or(why).to_owned()
}

/// Posts one batch and reads the status of the answer.
fn post(endpoint: &Endpoint, dns: &[Ipv4Addr], body: &[u8]) -> Answer {
    let addr = match resolve(&endpoint.url.host, endpoint.url.port, dns) {
        Ok(a) => a,
        Err(e) => return Answer::NotYet(format!("no address: {e}")),
    };
    let mut stream = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => return Answer::NotYet(format!("connecting to {addr}: {e}")),
    };
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    if let Err(e) = stream.write_all(&request(endpoint, body)) {
        return Answer::NotYet(format!("sending to {addr}: {e}"));
    }
    // Connection: close: the answer ends where the server closes.
    let mut answer = Vec::new();
    if let Err(e) = (&mut stream).take(64 << 10).read_to_end(&mut answer) {
        if answer.is_empty() {
            return Answer::NotYet(format!("reading the answer of {addr}: {e}"));
        }
    }
    classify(&answer)
}

/// The answer's status line (and, for a refusal, its body's first line).
fn classify(answer: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(answer);
    let first = text.lines().next().unwrap_or("");
    let Some(status) = net::status_of(first) else {
        return Answer::NotYet(format!("not an HTTP answer: {:?}", truncate(first, 80)));
    };
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.lines().next().unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    let why = format!("HTTP {status}: {}", truncate(&body, 200));
    match status {
        200..=299 => Answer::Acknowledged,
        // The token, a timeout, a rate limit: the server may change its mind.
        401 | 403 | 404 | 408 | 425 | 429 => Answer::NotYet(why),
        400..=499 => Answer::Refused(why),
        _ => Answer::NotYet(why),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// An IPv4 literal as it is; a name through the install network's name
/// servers when there are any, else through the ones /etc/resolv.conf
/// names (the installed system's first boot: systemd-resolved's stub).
/// The agent is static: the C library's resolver is not relied on.
fn resolve(host: &str, port: u16, dns: &[Ipv4Addr]) -> anyhow::Result<SocketAddr> {
    if host.parse::<Ipv4Addr>().is_ok() || !dns.is_empty() {
        return net::resolve(host, port, dns);
    }
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    net::resolve(host, port, &name_servers(&conf))
}

/// The IPv4 `nameserver` lines of a resolv.conf.
fn name_servers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// A random id for this run: 32 hex characters.
pub fn new_boot_id() -> String {
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // No /dev/urandom (an initrd without devtmpfs): the clock and the
        // pid still make a collision between two machines unlikely.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mixed = now ^ (u128::from(std::process::id()) << 64);
        bytes = mixed.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The machine id the firmware gives before the identify step ran: the
/// SMBIOS UUID when it is set (the NICs are not known yet this early).
pub fn firmware_machine_id(sys: &Path) -> Option<String> {
    let uuid = std::fs::read_to_string(sys.join("class/dmi/id/product_uuid")).ok()?;
    let id = Identity::new(&[] as &[&str], Some(&uuid), None).machine_id();
    (id != "unknown").then_some(id)
}

/// The spool: a directory that holds every event not yet acknowledged.
#[derive(Debug)]
struct Spool {
    dir: PathBuf,
    /// The directory's filesystem was unmounted (the installer's last
    /// step): writes wait for [`Queue::drain`], which mounts it again.
    detached: bool,
    /// The acknowledgements changed since the marker was last written.
    acked_dirty: bool,
    /// Where the directory's filesystem came from, to mount it again.
    mount: Option<MountOf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MountOf {
    source: String,
    fstype: String,
    mountpoint: PathBuf,
}

/// Appends events to the spool's events file and syncs it.
fn append_events(dir: &Path, events: &[&Event]) -> std::io::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for ev in events {
        text.push_str(&serde_json::to_string(ev).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(EVENTS_FILE))?;
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

/// Replaces the acknowledgement marker (temp file, sync, rename).
fn write_acked(dir: &Path, acked: &BTreeMap<String, u64>) -> std::io::Result<()> {
    let tmp = dir.join(format!("{ACKED_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(
        serde_json::to_string(acked)
            .map_err(std::io::Error::other)?
            .as_bytes(),
    )?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(ACKED_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

fn read_acked(dir: &Path) -> BTreeMap<String, u64> {
    std::fs::read_to_string(dir.join(ACKED_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// What a spool holds that was never acknowledged, in the order it was
/// written, each event once; an event without a machine gets the one
/// another event of its boot names. A line that is not an event (a write
/// cut short by a power loss) is skipped.
pub fn unacknowledged(dir: &Path) -> std::io::Result<Vec<Event>> {
    let text = match std::fs::read_to_string(dir.join(EVENTS_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let acked = read_acked(dir);
    let mut seen = std::collections::BTreeSet::new();
    let mut machines: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(ev) = serde_json::from_str::<Event>(line) else {
            warn!(
                "spool {}: skipping a line that is not an event",
                dir.display()
            );
            continue;
        };
        let boot = ev.boot.clone().unwrap_or_default();
        if let Some(m) = &ev.machine {
            machines.entry(boot.clone()).or_insert_with(|| m.clone());
        }
        if ev.seq <= acked.get(&boot).copied().unwrap_or(0) || !seen.insert((boot, ev.seq)) {
            continue;
        }
        out.push(ev);
    }
    for ev in &mut out {
        if ev.machine.is_none() {
            ev.machine = machines.get(ev.boot.as_deref().unwrap_or("")).cloned();
        }
    }
    Ok(out)
}

/// The mount that holds `dir`, from /proc/self/mountinfo's text.
fn mount_of(mountinfo: &str, dir: &Path) -> Option<MountOf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mountpoint = PathBuf::from(left.split_whitespace().nth(4)?);
            let mut r = right.split_whitespace();
            let fstype = r.next()?.to_owned();
            let source = r.next()?.to_owned();
            dir.starts_with(&mountpoint).then_some(MountOf {
                source,
                fstype,
                mountpoint,
            })
        })
        .max_by_key(|m| m.mountpoint.components().count())
}

struct Pending {
    event: Event,
    spooled: bool,
}

struct Inner {
    boot: String,
    machine: Option<String>,
    /// False once it is known there is no webhook: nothing is kept.
    accepting: bool,
    endpoint: Option<Endpoint>,
    dns: Vec<Ipv4Addr>,
    pending: VecDeque<Pending>,
    spool: Option<Spool>,
    /// The highest acknowledged seq of each boot.
    acked: BTreeMap<String, u64>,
    sender: bool,
    /// The queue is being drained: send even without a machine id (one is
    /// read from the hardware then).
    draining: bool,
    /// Batches are at most this many events (halved when one is refused).
    batch_limit: usize,
}

/// The queue of events on their way to the webhook.
pub struct Queue {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl Queue {
    pub fn new(boot: String, machine: Option<String>) -> Arc<Queue> {
        Arc::new(Queue {
            inner: Mutex::new(Inner {
                boot,
                machine,
                accepting: true,
                endpoint: None,
                dns: Vec::new(),
                pending: VecDeque::new(),
                spool: None,
                acked: BTreeMap::new(),
                sender: false,
                draining: false,
                batch_limit: BATCH_EVENTS,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn boot(&self) -> String {
        self.lock().boot.clone()
    }

    /// Queues a copy of `event`, stamped with this run's boot id (and the
    /// machine id once known), and spools it when a spool is set.
    pub fn push(&self, event: &Event) {
        let mut inner = self.lock();
        if !inner.accepting {
            return;
        }
        let mut ev = event.clone();
        if ev.boot.is_none() {
            ev.boot = Some(inner.boot.clone());
        }
        if ev.machine.is_none() {
            ev.machine = inner.machine.clone();
        }
        let spooled = spool_now(&mut inner, &[&ev]);
        if inner.pending.len() >= MAX_QUEUED {
            // Bounded memory: the oldest spooled event goes first; it is
            // replayed from the spool at first boot.
            if let Some(i) = inner.pending.iter().position(|p| p.spooled) {
                inner.pending.remove(i);
            } else {
                inner.pending.pop_front();
            }
        }
        inner.pending.push_back(Pending { event: ev, spooled });
        drop(inner);
        self.changed.notify_all();
    }

    /// Queues events as they were recorded (their own boot, seq and
    /// machine): a spool's unacknowledged events, already spooled.
    pub fn replay(&self, events: Vec<Event>) {
        let mut inner = self.lock();
        for event in events {
            inner.pending.push_back(Pending {
                event,
                spooled: true,
            });
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// The machine id for events from now on, and for queued events that
    /// have none yet.
    pub fn set_machine(&self, id: String) {
        self.lock().machine = Some(id);
        self.changed.notify_all();
    }

    pub fn set_dns(&self, dns: &[Ipv4Addr]) {
        self.lock().dns = dns.to_vec();
    }

    /// Where events go: `None` (no webhook) drops what is queued and keeps
    /// nothing from now on; an endpoint starts the sender.
    pub fn configure(self: &Arc<Self>, endpoint: Option<Endpoint>) {
        let mut inner = self.lock();
        let Some(endpoint) = endpoint else {
            inner.accepting = false;
            inner.endpoint = None;
            inner.pending.clear();
            return;
        };
        info!(
            "events go to the webhook {} too ({} queued)",
            endpoint.display(),
            inner.pending.len()
        );
        inner.endpoint = Some(endpoint);
        if !inner.sender {
            inner.sender = true;
            let queue = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("webhook".into())
                .spawn(move || queue.send_loop());
            if let Err(e) = spawned {
                inner.sender = false;
                warn!("starting the webhook sender: {e}; events stay on the console");
            }
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// From now on every unacknowledged event is also in `dir`: the ones
    /// queued now at once, later ones as they come. Without a webhook
    /// nothing is written.
    pub fn spool_to(&self, dir: &Path) -> std::io::Result<()> {
        let mut inner = self.lock();
        if inner.endpoint.is_none() {
            return Ok(());
        }
        // Only the spool itself is private: the parents (the target's
        // /var/spool) get their modes from the root tree copied over them.
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let mount = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| mount_of(&m, dir));
        // What an earlier run recorded stays recorded.
        for (boot, seq) in read_acked(dir) {
            let known = inner.acked.entry(boot).or_insert(0);
            *known = (*known).max(seq);
        }
        inner.spool = Some(Spool {
            dir: dir.to_path_buf(),
            detached: false,
            acked_dirty: true,
            mount,
        });
        spool_pending(&mut inner);
        write_marker(&mut inner);
        info!(
            "events not yet acknowledged are spooled in {}",
            dir.display()
        );
        Ok(())
    }

    /// The spool's filesystem is about to be unmounted: writes wait until
    /// [`Queue::drain`] mounts it again.
    pub fn detach_spool(&self) {
        if let Some(spool) = self.lock().spool.as_mut() {
            spool.detached = true;
        }
    }

    /// Waits up to `wait` for every queued event to be acknowledged, then
    /// makes sure what is left is in the spool. Returns how many are left.
    pub fn drain(&self, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let mut inner = self.lock();
        if inner.endpoint.is_none() {
            return 0;
        }
        inner.draining = true;
        self.changed.notify_all();
        while !inner.pending.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let left = inner.pending.len();
        let detached = inner.spool.as_ref().is_some_and(|s| s.detached);
        if detached {
            persist_detached(&mut inner);
        }
        let endpoint = inner.endpoint.as_ref().map(Endpoint::display);
        let spool = inner.spool.as_ref().map(|s| s.dir.display().to_string());
        drop(inner);
        if left > 0 {
            let whereto = spool.map_or_else(
                || "they are lost (no spool yet)".to_owned(),
                |d| format!("they stay in the spool {d}"),
            );
            info!(
                "{left} events not acknowledged by the webhook {} after {} s; {whereto}",
                endpoint.unwrap_or_default(),
                wait.as_secs()
            );
        }
        left
    }

    /// The sender: batches from the front of the queue, until acknowledged.
    fn send_loop(self: Arc<Self>) {
        let mut backoff = BACKOFF_FIRST;
        let mut problem: Option<String> = None;
        let mut rng = Jitter::new(&self.boot());
        loop {
            let (endpoint, dns, batch) = {
                let mut inner = self.lock();
                loop {
                    let ready =
                        !inner.pending.is_empty() && (inner.machine.is_some() || inner.draining);
                    if ready && inner.endpoint.is_some() {
                        break;
                    }
                    inner = self.changed.wait(inner).unwrap_or_else(|e| e.into_inner());
                }
                if inner.machine.is_none() {
                    drop(inner);
                    let id = crate::identify::read_identity(Path::new("/sys")).machine_id();
                    inner = self.lock();
                    inner.machine.get_or_insert(id);
                }
                stamp_machine(&mut inner);
                let batch = take_batch(&inner);
                let endpoint = inner.endpoint.clone();
                (endpoint, inner.dns.clone(), batch)
            };
            let Some(endpoint) = endpoint else { continue };
            let body = batch_body(&batch);
            match post(&endpoint, &dns, &body) {
                Answer::Acknowledged => {
                    if problem.take().is_some() {
                        info!("webhook {}: delivering again", endpoint.display());
                    }
                    backoff = BACKOFF_FIRST;
                    self.acknowledged(batch.len());
                }
                Answer::Refused(why) => {
                    backoff = BACKOFF_FIRST;
                    self.refused(&endpoint, batch.len(), &why);
                }
                Answer::NotYet(why) => {
                    let kind = problem_kind(&why);
                    if problem.as_deref() != Some(kind.as_str()) {
                        info!(
                            "webhook {}: {why}; events wait in the queue and are sent again",
                            endpoint.display()
                        );
                        problem = Some(kind);
                    }
                    std::thread::sleep(rng.around(backoff));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// The first `n` queued events were acknowledged.
    fn acknowledged(&self, n: usize) {
        let mut inner = self.lock();
        for _ in 0..n {
            let Some(p) = inner.pending.pop_front() else {
                break;
            };
            let boot = p.event.boot.clone().unwrap_or_default();
            let known = inner.acked.entry(boot).or_insert(0);
            *known = (*known).max(p.event.seq);
        }
        if let Some(spool) = inner.spool.as_mut() {
            spool.acked_dirty = true;
        }
        inner.batch_limit = BATCH_EVENTS;
        write_marker(&mut inner);
        drop(inner);
        self.changed.notify_all();
    }

    /// The server refused a batch: smaller batches find the event it
    /// refuses, which is given up (it would be refused forever).
    fn refused(&self, endpoint: &Endpoint, n: usize, why: &str) {
        if n > 1 {
            let mut inner = self.lock();
            inner.batch_limit = (n / 2).max(1);
            return;
        }
        let seq = self.lock().pending.front().map_or(0, |p| p.event.seq);
        warn!(
            "webhook {}: the server refuses event {seq} ({why}); it is not sent again",
            endpoint.display()
        );
        self.acknowledged(1);
    }
}

/// Queued events without a machine id get the one known now, for good: a
/// resend carries the same one.
fn stamp_machine(inner: &mut Inner) {
    let Some(machine) = inner.machine.clone() else {
        return;
    };
    for p in inner.pending.iter_mut() {
        if p.event.machine.is_none() {
            p.event.machine = Some(machine.clone());
        }
    }
}

/// Copies of the events at the front of the queue, within the limits.
fn take_batch(inner: &Inner) -> Vec<Event> {
    let mut bytes = 2;
    let mut batch = Vec::new();
    for p in inner.pending.iter().take(inner.batch_limit) {
        let len = serde_json::to_string(&p.event).map_or(0, |s| s.len()) + 1;
        if !batch.is_empty() && bytes + len > BATCH_BYTES {
            break;
        }
        bytes += len;
        batch.push(p.event.clone());
    }
    batch
}

fn batch_body(batch: &[Event]) -> Vec<u8> {
    serde_json::to_vec(batch).unwrap_or_else(|_| b"[]".to_vec())
}

/// Writes events to the spool when one is attached; true when they are there.
fn spool_now(inner: &mut Inner, events: &[&Event]) -> bool {
    let Some(spool) = inner.spool.as_ref().filter(|s| !s.detached) else {
        return false;
    };
    match append_events(&spool.dir, events) {
        Ok(()) => true,
        Err(e) => {
            warn!(
                "spool {}: {e}; events wait in memory only",
                spool.dir.display()
            );
            false
        }
    }
}

/// Writes the queued events the spool lacks, and marks them written.
fn spool_pending(inner: &mut Inner) {
    let unspooled: Vec<Event> = inner
        .pending
        .iter()
        .filter(|p| !p.spooled)
        .map(|p| p.event.clone())
        .collect();
    let refs: Vec<&Event> = unspooled.iter().collect();
    if spool_now(inner, &refs) {
        for p in inner.pending.iter_mut() {
            p.spooled = true;
        }
    }
}

/// Rewrites the acknowledgement marker when it changed and the spool is attached.
fn write_marker(inner: &mut Inner) {
    let acked = inner.acked.clone();
    let Some(spool) = inner
        .spool
        .as_mut()
        .filter(|s| !s.detached && s.acked_dirty)
    else {
        return;
    };
    match write_acked(&spool.dir, &acked) {
        Ok(()) => spool.acked_dirty = false,
        Err(e) => warn!("spool {}: writing {ACKED_FILE}: {e}", spool.dir.display()),
    }
}

/// The spool's filesystem was unmounted: mount it again for a moment to
/// write the events it lacks and the marker.
fn persist_detached(inner: &mut Inner) {
    let needed = inner.pending.iter().any(|p| !p.spooled)
        || inner.spool.as_ref().is_some_and(|s| s.acked_dirty);
    let Some(spool) = inner.spool.as_mut() else {
        return;
    };
    if !needed {
        return;
    }
    let Some(m) = spool.mount.clone() else {
        warn!(
            "spool {}: its filesystem is unmounted and its device unknown; the last events are not spooled",
            spool.dir.display()
        );
        return;
    };
    let Ok(rel) = spool.dir.strip_prefix(&m.mountpoint) else {
        return;
    };
    let at = Path::new(REMOUNT_AT);
    let mounted = std::fs::create_dir_all(at).is_ok()
        && rustix::mount::mount(
            m.source.as_str(),
            at,
            m.fstype.as_str(),
            rustix::mount::MountFlags::empty(),
            None,
        )
        .is_ok();
    if !mounted {
        warn!(
            "spool {}: mounting {} again failed; the last events are not spooled",
            spool.dir.display(),
            m.source
        );
        return;
    }
    let dir = at.join(rel);
    let original = std::mem::replace(&mut spool.dir, dir);
    spool.detached = false;
    spool_pending(inner);
    write_marker(inner);
    if let Some(spool) = inner.spool.as_mut() {
        spool.dir = original;
        spool.detached = true;
    }
    if let Err(e) = rustix::mount::unmount(at, rustix::mount::UnmountFlags::empty()) {
        warn!("unmounting {REMOUNT_AT}: {e}");
    }
    rustix::fs::sync();
}

/// Spreads retries of many machines apart: a backoff ±25 %.
struct Jitter(u64);

impl Jitter {
    fn new(seed: &str) -> Jitter {
        let s = seed.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Jitter(s | 1)
    }

    fn around(&mut self, d: Duration) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let factor = 0.75 + (self.0 % 1000) as f64 / 2000.0;
        d.mul_f64(factor)
    }
}

// ---- the agent's one queue ----

static GLOBAL: OnceLock<Arc<Queue>> = OnceLock::new();

/// The queue of this run: a new boot id, and the firmware's machine id
/// until the identify step names the machine.
pub fn global() -> &'static Arc<Queue> {
    GLOBAL.get_or_init(|| Queue::new(new_boot_id(), firmware_machine_id(Path::new("/sys"))))
}

/// Starts delivery to the plan's webhook, or keeps nothing without one.
pub fn start(report: &ReportPlan) {
    global().configure(Endpoint::from_plan(report));
}

/// The install network's name servers, for a webhook given by name.
pub fn set_dns(dns: &[Ipv4Addr]) {
    global().set_dns(dns);
}

/// Spools the unacknowledged events in `dir` from now on (the target's
/// spool once it is mounted).
pub fn spool_to(dir: &str) {
    if let Err(e) = global().spool_to(Path::new(dir)) {
        warn!("spool {dir}: {e}; events wait in memory only");
    }
}

pub fn detach_spool() {
    global().detach_spool();
}

/// Waits (bounded) for the queue to drain before the final action.
pub fn drain() {
    global().drain(FLUSH_WAIT);
}

/// The first boot: replays what the installer's spool holds unacknowledged
/// (with its own boot and seqs, so the server dedupes), then queues the
/// first boot's own events behind them and spools those too.
pub fn start_firstboot(report: &ReportPlan) {
    let queue = global();
    let Some(endpoint) = Endpoint::from_plan(report) else {
        queue.configure(None);
        return;
    };
    // The delivery's changes of state go to the journal with the report.
    crate::log::init(None);
    let dir = Path::new(SPOOL_DIR);
    let replay = unacknowledged(dir).unwrap_or_else(|e| {
        warn!("spool {}: {e}; nothing to replay", dir.display());
        Vec::new()
    });
    let machine = replay
        .iter()
        .find_map(|e| e.machine.clone())
        .unwrap_or_else(|| crate::identify::read_identity(Path::new("/sys")).machine_id());
    queue.set_machine(machine);
    if !replay.is_empty() {
        info!(
            "replaying {} events of the installer from {}",
            replay.len(),
            dir.display()
        );
    }
    queue.replay(replay);
    queue.configure(Some(endpoint));
    spool_to(SPOOL_DIR);
}

/// `imgforge-agent post-events [--token-file F] [--machine ID] URL FILE`:
/// sends the events of FILE (JSON lines, or console lines with the
/// `IMGFORGE-EVENT ` prefix) to URL exactly as the installer does, with a
/// new boot id, and waits for them to be acknowledged: a collector can be
/// tried against the installer's client without installing anything.
pub fn post_events_command(args: &[String]) -> i32 {
    const USAGE: &str =
        "usage: imgforge-agent post-events [--token-file FILE] [--machine ID] URL EVENTS-FILE";
    let mut token_file = None;
    let mut machine = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--token-file" => token_file = it.next(),
            "--machine" => machine = it.next().cloned(),
            _ => rest.push(a),
        }
    }
    let [url, file] = rest[..] else {
        eprintln!("imgforge-agent: {USAGE}");
        return 2;
    };
    let token = match token_file.map(std::fs::read_to_string).transpose() {
        Ok(t) => t.map(|t| t.trim().to_owned()),
        Err(e) => {
            eprintln!("imgforge-agent: reading the token file: {e}");
            return 2;
        }
    };
    let endpoint = match net::parse_url(url) {
        Ok(u) if !u.https => Endpoint { url: u, token },
        Ok(_) => {
            eprintln!(
                "imgforge-agent: {url}: https is not supported (the installer has no TLS client)"
            );
            return 2;
        }
        Err(e) => {
            eprintln!("imgforge-agent: {e:#}");
            return 2;
        }
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("imgforge-agent: reading {file}: {e}");
            return 2;
        }
    };
    let mut events = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let parsed = Event::from_line(line).unwrap_or_else(|| serde_json::from_str(line));
        match parsed {
            Ok(ev) => events.push(ev),
            Err(e) => {
                eprintln!("imgforge-agent: {file}:{}: not an event: {e}", i + 1);
                return 2;
            }
        }
    }
    crate::log::init(None);
    let machine = machine
        .or_else(|| firmware_machine_id(Path::new("/sys")))
        .unwrap_or_else(|| crate::identify::read_identity(Path::new("/sys")).machine_id());
    let queue = Queue::new(new_boot_id(), Some(machine));
    for ev in &events {
        queue.push(ev);
    }
    queue.configure(Some(endpoint));
    let left = queue.drain(FLUSH_WAIT);
    println!(
        "{} events acknowledged, {left} not (boot {})",
        events.len() - left,
        queue.boot()
    );
    i32::from(left > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgforge_plan::{steps, BearerToken, State};
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// One POST as the test server read it.
    #[derive(Debug, Clone)]
    struct Posted {
        head: String,
        events: Vec<Event>,
    }

    impl Posted {
        fn ids(&self) -> Vec<(String, String, u64)> {
            self.events.iter().map(id).collect()
        }
    }

    fn id(e: &Event) -> (String, String, u64) {
        (
            e.machine.clone().unwrap_or_default(),
            e.boot.clone().unwrap_or_default(),
            e.seq,
        )
    }

    /// What the server does with the `n`th POST (from 0).
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Reply {
        Ack,
        Unavailable,
        BadRequest,
        /// Stores the batch but closes the connection before answering.
        LoseAck,
    }

    /// A tiny collector on 127.0.0.1: reads each request whole (head and
    /// Content-Length body), answers as `reply` says, and keeps what it
    /// acknowledged (or stored before losing the answer) in order.
    struct Collector {
        addr: SocketAddr,
        stored: Arc<Mutex<Vec<Posted>>>,
        posts: Arc<AtomicUsize>,
    }

    impl Collector {
        fn start(reply: impl Fn(usize, &Posted) -> Reply + Send + 'static) -> Collector {
            Collector::on(TcpListener::bind("127.0.0.1:0").unwrap(), reply)
        }

        fn on(
            listener: TcpListener,
            reply: impl Fn(usize, &Posted) -> Reply + Send + 'static,
        ) -> Collector {
            let addr = listener.local_addr().unwrap();
            let stored = Arc::new(Mutex::new(Vec::new()));
            let posts = Arc::new(AtomicUsize::new(0));
            let (kept, count) = (stored.clone(), posts.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let Some(posted) = read_post(&mut stream) else {
                        continue;
                    };
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let answer = match reply(n, &posted) {
                        Reply::Ack => {
                            kept.lock().unwrap().push(posted);
                            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                        }
                        Reply::LoseAck => {
                            kept.lock().unwrap().push(posted);
                            ""
                        }
                        Reply::Unavailable => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n",
                        Reply::BadRequest => "HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\nConnection: close\r\n\r\nnot an event",
                    };
                    let _ = stream.write_all(answer.as_bytes());
                }
            });
            Collector {
                addr,
                stored,
                posts,
            }
        }

        fn endpoint(&self, token: Option<&str>) -> Endpoint {
            Endpoint {
                url: net::parse_url(&format!("http://{}/events", self.addr)).unwrap(),
                token: token.map(str::to_owned),
            }
        }

        /// Every event stored, in the order it arrived.
        fn events(&self) -> Vec<(String, String, u64)> {
            self.stored
                .lock()
                .unwrap()
                .iter()
                .flat_map(Posted::ids)
                .collect()
        }
    }

    fn read_post(stream: &mut TcpStream) -> Option<Posted> {
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut reader = std::io::BufReader::new(stream.try_clone().ok()?);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))?
            .trim()
            .parse()
            .ok()?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body).ok()?;
        let events = serde_json::from_slice(&body).ok()?;
        Some(Posted { head, events })
    }

    fn event(step: &str, seq: u64) -> Event {
        Event::new(seq, 1_733_300_000.0 + seq as f64, step, State::Done)
    }

    fn queue(machine: Option<&str>) -> Arc<Queue> {
        Queue::new("b0ff1ce".into(), machine.map(str::to_owned))
    }

    fn seqs(ids: &[(String, String, u64)]) -> Vec<u64> {
        ids.iter().map(|i| i.2).collect()
    }

    #[test]
    fn a_server_that_fails_at_first_gets_every_event_once_and_in_order() {
        let server = Collector::start(|n, _| {
            if n < 3 {
                Reply::Unavailable
            } else {
                Reply::Ack
            }
        });
        let q = queue(Some("m1"));
        q.configure(Some(server.endpoint(None)));
        for seq in 1..=5 {
            q.push(&event(steps::PARTITION, seq));
        }
        assert_eq!(q.drain(Duration::from_secs(10)), 0);
        let got = server.events();
        assert_eq!(seqs(&got), [1, 2, 3, 4, 5]);
        assert!(
            got.iter().all(|(m, b, _)| m == "m1" && b == "b0ff1ce"),
            "{got:?}"
        );
        assert!(server.posts.load(Ordering::SeqCst) >= 4);
    }

    #[test]
    fn a_server_that_is_down_and_comes_up_gets_what_waited() {
        // A port nobody listens on until the server starts there.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let q = queue(Some("m1"));
        q.configure(Some(Endpoint {
            url: net::parse_url(&format!("http://127.0.0.1:{port}/events")).unwrap(),
            token: None,
        }));
        for seq in 1..=3 {
            q.push(&event(steps::ROOT_TREE, seq));
        }
        assert_eq!(q.drain(Duration::from_millis(300)), 3, "nobody listens yet");
        let server = Collector::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), |_, _| {
            Reply::Ack
        });
        q.push(&event(steps::ROOT_TREE, 4));
        assert_eq!(q.drain(Duration::from_secs(10)), 0);
        assert_eq!(seqs(&server.events()), [1, 2, 3, 4]);
    }

    #[test]
    fn events_wait_for_the_machine_id_and_a_resend_after_a_lost_ack_carries_the_same_ids() {
        let server = Collector::start(|n, _| if n == 0 { Reply::LoseAck } else { Reply::Ack });
        let q = queue(None);
        q.configure(Some(server.endpoint(None)));
        q.push(&event(steps::AGENT, 1));
        q.push(&event(steps::MODULES, 2));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            server.posts.load(Ordering::SeqCst),
            0,
            "nothing is sent without a machine id"
        );
        q.set_machine("mac-52-54-00-12-34-01".into());
        q.push(&event(steps::IDENTIFY, 3));
        assert_eq!(q.drain(Duration::from_secs(10)), 0);
        let got = server.events();
        // The lost answer's batch arrives twice, with the same names: the
        // server's dedupe by (machine, boot, seq) keeps one of each.
        let mut distinct = got.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "{got:?}");
        assert!(got.len() > 3, "the first batch was sent again: {got:?}");
        assert!(got
            .iter()
            .all(|(m, b, _)| m == "mac-52-54-00-12-34-01" && b == "b0ff1ce"));
        let posts = server.stored.lock().unwrap().clone();
        let (first, again) = (posts[0].ids(), posts[1].ids());
        assert_eq!(first, again[..first.len()].to_vec());
    }

    #[test]
    fn an_event_the_server_refuses_is_given_up_and_the_rest_go_on() {
        let server = Collector::start(|_, p| {
            if p.events.iter().any(|e| e.seq == 2) {
                Reply::BadRequest
            } else {
                Reply::Ack
            }
        });
        let q = queue(Some("m1"));
        for seq in 1..=4 {
            q.push(&event(steps::PACKAGES, seq));
        }
        q.configure(Some(server.endpoint(None)));
        assert_eq!(q.drain(Duration::from_secs(10)), 0);
        assert_eq!(seqs(&server.events()), [1, 3, 4]);
    }

    #[test]
    fn the_token_goes_in_a_bearer_header_and_the_request_reads_back() {
        let server = Collector::start(|_, _| Reply::Ack);
        let q = queue(Some("m1"));
        q.configure(Some(server.endpoint(Some("s3cr3t-token-0123456789"))));
        q.push(&event(steps::INSTALL, 1));
        assert_eq!(q.drain(Duration::from_secs(10)), 0);
        let posted = server.stored.lock().unwrap()[0].clone();
        assert!(
            posted.head.starts_with("POST /events HTTP/1.1\r\n"),
            "{}",
            posted.head
        );
        assert!(posted
            .head
            .contains("\r\nAuthorization: Bearer s3cr3t-token-0123456789\r\n"));
        assert!(posted
            .head
            .contains(&format!("\r\nHost: {}\r\n", server.addr)));
        assert!(
            format!("{:?}", server.endpoint(Some("s3cr3t-token-0123456789")))
                .find("s3cr3t")
                .is_none()
        );

        // The bytes themselves, parsed back.
        let endpoint = Endpoint {
            url: net::parse_url("http://deploy.example/events").unwrap(),
            token: None,
        };
        let body = batch_body(&[event(steps::INSTALL, 9)]);
        let bytes = request(&endpoint, &body);
        let text = String::from_utf8(bytes).unwrap();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(
            lines,
            [
                "POST /events HTTP/1.1",
                "Host: deploy.example",
                "User-Agent: imgforge-agent",
                "Content-Type: application/json",
                &format!("Content-Length: {}", body.len()),
                "Connection: close",
            ]
        );
        let events: Vec<Event> = serde_json::from_str(rest).unwrap();
        assert_eq!(events[0].seq, 9);
    }

    #[test]
    fn answers_are_read_by_their_status() {
        assert_eq!(classify(b"HTTP/1.1 200 OK\r\n\r\n{}"), Answer::Acknowledged);
        assert_eq!(
            classify(b"HTTP/1.0 204 No Content\r\n\r\n"),
            Answer::Acknowledged
        );
        assert_eq!(
            classify(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 9\r\n\r\nbad seq\nmore"),
            Answer::Refused("HTTP 400: bad seq".into())
        );
        assert!(matches!(
            classify(b"HTTP/1.1 401 Unauthorized\r\n\r\n"),
            Answer::NotYet(_)
        ));
        assert!(matches!(
            classify(b"HTTP/1.1 503 x\r\n\r\n"),
            Answer::NotYet(_)
        ));
        assert!(matches!(classify(b"SSH-2.0-OpenSSH"), Answer::NotYet(_)));
        assert!(matches!(classify(b""), Answer::NotYet(_)));
    }

    #[test]
    fn the_spool_keeps_what_was_not_acknowledged_and_the_first_boot_replays_only_that() {
        let spool = tempfile::tempdir().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let open = up.clone();
        let server = Collector::start(move |_, _| {
            if open.load(Ordering::SeqCst) {
                Reply::Ack
            } else {
                Reply::Unavailable
            }
        });
        // The installer: two events delivered, then the network goes.
        let installer = Queue::new("b1".into(), Some("m1".into()));
        installer.configure(Some(server.endpoint(None)));
        installer.push(&event(steps::FILESYSTEMS, 1));
        installer.spool_to(spool.path()).unwrap();
        installer.push(&event(steps::ROOT_TREE, 2));
        assert_eq!(installer.drain(Duration::from_secs(10)), 0);
        up.store(false, Ordering::SeqCst);
        installer.push(&event(steps::BOOTLOADER, 3));
        installer.push(&event(steps::INSTALL, 4));
        assert_eq!(installer.drain(Duration::from_millis(200)), 2);
        let lines = std::fs::read_to_string(spool.path().join(EVENTS_FILE)).unwrap();
        assert_eq!(lines.lines().count(), 4, "{lines}");
        let acked: BTreeMap<String, u64> =
            serde_json::from_str(&std::fs::read_to_string(spool.path().join(ACKED_FILE)).unwrap())
                .unwrap();
        assert_eq!(acked, BTreeMap::from([("b1".to_owned(), 2)]));
        // A power loss in the middle of a line is no event.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(spool.path().join(EVENTS_FILE))
            .unwrap();
        f.write_all(b"{\"v\":1,\"seq\":5,\"ts").unwrap();
        let left = unacknowledged(spool.path()).unwrap();
        assert_eq!(
            left.iter().map(id).collect::<Vec<_>>(),
            [("m1".into(), "b1".into(), 3), ("m1".into(), "b1".into(), 4)]
        );

        // The first boot: the installer's rest with its own names, then its own.
        up.store(true, Ordering::SeqCst);
        let firstboot = Queue::new("b2".into(), None);
        firstboot.set_machine("m1".into());
        firstboot.replay(left);
        firstboot.configure(Some(server.endpoint(None)));
        firstboot.spool_to(spool.path()).unwrap();
        firstboot.push(&event(steps::FIRSTBOOT, 1));
        assert_eq!(firstboot.drain(Duration::from_secs(10)), 0);
        let got = server.events();
        assert_eq!(
            got,
            [
                ("m1".into(), "b1".into(), 1),
                ("m1".into(), "b1".into(), 2),
                ("m1".into(), "b1".into(), 3),
                ("m1".into(), "b1".into(), 4),
                ("m1".into(), "b2".into(), 1),
            ]
        );
        assert!(unacknowledged(spool.path()).unwrap().is_empty());
        let acked: BTreeMap<String, u64> =
            serde_json::from_str(&std::fs::read_to_string(spool.path().join(ACKED_FILE)).unwrap())
                .unwrap();
        assert_eq!(
            acked,
            BTreeMap::from([("b1".to_owned(), 4), ("b2".to_owned(), 1)])
        );
    }

    #[test]
    fn without_a_webhook_nothing_is_kept_or_spooled() {
        let spool = tempfile::tempdir().unwrap();
        let q = queue(Some("m1"));
        q.push(&event(steps::AGENT, 1));
        q.configure(None);
        q.push(&event(steps::MODULES, 2));
        q.spool_to(&spool.path().join("var/spool/imgforge"))
            .unwrap();
        assert!(!spool.path().join("var").exists());
        assert_eq!(q.drain(Duration::from_secs(5)), 0);
        assert!(q.lock().pending.is_empty());
    }

    #[test]
    fn the_plans_webhook_and_token_make_the_endpoint() {
        let mut report = ReportPlan {
            webhook: None,
            token: None,
            on_success: imgforge_plan::Action::Reboot,
            on_failure: imgforge_plan::Action::Shell,
            consoles: imgforge_plan::default_consoles(),
        };
        assert!(Endpoint::from_plan(&report).is_none());
        report.webhook = Some("http://10.0.2.100:8080/events".into());
        report.token = Some(BearerToken("s3cr3t-token-0123456789".into()));
        let e = Endpoint::from_plan(&report).unwrap();
        assert_eq!(e.display(), "http://10.0.2.100:8080/events");
        assert_eq!(e.token.as_deref(), Some("s3cr3t-token-0123456789"));
        report.webhook = Some("https://10.0.2.100/events".into());
        assert!(Endpoint::from_plan(&report).is_none());
    }

    #[test]
    fn names_are_looked_up_through_the_resolv_conf_name_servers() {
        let conf =
            "# stub\nnameserver 127.0.0.53\noptions edns0\nnameserver ::1\n nameserver 10.0.2.3\n";
        assert_eq!(
            name_servers(conf),
            [Ipv4Addr::new(127, 0, 0, 53), Ipv4Addr::new(10, 0, 2, 3)]
        );
        assert_eq!(
            resolve("10.0.2.100", 8080, &[]).unwrap(),
            "10.0.2.100:8080".parse().unwrap()
        );
    }

    #[test]
    fn the_boot_id_is_32_hex_characters_and_new_each_run() {
        let a = new_boot_id();
        assert_eq!(a.len(), 32);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, new_boot_id());
    }

    #[test]
    fn the_firmwares_machine_id_is_its_uuid_when_set() {
        let sys = tempfile::tempdir().unwrap();
        assert_eq!(firmware_machine_id(sys.path()), None);
        let dmi = sys.path().join("class/dmi/id");
        std::fs::create_dir_all(&dmi).unwrap();
        for placeholder in [
            "00000000-0000-0000-0000-000000000000",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        ] {
            std::fs::write(dmi.join("product_uuid"), format!("{placeholder}\n")).unwrap();
            assert_eq!(firmware_machine_id(sys.path()), None);
        }
        std::fs::write(
            dmi.join("product_uuid"),
            "4C4C4544-0042-3510-8052-B4C04F4E3032\n",
        )
        .unwrap();
        assert_eq!(
            firmware_machine_id(sys.path()).as_deref(),
            Some("4c4c4544-0042-3510-8052-b4c04f4e3032")
        );
    }

    #[test]
    fn the_spools_filesystem_is_found_in_mountinfo() {
        let info = "22 1 0:21 / / rw - tmpfs rootfs rw\n\
                    40 22 0:30 / /run rw,nosuid - tmpfs tmpfs rw\n\
                    51 40 252:2 / /run/imgforge/target rw,relatime - ext4 /dev/vda2 rw\n";
        assert_eq!(
            mount_of(info, Path::new("/run/imgforge/target/var/spool/imgforge")),
            Some(MountOf {
                source: "/dev/vda2".into(),
                fstype: "ext4".into(),
                mountpoint: "/run/imgforge/target".into(),
            })
        );
        assert_eq!(mount_of(info, Path::new("/run/x")).unwrap().fstype, "tmpfs");
    }
}
