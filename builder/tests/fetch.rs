//! `imgforge fetch` against a misbehaving HTTP server on 127.0.0.1: every
//! case checks the outcome the user sees (exit status, message, the JSON
//! events) and that the cache holds nothing that was not verified.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pgp::composed::{
    ArmorOptions, DetachedSignature, KeyType, SecretKeyParamsBuilder, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::types::{KeyDetails, Password};
use rand::{RngCore, SeedableRng};
use support::httpd::{Fault, Server, ENDLESS_GUARD};
use support::sha256_hex;

const IMGFORGE: &str = env!("CARGO_BIN_EXE_imgforge");
const ISO_NAME: &str = "ubuntu-24.04.1-live-server-amd64.iso";
const ISO_PATH: &str = "/releases/24.04/ubuntu-24.04.1-live-server-amd64.iso";
const ISO_SIZE: usize = 8 << 20;

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// An Ed25519 key whose primary signs, like a small release key.
fn signing_key(seed: u64) -> SignedSecretKey {
    SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(format!("Release {seed} <release{seed}@test.invalid>"))
        .build()
        .unwrap()
        .generate(rng(seed))
        .unwrap()
}

fn sign(key: &SignedSecretKey, data: &[u8]) -> Vec<u8> {
    DetachedSignature::sign_binary_data(
        rng(7),
        &key.primary_key,
        &Password::empty(),
        HashAlgorithm::Sha256,
        data,
    )
    .unwrap()
    .to_armored_bytes(ArmorOptions::default())
    .unwrap()
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng(seed).fill_bytes(&mut v);
    v
}

/// A release directory on the server, a profile that names it, a trusted
/// key and an empty cache.
struct Setup {
    server: Server,
    dir: tempfile::TempDir,
    key: SignedSecretKey,
    iso: Vec<u8>,
}

impl Setup {
    fn new() -> Setup {
        let server = Server::start();
        let key = signing_key(1);
        let iso = random_bytes(2, ISO_SIZE);
        let setup = Setup {
            server,
            dir: tempfile::tempdir().unwrap(),
            key,
            iso,
        };
        let public = setup
            .key
            .to_public_key()
            .to_armored_bytes(ArmorOptions::default())
            .unwrap();
        fs::write(setup.dir.path().join("release-key.asc"), public).unwrap();
        setup.publish(&format!(
            "{} *{ISO_NAME}\n{} *ubuntu-24.04.1-desktop-amd64.iso\n",
            sha256_hex(&setup.iso),
            "ab".repeat(32)
        ));
        setup.server.put(ISO_PATH, setup.iso.clone());
        setup.write_profile(&[&setup.server.url("/releases/")]);
        setup
    }

    /// Serves a SHA256SUMS with this text, signed by the trusted key.
    fn publish(&self, sums: &str) {
        self.server
            .put("/releases/24.04/SHA256SUMS", sums.as_bytes().to_vec());
        self.server.put(
            "/releases/24.04/SHA256SUMS.gpg",
            sign(&self.key, sums.as_bytes()),
        );
    }

    fn write_profile(&self, mirrors: &[&str]) {
        let mirrors: Vec<String> = mirrors.iter().map(|m| format!("{m:?}")).collect();
        let text = format!(
            "[source]\nrelease = \"24.04\"\nmirrors = [{}]\nkeyring = \"release-key.asc\"\n\n[system]\nhostname = \"hv01\"\n\n[disk]\nmatch = {{ min_size = \"8GiB\" }}\n",
            mirrors.join(", ")
        );
        fs::write(self.profile(), text).unwrap();
    }

