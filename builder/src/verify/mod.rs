//! Trust: OpenPGP detached signatures over `SHA256SUMS`, the checksum list
//! itself, and streaming SHA-256.
//!
//! A signature is good only when it verifies with a trusted primary key that
//! may sign, or with a subkey that its primary bound to itself (binding
//! signature by the primary, signing flag, back-signature by the subkey), and
//! when neither key was expired or revoked when the signature was made, and
//! when the hash algorithms and keys involved pass the signature policy
//! ([`policy`], published in `docs/verification.md`). The pgp crate checks
//! the cryptography only; the policy lives here.

mod policy;

use std::fmt;
use std::io::{BufReader, Read};
use std::time::{SystemTime, UNIX_EPOCH};

use pgp::composed::{
    CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey,
};
use pgp::packet::{PublicKey, RevocationCode, Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, KeyVersion, Tag};
use sha2::{Digest, Sha256};

/// Ubuntu CD image signing key (2012), which signs release `SHA256SUMS`.
pub const UBUNTU_CDIMAGE_KEY: &[u8] = include_bytes!("../../keys/ubuntu-cdimage-2012.asc");

/// How far in the future a signature may claim to be made, for clocks that
/// are a little off.
const MAX_CLOCK_SKEW_SECS: u64 = 5 * 60;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{origin}: no OpenPGP public key could be read: {reason}; pass an armored (-----BEGIN PGP PUBLIC KEY BLOCK-----) or binary public key file")]
    Keyring { origin: String, reason: String },
    #[error("the signature is not a usable OpenPGP detached signature: {0}; pass the armored or binary detached signature file (such as SHA256SUMS.gpg)")]
    MalformedSignature(String),
    #[error("signature made by key {issuer} which is not in the trusted keyring {origin} (fingerprints: {fingerprints}); pass the right --keyring")]
    UntrustedKey {
        issuer: String,
        origin: String,
        fingerprints: String,
    },
    #[error("the signature names no signing key and verifies with none of the keys in {origin} (fingerprints: {fingerprints}): the file was changed after signing or another key signed it")]
    NoKeyVerifies {
        origin: String,
        fingerprints: String,
    },
    #[error("signature by key {key} does not match the data: the file was changed after signing")]
    BadSignature { key: String },
    #[error("signature by key {key} cannot be checked: {reason}")]
    Unsupported { key: String, reason: String },
    #[error("signature by key {key} uses {algorithm}, which is too weak for data signatures; ask the publisher for a SHA-256 (or stronger) signature")]
    WeakHash { key: String, algorithm: String },
    #[error("{role} {key} {problem}; ask the publisher for a signature by a stronger key")]
    WeakKey {
        role: KeyRole,
        key: String,
        problem: String,
    },
    #[error("{role} {key} {problem}")]
    KeyNotValid {
        role: KeyRole,
        key: String,
        problem: String,
    },
    #[error("signature by key {key} {problem}")]
    SignatureTime { key: String, problem: String },
    #[error("SHA256SUMS line {line}: {problem}: {text:?}")]
    SumsLine {
        line: usize,
        problem: &'static str,
        text: String,
    },
    #[error("SHA256SUMS lists {name:?} twice with different hashes; the list is damaged, download it again")]
    SumsDuplicate { name: String },
    #[error("SHA-256 of {name} is {actual} but SHA256SUMS says {expected}: the file is corrupt or was tampered with; download it again")]
    HashMismatch {
        name: String,
        expected: String,
        actual: String,
    },
}

/// Which kind of key a [`VerifyError::KeyNotValid`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    PrimaryKey,
    SigningSubkey,
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyRole::PrimaryKey => "primary key",
            KeyRole::SigningSubkey => "signing subkey",
        })
    }
}

/// OpenPGP public keys trusted to sign.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    keys: Vec<SignedPublicKey>,
    origin: String,
}