    fn profile(&self) -> PathBuf {
        self.dir.path().join("fetch.toml")
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn fetch(&self, extra: &[&str]) -> Fetch {
        self.fetch_with_env(extra, &[])
    }

    fn fetch_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Fetch {
        self.fetch_through(Command::new(IMGFORGE), extra, env)
    }

    /// `imgforge fetch` run by `command`, which is imgforge itself or
    /// something that runs the arguments it is given.
    fn fetch_through(&self, mut command: Command, extra: &[&str], env: &[(&str, &str)]) -> Fetch {
        let out = command
            .arg("fetch")
            .arg(self.profile())
            .arg("--cache-dir")
            .arg(self.cache())
            .args(["--json", "--retries", "4"])
            .args(if extra.contains(&"--idle-timeout") {
                &[][..]
            } else {
                &["--idle-timeout", "1"][..]
            })
            .args(extra)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .envs(env.iter().copied())
            .output()
            .expect("running imgforge fetch");
        Fetch::new(out)
    }

    /// The server drops the ISO's next transfer halfway through.
    fn drop_iso_at_half(&self) {
        self.server
            .fault(ISO_PATH, Fault::DropAfter(ISO_SIZE as u64 / 2));
    }

    /// Fetches while the server's ISO becomes `bytes` once the first
    /// request for it has been answered.
    fn fetch_while_the_iso_becomes(&self, bytes: Vec<u8>) -> Fetch {
        std::thread::scope(|scope| {
            let h = scope.spawn(|| self.fetch(&[]));
            while self.server.seen(ISO_PATH).is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
            self.server.put(ISO_PATH, bytes);
            h.join().unwrap()
        })
    }

    fn iso_sha(&self) -> String {
        sha256_hex(&self.iso)
    }
}

/// What one `imgforge fetch --json` run printed.
struct Fetch {
    ok: bool,
    events: Vec<serde_json::Value>,
    stderr: String,
}

impl Fetch {
    fn new(out: Output) -> Fetch {
        let events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line {l:?} is not JSON: {e}"))
            })
            .collect();
        Fetch {
            ok: out.status.success(),
            events,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn of(&self, kind: &str) -> Vec<&serde_json::Value> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }

    /// The fetch failed, and its error says `what` about `url`.
    fn assert_error_about(&self, url: &str, what: &str) {
        let e = self.error();
        assert!(e.contains(&format!("{url}: {what}")), "{e}");
    }

    /// The download started over once, for a reason that says `why`.
    fn assert_one_restart(&self, why: &str) {
        let restart = self.of("restart");
        assert_eq!(restart.len(), 1, "{:#?}", self.events);
        assert!(
            restart[0]["reason"].as_str().unwrap().contains(why),
            "{restart:?}"
        );
    }

    fn verified(&self) -> &serde_json::Value {
        assert!(self.ok, "fetch failed: {}", self.stderr);
        let v = self.of("verified");
        assert_eq!(v.len(), 1, "one verified event: {:#?}", self.events);
        v[0]
    }

    fn error(&self) -> &str {
        assert!(!self.ok, "fetch should have failed: {:#?}", self.events);
        &self.stderr
    }
}

/// Every file under `objects/` hashes to its name, and no partial download
/// bytes are left behind; returns the object names.
fn verified_objects(cache: &Path) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(rd) = fs::read_dir(cache.join("objects")) {
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert_eq!(
                sha256_hex(&fs::read(e.path()).unwrap()),
                name,
                "cached object {name} does not hash to its name"
            );
            names.push(name);
        }
    }
    names.sort();
    names
}

fn assert_no_partial_bytes(cache: &Path) {
    if let Ok(rd) = fs::read_dir(cache.join("partial")) {
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                name.ends_with(".lock"),
                "unverified partial file {name} left in the cache"
            );
        }
    }
}

/// The corrupt cases: the fetch fails, the ISO is not cached, nothing
/// unverified is left.
fn assert_refused(s: &Setup, f: &Fetch) {
    assert!(!f.ok);
    assert!(
        !verified_objects(&s.cache())
            .iter()
            .any(|o| *o == s.iso_sha()),
        "the ISO must not be cached"
    );
    assert_no_partial_bytes(&s.cache());
}