impl TrustedKeys {
    /// Reads one or more public keys: binary, or one or several armored
    /// blocks (concatenated `.asc` files work). `origin` names the source in
    /// error messages.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<TrustedKeys, VerifyError> {
        let err = |reason: String| VerifyError::Keyring {
            origin: origin.to_owned(),
            reason,
        };
        let mut keys = Vec::new();
        for block in openpgp_blocks(bytes).map_err(err)? {
            let parsed = match block {
                Block::Binary(b) => SignedPublicKey::from_bytes_many(BufReader::new(b))
                    .and_then(|iter| iter.collect::<Result<Vec<_>, _>>()),
                Block::Armored(b) => SignedPublicKey::from_armor_many(b)
                    .and_then(|(iter, _)| iter.collect::<Result<Vec<_>, _>>()),
            };
            keys.extend(parsed.map_err(|e| err(e.to_string()))?);
        }
        if keys.is_empty() {
            return Err(err("the file holds no public key".into()));
        }
        Ok(TrustedKeys {
            keys,
            origin: origin.to_owned(),
        })
    }

    /// Upper-case hex fingerprints of the primary keys.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| fingerprint(&k.primary_key))
            .collect()
    }

    /// Where the keys came from (file names joined by ` + ` after a merge).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Adds the keys of `other`; a key already present byte for byte is kept once.
    pub fn merge(&mut self, other: TrustedKeys) {
        for key in other.keys {
            if !self.keys.contains(&key) {
                self.keys.push(key);
            }
        }
        self.origin = format!("{} + {}", self.origin, other.origin);
    }
}

/// Ubuntu's CD image signing key, built in.
pub fn ubuntu_cdimage_keys() -> TrustedKeys {
    TrustedKeys::from_bytes(
        UBUNTU_CDIMAGE_KEY,
        "built-in Ubuntu CD image signing key (2012)",
    )
    .expect("the built-in Ubuntu key parses (checked by a test)")
}

enum Block<'a> {
    Binary(&'a [u8]),
    Armored(&'a [u8]),
}

/// Splits a key or signature file into binary data or its armored blocks.
/// Binary OpenPGP starts with a packet header, which always has bit 7 set;
/// armor is ASCII text.
fn openpgp_blocks(bytes: &[u8]) -> Result<Vec<Block<'_>>, String> {
    let Some(start) = bytes.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Err("the file is empty".into());
    };
    if bytes[start] & 0x80 != 0 {
        return Ok(vec![Block::Binary(&bytes[start..])]);
    }
    const BEGIN: &[u8] = b"-----BEGIN PGP ";
    const END: &[u8] = b"-----END PGP ";
    let mut blocks = Vec::new();
    let mut rest = bytes;
    while let Some(begin) = find(rest, BEGIN) {
        let after = &rest[begin..];
        let end = find(after, END).ok_or("an armored block has no -----END PGP ... line")?;
        // The end line runs to its closing dashes.
        let tail = &after[end + END.len()..];
        let close =
            find(tail, b"-----").ok_or("an armored block's -----END PGP line is cut off")?;
        let len = end + END.len() + close + 5;
        blocks.push(Block::Armored(&after[..len]));
        rest = &after[len..];
    }
    if blocks.is_empty() {
        return Err(
            "it is neither binary OpenPGP data nor ASCII armor (no -----BEGIN PGP line)".into(),
        );
    }
    Ok(blocks)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn fingerprint(key: &impl KeyDetails) -> String {
    format!("{:X}", key.fingerprint())
}

/// A signature that passed [`verify_detached`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoodSignature {
    /// Upper-case hex fingerprint of the trusted primary key.
    pub primary_fingerprint: String,
    /// The key that made the signature: the primary or one of its subkeys.
    pub signing_key_fingerprint: String,
    /// When the signature was made, in seconds since the Unix epoch.
    pub created: u64,
}

/// Verifies a detached signature (armored or binary) over `data`. A file
/// may hold several signatures (older Ubuntu releases carry one per signing
/// key, old and new); one good signature by a trusted key is enough.
pub fn verify_detached(
    keys: &TrustedKeys,
    data: &[u8],
    signature: &[u8],
) -> Result<GoodSignature, VerifyError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let signatures = parse_signatures(signature)?;
    verify_any(keys, data, &signatures, now)
}

/// What a clearsigned file (apt's `InRelease`) says, once its signature
/// passed: only the signed text, never anything around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedText {
    pub signature: GoodSignature,
    /// The text exactly as signed (dash-escapes removed, trailing blanks of
    /// each line trimmed as the signature covers them), with `\n` line
    /// ends; the signature does not cover a final line end.
    pub text: String,
}