#[test]
fn a_release_is_fetched_verified_and_cached_and_a_second_fetch_transfers_nothing() {
    let s = Setup::new();
    let f = s.fetch(&[]);
    let v = f.verified();
    assert_eq!(
        v["name"], ISO_NAME,
        "the newest live-server ISO of the list"
    );
    assert_eq!(v["sha256"], s.iso_sha());
    assert_eq!(v["transferred"], ISO_SIZE as u64);
    assert_eq!(v["cached"], false);
    let path = PathBuf::from(v["path"].as_str().unwrap());
    assert_eq!(
        fs::read(&path).unwrap(),
        s.iso,
        "the cached file is the ISO"
    );
    assert!(verified_objects(&s.cache()).contains(&s.iso_sha()));
    assert_no_partial_bytes(&s.cache());
    assert!(!f.of("progress").is_empty(), "progress is reported");
    for e in f.of("progress") {
        assert_eq!(
            (&e["task"], &e["name"], &e["url"]),
            (
                &"download".into(),
                &ISO_NAME.into(),
                &s.server.url(ISO_PATH).into()
            ),
            "{e}"
        );
    }
    let (start, done) = (f.of("start"), f.of("done"));
    assert_eq!((start.len(), done.len()), (1, 1), "{:#?}", f.events);
    assert_eq!(done[0]["bytes"], ISO_SIZE as u64);
    assert_eq!(s.server.sent(ISO_PATH), ISO_SIZE as u64);

    let again = s.fetch(&[]);
    let v = again.verified();
    assert_eq!(v["cached"], true);
    assert_eq!(v["transferred"], 0);
    assert_eq!(
        again.of("done")[0]["task"],
        "hash",
        "the cached ISO is hashed again, with progress"
    );
    assert_eq!(PathBuf::from(v["path"].as_str().unwrap()), path);
    assert_eq!(
        s.server.seen(ISO_PATH).len(),
        1,
        "the ISO was not requested again"
    );
    let sums = s.server.seen("/releases/24.04/SHA256SUMS");
    assert_eq!(
        sums.last().unwrap().status,
        304,
        "the list is asked for conditionally"
    );

    // --offline works from the cache alone.
    let offline = s.fetch(&["--offline"]);
    assert_eq!(offline.verified()["cached"], true);
    assert_eq!(s.server.seen(ISO_PATH).len(), 1);
}

#[test]
fn a_drop_at_half_resumes_and_transfers_less_than_one_and_a_fifth_of_the_file() {
    let s = Setup::new();
    s.drop_iso_at_half();
    let f = s.fetch(&[]);
    let v = f.verified();
    assert_eq!(v["sha256"], s.iso_sha());
    let sent = s.server.sent(ISO_PATH);
    assert!(
        sent < ISO_SIZE as u64 * 12 / 10,
        "sent {sent} bytes for a {ISO_SIZE}-byte file"
    );
    let seen = s.server.seen(ISO_PATH);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].status, 206);
    assert_eq!(
        seen[1].range_from,
        Some(ISO_SIZE as u64 / 2),
        "resumed where the drop happened"
    );
    assert_eq!(f.of("retry").len(), 1);
    assert!(f.of("restart").is_empty());
    assert_no_partial_bytes(&s.cache());
}

#[test]
fn a_stalled_server_is_dropped_after_the_idle_timeout_and_the_download_resumes() {
    let s = Setup::new();
    s.server.fault(
        ISO_PATH,
        Fault::StallAfter(ISO_SIZE as u64 / 4, Duration::from_secs(20)),
    );
    let started = std::time::Instant::now();
    let f = s.fetch(&[]);
    assert_eq!(f.verified()["sha256"], s.iso_sha());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "did not wait for the stalled connection to end"
    );
    let seen = s.server.seen(ISO_PATH);
    assert_eq!(seen.last().unwrap().status, 206, "{seen:?}");
    assert!(s.server.sent(ISO_PATH) < ISO_SIZE as u64 * 12 / 10);
}

#[test]
fn server_errors_are_retried_until_the_server_recovers() {
    let s = Setup::new();
    s.server.fault(ISO_PATH, Fault::Status(500));
    s.server.fault(ISO_PATH, Fault::Status(503));
    s.server
        .fault("/releases/24.04/SHA256SUMS", Fault::Status(502));
    let f = s.fetch(&[]);
    assert_eq!(f.verified()["sha256"], s.iso_sha());
    let statuses: Vec<u16> = s.server.seen(ISO_PATH).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 503, 200]);
    assert_eq!(f.of("retry").len(), 3);
}