/// Verifies an OpenPGP cleartext-signed message (`-----BEGIN PGP SIGNED
/// MESSAGE-----`) under the same signature policy as [`verify_detached`],
/// and returns the text the signature covers. Data before the message or
/// after its signature block is refused, not ignored.
pub fn verify_cleartext(keys: &TrustedKeys, message: &[u8]) -> Result<SignedText, VerifyError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let text = std::str::from_utf8(message).map_err(|e| {
        VerifyError::MalformedSignature(format!("the clearsigned file is not UTF-8 text ({e})"))
    })?;
    if !text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
        return Err(VerifyError::MalformedSignature(
            "the file does not start with -----BEGIN PGP SIGNED MESSAGE-----, so it is not a clearsigned file (an InRelease)".into(),
        ));
    }
    let (parsed, _) = CleartextSignedMessage::from_string(text).map_err(|e| {
        VerifyError::MalformedSignature(format!("the clearsigned message cannot be read: {e}"))
    })?;
    if parsed.signatures().is_empty() {
        return Err(VerifyError::MalformedSignature(
            "the clearsigned message holds no signature".into(),
        ));
    }
    let signed = parsed.signed_text();
    let signature = verify_any(keys, signed.as_bytes(), parsed.signatures(), now)?;
    Ok(SignedText {
        signature,
        text: signed.replace("\r\n", "\n"),
    })
}

/// One good signature among `signatures` by a trusted key is enough; when
/// none is good, the most telling failure is reported.
fn verify_any(
    keys: &TrustedKeys,
    data: &[u8],
    signatures: &[Signature],
    now: u64,
) -> Result<GoodSignature, VerifyError> {
    let mut best: Option<VerifyError> = None;
    for sig in signatures {
        match verify_one(keys, data, sig, now) {
            Ok(good) => return Ok(good),
            // A failure involving a trusted key explains more than a
            // signature by some other key next to it.
            Err(e) => {
                let untrusted = |e: &VerifyError| {
                    matches!(
                        e,
                        VerifyError::UntrustedKey { .. } | VerifyError::NoKeyVerifies { .. }
                    )
                };
                let better = match &best {
                    None => true,
                    Some(b) => untrusted(b) && !untrusted(&e),
                };
                if better {
                    best = Some(e);
                }
            }
        }
    }
    Err(best.unwrap_or_else(|| {
        VerifyError::MalformedSignature("the file holds no signature packet".into())
    }))
}

fn parse_signatures(bytes: &[u8]) -> Result<Vec<Signature>, VerifyError> {
    let bad = |e: String| VerifyError::MalformedSignature(e);
    let mut signatures = Vec::new();
    for block in openpgp_blocks(bytes).map_err(bad)? {
        let parsed = match block {
            Block::Binary(b) => DetachedSignature::from_bytes_many(BufReader::new(b))
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>()),
            Block::Armored(b) => DetachedSignature::from_armor_many(b)
                .and_then(|(iter, _)| iter.collect::<Result<Vec<_>, _>>()),
        };
        signatures.extend(
            parsed
                .map_err(|e| bad(e.to_string()))?
                .into_iter()
                .map(|d| d.signature),
        );
    }
    if signatures.is_empty() {
        return Err(bad("the file holds no signature packet".into()));
    }
    Ok(signatures)
}

/// The issuer named by the signature: fingerprint if present, else key ids.
fn issuer_ids(sig: &Signature) -> Vec<String> {
    let mut ids: Vec<String> = sig
        .issuer_fingerprint()
        .iter()
        .map(|f| format!("{f:X}"))
        .collect();
    ids.extend(
        sig.issuer_key_id()
            .iter()
            .map(|k| hex::encode_upper(k.as_ref())),
    );
    ids
}