#[test]
fn a_mirror_that_answers_404_is_skipped_for_the_next_one() {
    let s = Setup::new();
    let missing = s.server.url("/gone/");
    s.write_profile(&[&missing, &s.server.url("/releases/")]);
    let f = s.fetch(&[]);
    assert_eq!(f.verified()["sha256"], s.iso_sha());
    let failed = f.of("mirror-failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["mirror"], missing);
    assert!(
        failed[0]["error"].as_str().unwrap().contains("404"),
        "{:?}",
        failed[0]
    );
    assert_eq!(
        s.server.seen("/gone/24.04/SHA256SUMS").len(),
        1,
        "a 404 is not retried"
    );

    // Every mirror failing is reported mirror by mirror.
    s.write_profile(&[&missing, &s.server.url("/also-gone/")]);
    let f = s.fetch(&[]);
    let e = f.error();
    assert!(e.contains("every mirror failed"), "{e}");
    for m in ["/gone/", "/also-gone/"] {
        assert!(
            e.contains(&format!(
                "{m}24.04/SHA256SUMS: the server answered 404 Not Found (not found): check the URL"
            )),
            "{e}"
        );
    }
}

#[test]
fn a_server_that_ignores_range_makes_the_download_start_over_and_still_verify() {
    let s = Setup::new();
    s.drop_iso_at_half();
    s.server.fault(ISO_PATH, Fault::IgnoreRange);
    let f = s.fetch(&[]);
    assert_eq!(f.verified()["sha256"], s.iso_sha());
    f.assert_one_restart("does not resume");
    assert_eq!(s.server.seen(ISO_PATH)[1].status, 200);
}

#[test]
fn a_file_replaced_on_the_server_is_downloaded_again_from_the_start() {
    // A mirror that served a stale copy, then the right one: If-Range sees
    // the new ETag and the server sends the whole new file.
    let s = Setup::new();
    let stale = random_bytes(3, ISO_SIZE);
    s.server.put(ISO_PATH, stale);
    s.drop_iso_at_half();
    // The right file is back once the stale half has been sent.
    let f = s.fetch_while_the_iso_becomes(s.iso.clone());
    assert_eq!(f.verified()["sha256"], s.iso_sha());
    f.assert_one_restart("changed");
    assert_eq!(
        s.server.seen(ISO_PATH)[1].status,
        200,
        "If-Range did not match the new file"
    );
}

#[test]
fn a_file_that_changes_between_requests_to_an_unlisted_one_is_refused_and_deleted() {
    let s = Setup::new();
    s.drop_iso_at_half();
    let other = random_bytes(4, ISO_SIZE);
    let other_sha = sha256_hex(&other);
    let f = s.fetch_while_the_iso_becomes(other);
    let e = f.error();
    assert!(
        e.contains(&format!(
            "SHA-256 of {ISO_NAME} is {other_sha} but SHA256SUMS says {}",
            s.iso_sha()
        )),
        "{e}"
    );
    assert!(e.contains("deleted"), "{e}");
    assert_refused(&s, &f);
}

#[test]
fn one_flipped_byte_is_refused_with_expected_and_actual_hashes() {
    let s = Setup::new();
    let at = ISO_SIZE as u64 / 3;
    s.server.fault(ISO_PATH, Fault::FlipByte(at));
    let mut flipped = s.iso.clone();
    flipped[at as usize] ^= 1;
    let f = s.fetch(&[]);
    let e = f.error();
    assert!(
        e.contains(&format!(
            "SHA-256 of {ISO_NAME} is {} but SHA256SUMS says {}",
            sha256_hex(&flipped),
            s.iso_sha()
        )),
        "{e}"
    );
    assert!(
        e.contains(&s.server.url(ISO_PATH)),
        "the error names the URL: {e}"
    );
    assert_refused(&s, &f);

    // The next fetch starts clean and succeeds.
    assert_eq!(s.fetch(&[]).verified()["sha256"], s.iso_sha());
}

#[test]
fn a_signature_from_another_key_is_refused_before_the_iso_is_requested() {
    let s = Setup::new();
    let sums = format!("{} *{ISO_NAME}\n", s.iso_sha());
    let rogue = signing_key(99);
    s.server
        .put("/releases/24.04/SHA256SUMS", sums.clone().into_bytes());
    s.server.put(
        "/releases/24.04/SHA256SUMS.gpg",
        sign(&rogue, sums.as_bytes()),
    );
    let f = s.fetch(&[]);
    let e = f.error();
    assert!(e.contains("not in the trusted keyring"), "{e}");
    assert!(
        e.contains(&format!("{:X}", rogue.fingerprint())),
        "names the signer: {e}"
    );
    assert!(
        s.server.seen(ISO_PATH).is_empty(),
        "the ISO is not requested with an untrusted list"
    );
    assert_refused(&s, &f);
    assert_eq!(
        verified_objects(&s.cache()),
        Vec::<String>::new(),
        "the untrusted list is not kept"
    );
}

#[test]
fn a_signed_list_without_the_iso_is_refused_and_names_what_it_lists() {
    let s = Setup::new();
    s.publish(&format!(
        "{} *ubuntu-24.04.1-desktop-amd64.iso\n",
        s.iso_sha()
    ));
    let f = s.fetch(&[]);
    let e = f.error();
    assert!(e.contains("lists no live-server amd64 ISO for release 24.04 (it lists: ubuntu-24.04.1-desktop-amd64.iso)"), "{e}");
    assert!(s.server.seen(ISO_PATH).is_empty());
    assert_refused(&s, &f);

    // An ISO given by URL must be in the list under its own name.
    let text = format!(
        "[source]\niso = {:?}\nsha256sums = {:?}\nsignature = {:?}\nkeyring = \"release-key.asc\"\n[system]\nhostname = \"hv01\"\n[disk]\nmatch = {{ min_size = \"8GiB\" }}\n",
        s.server.url(ISO_PATH),
        s.server.url("/releases/24.04/SHA256SUMS"),
        s.server.url("/releases/24.04/SHA256SUMS.gpg")
    );
    fs::write(s.profile(), text).unwrap();
    let f = s.fetch(&[]);
    assert!(
        f.error()
            .contains(&format!("has no entry for \"{ISO_NAME}\"")),
        "{}",
        f.stderr
    );
    assert_refused(&s, &f);
}

#[test]
fn a_pin_that_disagrees_with_the_signed_list_is_refused() {
    let s = Setup::new();
    let profile = fs::read_to_string(s.profile()).unwrap().replace(
        "[source]\n",
        &format!("[source]\nsha256 = \"{}\"\n", "0".repeat(64)),
    );
    fs::write(s.profile(), profile).unwrap();
    let f = s.fetch(&[]);
    assert!(
        f.error().contains(&format!(
            "source.sha256 pins {} but the signed list says {}",
            "0".repeat(64),
            s.iso_sha()
        )),
        "{}",
        f.stderr
    );
    assert!(s.server.seen(ISO_PATH).is_empty());
    assert_refused(&s, &f);
}

#[test]
fn concurrent_fetches_sharing_a_cache_download_once_and_both_verify() {
    let s = Setup::new();
    // Slow the first transfer down so the second process arrives during it.
    s.server.fault(
        ISO_PATH,
        Fault::StallAfter(ISO_SIZE as u64 / 2, Duration::from_millis(1500)),
    );
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| s.fetch(&["--idle-timeout", "5"]));
        let b = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            s.fetch(&["--idle-timeout", "5"])
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.verified()["sha256"], s.iso_sha());
    assert_eq!(b.verified()["sha256"], s.iso_sha());
    assert_eq!(
        verified_objects(&s.cache())
            .iter()
            .filter(|o| **o == s.iso_sha())
            .count(),
        1
    );
    assert!(
        s.server.sent(ISO_PATH) < ISO_SIZE as u64 * 12 / 10,
        "the second fetch waited instead of downloading: {:?}",
        s.server.seen(ISO_PATH)
    );
    assert_no_partial_bytes(&s.cache());
}

#[test]
fn cache_ls_lists_the_iso_with_its_url_and_gc_all_empties_the_cache() {
    let s = Setup::new();
    s.fetch(&[]).verified();
    let cache = s.cache();
    let ls = Command::new(IMGFORGE)
        .args(["cache", "ls", "--json", "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(ls.status.success());
    let list: Vec<serde_json::Value> = serde_json::from_slice(&ls.stdout).unwrap();
    let iso = list
        .iter()
        .find(|o| o["sha256"] == s.iso_sha())
        .expect("the ISO is listed");
    assert_eq!(iso["size"], ISO_SIZE as u64);
    assert_eq!(iso["urls"], serde_json::json!([s.server.url(ISO_PATH)]));
    assert_eq!(
        list.len(),
        3,
        "the ISO, the list and its signature: {list:#?}"
    );

    let gc = Command::new(IMGFORGE)
        .args(["cache", "gc", "--all", "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert_eq!(verified_objects(&cache), Vec::<String>::new());
}

#[test]
fn the_proxy_from_the_environment_is_used() {
    let s = Setup::new();
    // The mirror's name does not resolve: only the proxy can reach it.
    s.write_profile(&["http://mirror.invalid/releases/"]);
    let proxy = s.server.url("");
    let f = s.fetch_with_env(&[], &[("http_proxy", &proxy), ("no_proxy", "")]);
    assert_eq!(f.verified()["sha256"], s.iso_sha());
    assert_eq!(
        s.server.proxied(),
        3,
        "the list, the signature and the ISO went through the proxy"
    );
}

#[test]
fn a_local_iso_is_hashed_before_fetch_prints_its_path() {
    let s = Setup::new();
    let dir = s.dir.path();
    let sums = format!("{} *{ISO_NAME}\n", s.iso_sha());
    fs::write(dir.join("SHA256SUMS"), &sums).unwrap();
    fs::write(dir.join("SHA256SUMS.gpg"), sign(&s.key, sums.as_bytes())).unwrap();
    let iso = dir.join(ISO_NAME);
    fs::write(&iso, &s.iso).unwrap();
    let local: Vec<String> = [
        "--iso",
        iso.to_str().unwrap(),
        "--sha256sums",
        "SHA256SUMS",
        "--signature",
        "SHA256SUMS.gpg",
    ]
    .iter()
    .map(|a| {
        if a.starts_with("SHA") {
            dir.join(a).to_string_lossy().into_owned()
        } else {
            a.to_string()
        }
    })
    .collect();
    let args: Vec<&str> = local.iter().map(String::as_str).collect();
    let fetch_local = || {
        Command::new(IMGFORGE)
            .arg("fetch")
            .arg(s.profile())
            .args(&args)
            .arg("--cache-dir")
            .arg(s.cache())
            .output()
            .unwrap()
    };
    let good = fetch_local();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&good.stdout).trim(),
        iso.to_str().unwrap()
    );

    let mut bad = s.iso.clone();
    bad[12345] ^= 1;
    fs::write(&iso, &bad).unwrap();
    let out = fetch_local();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "no path is printed for a file that failed"
    );
    assert!(
        stderr.contains(&format!("SHA-256 of {ISO_NAME} is {}", sha256_hex(&bad))),
        "{stderr}"
    );
    assert!(
        s.server.seen(ISO_PATH).is_empty(),
        "local files need no network"
    );
}

/// The partial download for `url` holds no bytes (its lock may stay).
fn assert_no_partial_for(cache: &Path, what: &str) {
    assert_no_partial_bytes(cache);
    let objects = verified_objects(cache);
    assert!(
        objects.len() <= 2,
        "only the verified list and signature may be cached after {what}: {objects:?}"
    );
}

#[test]
fn a_body_without_a_length_that_never_ends_is_cut_at_max_size_and_nothing_is_kept() {
    let s = Setup::new();
    s.server.fault(ISO_PATH, Fault::Endless);
    let f = s.fetch(&["--max-size", "12MiB"]);
    f.assert_error_about(&s.server.url(ISO_PATH), "the body goes on past 12582912 bytes, more than the limit of 12 MiB (12582912 bytes) (set by --max-size; pass a larger --max-size if the file really is that large); the download was stopped and nothing of it was kept");
    assert_refused(&s, &f);
    assert_no_partial_for(&s.cache(), "a cut download");
    let seen = s.server.seen(ISO_PATH);
    assert_eq!(
        seen.len(),
        1,
        "a body past the limit is not retried: {seen:?}"
    );
    assert!(
        seen[0].body_bytes < ENDLESS_GUARD,
        "the client hung up: {seen:?}"
    );
}

#[test]
fn an_endless_checksum_list_is_cut_at_one_mebibyte_before_the_iso_is_requested() {
    let s = Setup::new();
    s.server.fault("/releases/24.04/SHA256SUMS", Fault::Endless);
    let f = s.fetch(&[]);
    f.assert_error_about(&s.server.url("/releases/24.04/SHA256SUMS"), "the body does not end, more than the limit of 1 MiB (1048576 bytes) (the most a checksum list or signature may be; these are a few kilobytes, so check the URL)");
    assert!(s.server.seen(ISO_PATH).is_empty());
    assert_refused(&s, &f);
}

#[test]
fn bytes_past_the_content_length_are_never_written() {
    let s = Setup::new();
    s.server.fault(ISO_PATH, Fault::Overlong(2 << 20));
    let f = s.fetch(&[]);
    let v = f.verified();
    assert_eq!(v["size"], ISO_SIZE as u64);
    assert_eq!(
        fs::read(v["path"].as_str().unwrap()).unwrap(),
        s.iso,
        "the cached file is the ISO and nothing more"
    );
    assert_eq!(
        s.server.sent(ISO_PATH),
        ISO_SIZE as u64 + (2 << 20),
        "the server did send the extra bytes"
    );
    assert_no_partial_bytes(&s.cache());
}

#[test]
fn max_size_below_the_announced_length_fails_before_the_body_is_written() {
    let s = Setup::new();
    let f = s.fetch(&["--max-size", "4MiB"]);
    f.assert_error_about(&s.server.url(ISO_PATH), &format!("the server announces {ISO_SIZE} bytes, more than the limit of 4 MiB (4194304 bytes) (set by --max-size; pass a larger --max-size if the file really is that large)"));
    assert_refused(&s, &f);
    assert!(
        f.of("progress").is_empty(),
        "no body byte was taken: {:#?}",
        f.events
    );

    // The same limit as a plain number of bytes, one byte too small and just right.
    assert!(s
        .fetch(&["--max-size", &(ISO_SIZE - 1).to_string()])
        .error()
        .contains("more than the limit of 8388607 bytes"));
    assert_eq!(
        s.fetch(&["--max-size", &ISO_SIZE.to_string()]).verified()["sha256"],
        s.iso_sha()
    );

    // `build` takes the option too.
    let help = Command::new(IMGFORGE)
        .args(["build", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--max-size <SIZE>"));
}

#[test]
fn a_write_error_names_the_partial_file_and_leaves_nothing_behind() {
    let s = Setup::new();
    // A file size limit (RLIMIT_FSIZE) of 2 or 4 MiB, depending on the
    // shell's unit for `ulimit -f`, with SIGXFSZ ignored: writing past it
    // fails with EFBIG, as a full disk fails with ENOSPC.
    let mut sh = Command::new("sh");
    sh.args([
        "-c",
        "trap '' XFSZ; ulimit -f 4096; exec \"$@\"",
        "sh",
        IMGFORGE,
    ]);
    let f = s.fetch_through(sh, &[], &[]);
    let e = f.error();
    let partial = s
        .cache()
        .join("partial")
        .join(url_key(&s.server.url(ISO_PATH)));
    assert!(
        e.contains(&format!(
            "writing {}: File too large (os error 27); the partial download was removed: free space or fix the permissions of the download cache (--cache-dir)",
            partial.display()
        )),
        "{e}"
    );
    assert!(!partial.exists());
    assert_refused(&s, &f);
    assert_no_partial_for(&s.cache(), "a write error");

    // Without the limit, the next fetch starts clean and succeeds.
    assert_eq!(s.fetch(&[]).verified()["sha256"], s.iso_sha());
}

/// How the cache names a URL's partial download (sha256 of the URL).
fn url_key(url: &str) -> String {
    sha256_hex(url.as_bytes())
}