/// A signature's unhashed subpackets are not covered by it. Only the
/// issuer's key ID and fingerprint may travel there (GnuPG puts the key ID
/// there), and a key ID that is not part of a signed issuer fingerprint
/// means the signature was changed on the way: refused rather than ignored.
fn unsigned_area_problem(sig: &Signature) -> Option<String> {
    let unsigned = sig.config().map(|c| c.unhashed_subpackets());
    if let Some(other) = unsigned.into_iter().flatten().find(|p| {
        !matches!(
            p.data,
            SubpacketData::IssuerKeyId(_) | SubpacketData::IssuerFingerprint(_)
        )
    }) {
        return Some(format!(
            "its unsigned area holds a subpacket ({:?}) other than the issuer's key ID or fingerprint, which could have been changed after signing",
            other.data
        ));
    }
    let fingerprints: Vec<(String, bool)> = sig
        .issuer_fingerprint()
        .iter()
        .map(|f| (format!("{f:X}"), f.version() == Some(KeyVersion::V6)))
        .collect();
    if fingerprints.is_empty() {
        return None;
    }
    // A v4 key ID is the fingerprint's last 8 bytes, a v6 key ID its first 8.
    sig.issuer_key_id()
        .iter()
        .map(|k| hex::encode_upper(k.as_ref()))
        .find(|id| {
            !fingerprints.iter().any(|(fpr, v6)| {
                if *v6 {
                    fpr.starts_with(id.as_str())
                } else {
                    fpr.ends_with(id.as_str())
                }
            })
        })
        .map(|id| {
            let fprs: Vec<&str> = fingerprints.iter().map(|(f, _)| f.as_str()).collect();
            format!(
                "its issuer key ID {id} does not belong to its issuer fingerprint {}, so it was changed after signing",
                fprs.join(", ")
            )
        })
}

/// Whether the issuer subpackets name this key, by fingerprint or key id.
/// Unnamed signatures match every key.
fn issued_by(ids: &[String], key: &impl KeyDetails) -> bool {
    if ids.is_empty() {
        return true;
    }
    let (fpr, key_id) = (
        fingerprint(key),
        hex::encode_upper(key.legacy_key_id().as_ref()),
    );
    ids.iter().any(|id| *id == fpr || *id == key_id)
}

fn verify_one(
    keys: &TrustedKeys,
    data: &[u8],
    sig: &Signature,
    now: u64,
) -> Result<GoodSignature, VerifyError> {
    match sig.typ() {
        Some(SignatureType::Binary | SignatureType::Text) => {}
        Some(other) => {
            return Err(VerifyError::MalformedSignature(format!(
                "it holds a {other:?} signature, not a signature over a file"
            )))
        }
        None => {
            return Err(VerifyError::MalformedSignature(format!(
                "signature version {:?} is not supported",
                sig.version()
            )))
        }
    }
    let created = sig
        .created()
        .map(|t| u64::from(t.as_secs()))
        .ok_or_else(|| {
            VerifyError::MalformedSignature("a signature has no creation time".into())
        })?;
    let ids = issuer_ids(sig);
    if let Some(problem) = unsigned_area_problem(sig) {
        return Err(VerifyError::MalformedSignature(problem));
    }

    // Every trusted key whose primary or subkey the issuer names is tried;
    // the strongest reason for failing is reported if none passes.
    let mut policy_error = None;
    let mut crypto_error = None;
    for key in &keys.keys {
        let primary_fpr = fingerprint(&key.primary_key);
        let candidates = std::iter::once(None).chain(key.public_subkeys.iter().map(Some));
        for sub in candidates {
            let named = match sub {
                None => issued_by(&ids, &key.primary_key),
                Some(s) => issued_by(&ids, &s.key),
            };
            if !named {
                continue;
            }
            let signer_fpr = sub
                .map(|s| fingerprint(&s.key))
                .unwrap_or_else(|| primary_fpr.clone());
            // The policy comes first: weak algorithms are not even tried.
            if let Some(e) = data_policy_error(sig, key, sub, &signer_fpr, &primary_fpr) {
                policy_error.get_or_insert(e);
                continue;
            }
            let verified = match sub {
                None => sig.verify(&key.primary_key, data),
                Some(s) => sig.verify(&s.key, data),
            };
            if let Err(e) = verified {
                crypto_error.get_or_insert_with(|| crypto_failure(&signer_fpr, e));
                continue;
            }
            let policy =
                check_signature_time(sig, &signer_fpr, created, now).and_then(|()| match sub {
                    None => check_primary(key, &primary_fpr, created, true),
                    Some(s) => check_subkey(key, &primary_fpr, s, &signer_fpr, created),
                });
            match policy {
                Ok(()) => {
                    return Ok(GoodSignature {
                        primary_fingerprint: primary_fpr,
                        signing_key_fingerprint: signer_fpr,
                        created,
                    })
                }
                Err(e) => {
                    policy_error.get_or_insert(e);
                }
            }
        }
    }
    if let Some(e) = policy_error.or(crypto_error) {
        // Without issuer subpackets every key was tried, so a failed check
        // says nothing about which key signed.
        if !ids.is_empty() || !matches!(e, VerifyError::BadSignature { .. }) {
            return Err(e);
        }
    }
    let fingerprints = keys.fingerprints().join(", ");
    match ids.first() {
        Some(issuer) => Err(VerifyError::UntrustedKey {
            issuer: issuer.clone(),
            origin: keys.origin.clone(),
            fingerprints,
        }),
        None => Err(VerifyError::NoKeyVerifies {
            origin: keys.origin.clone(),
            fingerprints,
        }),
    }
}

/// Why the signature policy refuses a data signature by this key (the
/// primary, or `sub`), if it does: its hash, the signing key, or the
/// primary that vouches for the signing subkey.
fn data_policy_error(
    sig: &Signature,
    key: &SignedPublicKey,
    sub: Option<&SignedPublicSubKey>,
    signer_fpr: &str,
    primary_fpr: &str,
) -> Option<VerifyError> {
    let hash = sig.hash_alg()?;
    if !policy::data_hash_accepted(hash) {
        return Some(VerifyError::WeakHash {
            key: signer_fpr.to_owned(),
            algorithm: policy::hash_name(hash),
        });
    }
    let weak = |role, fpr: &str, problem| VerifyError::WeakKey {
        role,
        key: fpr.to_owned(),
        problem,
    };
    match sub {
        None => policy::signing_key_problem(&key.primary_key)
            .map(|p| weak(KeyRole::PrimaryKey, primary_fpr, p)),
        Some(s) => policy::signing_key_problem(&s.key)
            .map(|p| weak(KeyRole::SigningSubkey, signer_fpr, p))
            .or_else(|| {
                policy::signing_key_problem(&key.primary_key).map(|p| {
                    weak(
                        KeyRole::PrimaryKey,
                        primary_fpr,
                        format!("(which vouches for signing subkey {signer_fpr}) {p}"),
                    )
                })
            }),
    }
}

/// Why the policy ignores a self-signature, binding or back-signature.
fn self_signature_problem(sig: &Signature) -> Option<String> {
    match sig.hash_alg() {
        Some(hash) => policy::self_signature_hash_problem(hash, signature_created(sig)),
        None => Some(format!(
            "has signature version {:?}, which is not supported",
            sig.version()
        )),
    }
}

/// The newest of `sigs` that the policy accepts; or, when it accepts none,
/// why the newest one was ignored.
fn newest_accepted<'a>(sigs: &[&'a Signature]) -> Result<Option<&'a Signature>, String> {
    if let Some(good) = newest(
        sigs.iter()
            .copied()
            .filter(|s| self_signature_problem(s).is_none()),
    ) {
        return Ok(Some(good));
    }
    match newest(sigs.iter().copied()) {
        Some(ignored) => Err(self_signature_problem(ignored).unwrap_or_default()),
        None => Ok(None),
    }
}

fn crypto_failure(key: &str, e: pgp::errors::Error) -> VerifyError {
    match e {
        pgp::errors::Error::Unsupported { .. } | pgp::errors::Error::Unimplemented { .. } => {
            VerifyError::Unsupported {
                key: key.to_owned(),
                reason: e.to_string(),
            }
        }
        _ => VerifyError::BadSignature {
            key: key.to_owned(),
        },
    }
}

fn check_signature_time(
    sig: &Signature,
    key: &str,
    created: u64,
    now: u64,
) -> Result<(), VerifyError> {
    let problem = |p: String| VerifyError::SignatureTime {
        key: key.to_owned(),
        problem: p,
    };
    if created > now + MAX_CLOCK_SKEW_SECS {
        return Err(problem(format!(
            "was made on {}, which is in the future (now is {}); check this machine's clock",
            utc(created),
            utc(now)
        )));
    }
    if let Some(valid_for) = sig
        .signature_expiration_time()
        .map(|d| u64::from(d.as_secs()))
        .filter(|&s| s != 0)
    {
        if now > created + valid_for {
            return Err(problem(format!(
                "expired on {}; get a freshly signed file",
                utc(created + valid_for)
            )));
        }
    }
    Ok(())
}

fn signature_created(sig: &Signature) -> u64 {
    sig.created().map(|t| u64::from(t.as_secs())).unwrap_or(0)
}

fn newest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| signature_created(s))
}

/// Whether the signature's hashed area carries a key flags subpacket at all
/// (keys from before key flags existed have none and may do anything).
fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

/// A revocation "key superseded", "key retired" or "user id no longer valid"
/// takes effect when it was made; any other (compromised, no reason) voids
/// the key for all time.
fn revoked_at(revocation: &Signature, at: u64) -> bool {
    let soft = matches!(
        revocation.revocation_reason_code(),
        Some(
            RevocationCode::KeySuperseded
                | RevocationCode::KeyRetired
                | RevocationCode::CertUserIdInvalid
        )
    );
    !soft || signature_created(revocation) <= at
}

fn revocation_problem(revocation: &Signature) -> String {
    let reason = revocation
        .revocation_reason_string()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .filter(|r| !r.is_empty())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    format!(
        "was revoked on {} (reason: {:?}{reason}); its owner no longer vouches for it, get a current key",
        utc(signature_created(revocation)),
        revocation.revocation_reason_code().copied().unwrap_or(RevocationCode::NoReason)
    )
}

/// The primary key's self-signatures (direct-key and user id
/// certifications that the primary itself made and that verify).
fn self_signatures(key: &SignedPublicKey) -> Vec<&Signature> {
    let primary = &key.primary_key;
    let direct = key
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::Key) && s.verify_key(primary).is_ok());
    let certifications = key.details.users.iter().flat_map(|user| {
        user.signatures.iter().filter(|s| {
            s.is_certification()
                && s.verify_certification(primary, Tag::UserId, &user.id)
                    .is_ok()
        })
    });
    direct.chain(certifications).collect()
}

/// The primary must carry a valid self-signature, must not have been
/// revoked or expired at `at`, and, when it made the signature itself, must
/// be allowed to sign.
fn check_primary(
    key: &SignedPublicKey,
    fpr: &str,
    at: u64,
    signs: bool,
) -> Result<(), VerifyError> {
    let invalid = |problem: String| VerifyError::KeyNotValid {
        role: KeyRole::PrimaryKey,
        key: fpr.to_owned(),
        problem,
    };
    let primary: &PublicKey = &key.primary_key;
    let key_created = u64::from(primary.created_at().as_secs());
    if at < key_created {
        return Err(invalid(format!(
            "was made on {}, after the signature dated {}",
            utc(key_created),
            utc(at)
        )));
    }
    let revocation = key
        .details
        .revocation_signatures
        .iter()
        .filter(|r| r.typ() == Some(SignatureType::KeyRevocation) && r.verify_key(primary).is_ok())
        .find(|r| revoked_at(r, at));
    if let Some(r) = revocation {
        return Err(invalid(revocation_problem(r)));
    }
    let self_sig = newest_accepted(&self_signatures(key))
        .map_err(|why| invalid(format!("has no self-signature that the signature policy accepts: its newest one {why}; its owner must certify it again with SHA-256 or stronger (see docs/verification.md)")))?
        .ok_or_else(|| invalid("has no valid self-signature (no user id or direct-key signature made by the key itself verifies)".into()))?;
    if let Some(valid_for) = self_sig
        .key_expiration_time()
        .map(|d| u64::from(d.as_secs()))
        .filter(|&s| s != 0)
    {
        let expires = key_created + valid_for;
        if at > expires {
            return Err(invalid(format!(
                "expired on {}, before the signature was made on {}",
                utc(expires),
                utc(at)
            )));
        }
    }
    if signs && has_key_flags(self_sig) && !self_sig.key_flags().sign() {
        return Err(invalid(
            "is not allowed to sign data (its self-signature grants no signing flag)".into(),
        ));
    }
    Ok(())
}

/// A subkey signs for its primary only when the primary bound it (binding
/// signature with the signing flag), the subkey agreed (embedded
/// back-signature), neither was revoked or expired at `at`.
fn check_subkey(
    key: &SignedPublicKey,
    primary_fpr: &str,
    sub: &SignedPublicSubKey,
    sub_fpr: &str,
    at: u64,
) -> Result<(), VerifyError> {
    let invalid = |problem: String| VerifyError::KeyNotValid {
        role: KeyRole::SigningSubkey,
        key: sub_fpr.to_owned(),
        problem,
    };
    let primary = &key.primary_key;
    let sub_created = u64::from(sub.key.created_at().as_secs());
    if at < sub_created {
        return Err(invalid(format!(
            "was made on {}, after the signature dated {}",
            utc(sub_created),
            utc(at)
        )));
    }
    let bindings: Vec<&Signature> = sub
        .signatures
        .iter()
        .filter(|s| {
            s.typ() == Some(SignatureType::SubkeyBinding)
                && s.verify_subkey_binding(primary, &sub.key).is_ok()
        })
        .collect();
    let binding = newest_accepted(&bindings)
        .map_err(|why| invalid(format!("has no binding signature that the signature policy accepts: the newest one by primary key {primary_fpr} {why}; the key's owner must bind it again with SHA-256 or stronger (see docs/verification.md)")))?
        .ok_or_else(|| {
            invalid(format!(
                "is not bound to primary key {primary_fpr} by a valid binding signature"
            ))
        })?;
    let revocation = sub
        .signatures
        .iter()
        .filter(|s| {
            s.typ() == Some(SignatureType::SubkeyRevocation)
                && s.verify_subkey_binding(primary, &sub.key).is_ok()
        })
        .find(|r| revoked_at(r, at));
    if let Some(r) = revocation {
        return Err(invalid(revocation_problem(r)));
    }
    if !binding.key_flags().sign() {
        return Err(invalid(format!("is not allowed to sign data (primary key {primary_fpr} bound it without the signing flag)")));
    }
    let back_signature = binding.embedded_signature().filter(|b| {
        b.typ() == Some(SignatureType::KeyBinding)
            && b.verify_primary_key_binding(&sub.key, primary).is_ok()
    });
    if let Some(why) = back_signature.and_then(self_signature_problem) {
        return Err(invalid(format!(
            "has a back-signature for primary key {primary_fpr} that the signature policy does not accept: it {why}; the key's owner must bind it again with SHA-256 or stronger (see docs/verification.md)"
        )));
    }
    if back_signature.is_none() {
        return Err(invalid(format!(
            "has no valid back-signature for primary key {primary_fpr} (it is not cross-certified), so it cannot sign for that key"
        )));
    }
    if let Some(valid_for) = binding
        .key_expiration_time()
        .map(|d| u64::from(d.as_secs()))
        .filter(|&s| s != 0)
    {
        let expires = sub_created + valid_for;
        if at > expires {
            return Err(invalid(format!(
                "expired on {}, before the signature was made on {}",
                utc(expires),
                utc(at)
            )));
        }
    }
    check_primary(key, primary_fpr, at, false)
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the Unix epoch.
fn utc(secs: u64) -> String {
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The civil date (year, month 1-12, day 1-31) of a day counted from
/// 1970-01-01 (proleptic Gregorian), after Howard Hinnant's `civil_from_days`.
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The entries of a `SHA256SUMS` file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sha256Sums {
    entries: Vec<(String, [u8; 32])>,
}

impl Sha256Sums {
    /// Lines are `<hex> *<name>` (binary mode) or `<hex>  <name>` (text
    /// mode); blank lines are ignored, anything else is an error.
    pub fn parse(text: &str) -> Result<Sha256Sums, VerifyError> {
        let mut entries: Vec<(String, [u8; 32])> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                continue;
            }
            let bad = |problem| VerifyError::SumsLine {
                line: i + 1,
                problem,
                text: line.to_owned(),
            };
            let (hex_part, rest) = line
                .split_once(' ')
                .ok_or_else(|| bad("expected `<sha256> *<name>`"))?;
            let mut hash = [0u8; 32];
            hex::decode_to_slice(hex_part, &mut hash)
                .map_err(|_| bad("the hash is not 64 hexadecimal digits"))?;
            let name = rest
                .strip_prefix('*')
                .or_else(|| rest.strip_prefix(' '))
                .ok_or_else(|| bad("expected ` *` or two spaces between the hash and the name"))?;
            if name.is_empty() {
                return Err(bad("no file name after the hash"));
            }
            match entries.iter().find(|(n, _)| n == name) {
                Some((_, h)) if *h != hash => {
                    return Err(VerifyError::SumsDuplicate {
                        name: name.to_owned(),
                    })
                }
                Some(_) => {}
                None => entries.push((name.to_owned(), hash)),
            }
        }
        Ok(Sha256Sums { entries })
    }

    /// The expected digest of the file called `name` (exactly as listed).
    pub fn get(&self, name: &str) -> Option<[u8; 32]> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| *h)
    }

    /// The listed file names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }
}

/// Hashes (SHA-256) and counts every byte read through it.
pub struct HashingReader<R: Read> {
    inner: R,
    hasher: Hasher,
    bytes: u64,
}

/// Where the hashing happens: on the reading thread, or on a worker that
/// takes whole chunks so the SHA-256 runs beside the reads and writes.
enum Hasher {
    Inline(Sha256),
    Background(BackgroundHasher),
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::Inline(Sha256::new()),
            bytes: 0,
        }
    }

    /// As [`HashingReader::new`], with the hashing on a second thread: for
    /// large streams that are also written somewhere, where SHA-256 would
    /// otherwise be the slower half of each read-then-write.
    pub fn in_background(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::Background(BackgroundHasher::start()),
            bytes: 0,
        }
    }

    /// The digest and the number of bytes read so far.
    pub fn finish(self) -> ([u8; 32], u64) {
        let digest = match self.hasher {
            Hasher::Inline(h) => h.finalize().into(),
            Hasher::Background(b) => b.finish(),
        };
        (digest, self.bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match &mut self.hasher {
            Hasher::Inline(h) => h.update(&buf[..n]),
            Hasher::Background(b) => b.update(&buf[..n]),
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A SHA-256 on its own thread, fed in chunks of [`BackgroundHasher::CHUNK`]
/// bytes through a bounded queue; chunks come back for reuse, so at most
/// [`BackgroundHasher::CHUNKS`] are ever allocated.
struct BackgroundHasher {
    chunk: Vec<u8>,
    full: std::sync::mpsc::SyncSender<Vec<u8>>,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
    allocated: usize,
    worker: std::thread::JoinHandle<Sha256>,
}

impl BackgroundHasher {
    const CHUNK: usize = 4 << 20;
    const CHUNKS: usize = 4;

    fn start() -> Self {
        let (full, to_hash) = std::sync::mpsc::sync_channel::<Vec<u8>>(Self::CHUNKS);
        let (hashed, empty) = std::sync::mpsc::sync_channel::<Vec<u8>>(Self::CHUNKS);
        let worker = std::thread::spawn(move || {
            let mut hasher = Sha256::new();
            for mut chunk in to_hash {
                hasher.update(&chunk);
                chunk.clear();
                // The reader may have finished and gone: nothing to give back to.
                let _ = hashed.send(chunk);
            }
            hasher
        });
        BackgroundHasher {
            chunk: Vec::with_capacity(Self::CHUNK),
            full,
            empty,
            allocated: 1,
            worker,
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (Self::CHUNK - self.chunk.len()).min(bytes.len());
            self.chunk.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.chunk.len() == Self::CHUNK {
                self.hand_over();
            }
        }
    }

    /// Queues the current chunk for the worker and takes an empty one.
    fn hand_over(&mut self) {
        let full = std::mem::take(&mut self.chunk);
        let _ = self.full.send(full);
        self.chunk = if self.allocated < Self::CHUNKS {
            self.allocated += 1;
            Vec::with_capacity(Self::CHUNK)
        } else {
            // Blocks until the worker is done with a chunk. Should the
            // worker be gone, finish() reports its panic.
            self.empty
                .recv()
                .unwrap_or_else(|_| Vec::with_capacity(Self::CHUNK))
        };
    }

    fn finish(mut self) -> [u8; 32] {
        if !self.chunk.is_empty() {
            let last = std::mem::take(&mut self.chunk);
            let _ = self.full.send(last);
        }
        drop(self.full);
        match self.worker.join() {
            Ok(hasher) => hasher.finalize().into(),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Lower-case hex, as `sha256sum` prints it.
pub fn sha256_hex(digest: &[u8; 32]) -> String {
    hex::encode(digest)
}

/// Compares a computed digest with the one from `SHA256SUMS`.
pub fn check_hash(name: &str, expected: [u8; 32], actual: [u8; 32]) -> Result<(), VerifyError> {
    if expected == actual {
        Ok(())
    } else {
        Err(VerifyError::HashMismatch {
            name: name.to_owned(),
            expected: sha256_hex(&expected),
            actual: sha256_hex(&actual),
        })
    }
}

#[cfg(test)]
mod tests;
