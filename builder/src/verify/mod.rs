//! Trust: OpenPGP detached signatures over `SHA256SUMS`, the checksum list
//! itself, and streaming SHA-256.
//!
//! A signature is good only when it verifies with a trusted primary key or
//! with a signing-capable subkey whose binding to that primary verifies, and
//! when the key was neither expired nor revoked at the signature's creation
//! time. The pgp crate has no such policy built in, so it lives here.

use std::io::{BufReader, Read};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::KeyDetails;
use sha2::{Digest, Sha256};

/// Ubuntu CD image signing key (2012), which signs release `SHA256SUMS`.
const UBUNTU_CDIMAGE_KEY: &[u8] = include_bytes!("../../keys/ubuntu-cdimage-2012.asc");
/// Clock skew tolerated for a signature made "in the future".
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{origin}: no OpenPGP public key could be read: {reason}")]
    Keyring { origin: String, reason: String },
    #[error("the signature file is not an OpenPGP detached signature: {0}")]
    MalformedSignature(String),
    #[error("signature made by key {issuer} which is not in the trusted keyring {origin} (trusted: {trusted}); pass the keyring that holds the signer's public key with --keyring")]
    UntrustedKey { issuer: String, origin: String, trusted: String },
    #[error("signature by key {key} does not match the data: the file was changed after it was signed")]
    BadSignature { key: String },
    #[error("signing key {key} {problem}")]
    KeyNotValid { key: String, problem: String },
    #[error("signature was made at {created} (Unix time), which is in the future; check the clock")]
    FutureSignature { created: u32 },
    #[error("SHA256SUMS line {line}: {problem}: {text:?}")]
    SumsLine { line: usize, problem: &'static str, text: String },
    #[error("SHA256SUMS lists {name:?} twice with different hashes")]
    SumsDuplicate { name: String },
    #[error("SHA-256 of {name} is {actual} but SHA256SUMS says {expected}: the file is corrupt or was tampered with; download it again")]
    HashMismatch { name: String, expected: String, actual: String },
}

/// OpenPGP public keys trusted to sign.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    keys: Vec<SignedPublicKey>,
    origin: String,
}

impl TrustedKeys {
    /// Reads one or more public keys, armored or binary.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<TrustedKeys, VerifyError> {
        let err = |reason: String| VerifyError::Keyring { origin: origin.to_owned(), reason };
        let parsed: Vec<SignedPublicKey> = if is_armored(bytes) {
            let (iter, _) = <SignedPublicKey as Deserializable>::from_armor_many(bytes).map_err(|e| err(e.to_string()))?;
            iter.collect::<Result<_, _>>().map_err(|e| err(e.to_string()))?
        } else {
            let iter = <SignedPublicKey as Deserializable>::from_bytes_many(BufReader::new(bytes))
                .map_err(|e| err(e.to_string()))?;
            iter.collect::<Result<_, _>>().map_err(|e| err(e.to_string()))?
        };
        if parsed.is_empty() {
            return Err(err("the file holds no public key".into()));
        }
        Ok(TrustedKeys { keys: parsed, origin: origin.to_owned() })
    }

    /// Upper-case hex fingerprints of the primary keys.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(|k| format!("{:X}", k.primary_key.fingerprint())).collect()
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Ubuntu's CD image signing key, built in.
pub fn ubuntu_cdimage_keys() -> TrustedKeys {
    TrustedKeys::from_bytes(UBUNTU_CDIMAGE_KEY, "built-in Ubuntu CD image signing key")
        .expect("the built-in Ubuntu key parses (checked by a test)")
}

fn is_armored(bytes: &[u8]) -> bool {
    let text = &bytes[..bytes.len().min(256)];
    text.windows(10).any(|w| w == b"-----BEGIN")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoodSignature {
    pub primary_fingerprint: String,
    pub signing_key_fingerprint: String,
    /// Unix time of the signature.
    pub created: u32,
}

/// Verifies a detached signature (armored or binary) over `data`.
pub fn verify_detached(keys: &TrustedKeys, data: &[u8], signature: &[u8]) -> Result<GoodSignature, VerifyError> {
    let sigs = parse_signatures(signature)?;
    let mut first_error = None;
    for sig in &sigs {
        match verify_one(keys, data, sig) {
            Ok(good) => return Ok(good),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| VerifyError::MalformedSignature("no signature packet found".into())))
}

fn parse_signatures(bytes: &[u8]) -> Result<Vec<Signature>, VerifyError> {
    let bad = |e: pgp::errors::Error| VerifyError::MalformedSignature(e.to_string());
    let sigs: Vec<DetachedSignature> = if is_armored(bytes) {
        let (iter, _) = <DetachedSignature as Deserializable>::from_armor_many(bytes).map_err(bad)?;
        iter.collect::<Result<_, _>>().map_err(bad)?
    } else {
        let iter = <DetachedSignature as Deserializable>::from_bytes_many(BufReader::new(bytes)).map_err(bad)?;
        iter.collect::<Result<_, _>>().map_err(bad)?
    };
    Ok(sigs.into_iter().map(|d| d.signature).collect())
}

fn issuer_ids(sig: &Signature) -> Vec<String> {
    let mut ids: Vec<String> = sig.issuer_fingerprint().iter().map(|f| format!("{f:X}")).collect();
    ids.extend(sig.issuer_key_id().iter().map(|k| hex::encode_upper(k.as_ref())));
    ids
}

/// Whether a key with this fingerprint is named by the signature's issuer
/// subpackets (full fingerprint or the 64-bit key id at its end).
fn issued_by(ids: &[String], fingerprint: &str) -> bool {
    ids.is_empty() || ids.iter().any(|id| fingerprint.ends_with(id.as_str()))
}

fn verify_one(keys: &TrustedKeys, data: &[u8], sig: &Signature) -> Result<GoodSignature, VerifyError> {
    let created = sig.created().map(|t| t.as_secs()).unwrap_or(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    if Duration::from_secs(u64::from(created)) > now + MAX_CLOCK_SKEW {
        return Err(VerifyError::FutureSignature { created });
    }
    let ids = issuer_ids(sig);
    // Without issuer subpackets every key is a candidate; a key that does
    // not verify is then simply not the signer.
    let anonymous = ids.is_empty();
    for key in &keys.keys {
        let primary = &key.primary_key;
        let primary_fpr = format!("{:X}", primary.fingerprint());
        if issued_by(&ids, &primary_fpr) {
            match sig.verify(primary, data) {
                Ok(()) => {
                    check_not_revoked(key, &primary_fpr)?;
                    return Ok(GoodSignature {
                        signing_key_fingerprint: primary_fpr.clone(),
                        primary_fingerprint: primary_fpr,
                        created,
                    });
                }
                Err(_) if anonymous => {}
                Err(_) => return Err(VerifyError::BadSignature { key: primary_fpr }),
            }
        }
        for sub in &key.public_subkeys {
            let sub_fpr = format!("{:X}", sub.key.fingerprint());
            if !issued_by(&ids, &sub_fpr) {
                continue;
            }
            match sig.verify(&sub.key, data) {
                Ok(()) => {
                    check_subkey(key, sub, &sub_fpr, created)?;
                    check_not_revoked(key, &primary_fpr)?;
                    return Ok(GoodSignature { primary_fingerprint: primary_fpr, signing_key_fingerprint: sub_fpr, created });
                }
                Err(_) if anonymous => {}
                Err(_) => return Err(VerifyError::BadSignature { key: sub_fpr }),
            }
        }
    }
    Err(VerifyError::UntrustedKey {
        issuer: ids.first().cloned().unwrap_or_else(|| "(unnamed)".into()),
        origin: keys.origin.clone(),
        trusted: keys.fingerprints().join(", "),
    })
}

fn check_not_revoked(key: &SignedPublicKey, fpr: &str) -> Result<(), VerifyError> {
    let revoked = key
        .details
        .revocation_signatures
        .iter()
        .any(|r| r.typ() == Some(SignatureType::KeyRevocation) && r.verify_key(&key.primary_key).is_ok());
    if revoked {
        return Err(VerifyError::KeyNotValid { key: fpr.to_owned(), problem: "has been revoked".into() });
    }
    Ok(())
}

/// A subkey may sign only when a binding signature by the primary verifies,
/// grants the signing capability, and had not expired when the signature was made.
fn check_subkey(
    key: &SignedPublicKey,
    sub: &pgp::composed::SignedPublicSubKey,
    sub_fpr: &str,
    sig_created: u32,
) -> Result<(), VerifyError> {
    let invalid = |problem: &str| VerifyError::KeyNotValid { key: sub_fpr.to_owned(), problem: problem.to_owned() };
    let mut bindings: Vec<&Signature> = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .filter(|s| s.verify_subkey_binding(&key.primary_key, &sub.key).is_ok())
        .collect();
    if bindings.is_empty() {
        return Err(invalid("is not bound to its primary key by a valid signature"));
    }
    let revoked = sub
        .signatures
        .iter()
        .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation) && s.verify_subkey_binding(&key.primary_key, &sub.key).is_ok());
    if revoked {
        return Err(invalid("has been revoked"));
    }
    // The newest binding is the one in force.
    bindings.sort_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0));
    let binding = bindings[bindings.len() - 1];
    if !binding.key_flags().sign() {
        return Err(invalid("is not allowed to sign (its binding has no signing flag)"));
    }
    if let Some(valid_for) = binding.key_expiration_time().filter(|d| d.as_secs() != 0) {
        let expires = u64::from(sub.key.created_at().as_secs()) + u64::from(valid_for.as_secs());
        if u64::from(sig_created) > expires {
            return Err(invalid(&format!("expired at {expires} (Unix time) before the signature was made at {sig_created}")));
        }
    }
    Ok(())
}

/// The entries of a `SHA256SUMS` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sha256Sums {
    entries: Vec<(String, [u8; 32])>,
}

impl Sha256Sums {
    /// Lines are `<hex> *<name>` (binary) or `<hex>  <name>` (text); blank lines are ignored.
    pub fn parse(text: &str) -> Result<Sha256Sums, VerifyError> {
        let mut entries: Vec<(String, [u8; 32])> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let bad = |problem| VerifyError::SumsLine { line: i + 1, problem, text: line.to_owned() };
            let (hex_part, rest) = line.split_once(' ').ok_or_else(|| bad("expected `<sha256> *<name>`"))?;
            let name = rest.strip_prefix('*').or_else(|| rest.strip_prefix(' ')).ok_or_else(|| bad("expected ` *` or two spaces between hash and name"))?;
            if name.is_empty() {
                return Err(bad("no file name"));
            }
            let mut hash = [0u8; 32];
            hex::decode_to_slice(hex_part, &mut hash).map_err(|_| bad("the hash is not 64 hexadecimal digits"))?;
            match entries.iter().find(|(n, _)| n == name) {
                Some((_, h)) if *h != hash => return Err(VerifyError::SumsDuplicate { name: name.to_owned() }),
                Some(_) => {}
                None => entries.push((name.to_owned(), hash)),
            }
        }
        Ok(Sha256Sums { entries })
    }

    pub fn get(&self, name: &str) -> Option<[u8; 32]> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, h)| *h)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }
}

/// Hashes and counts every byte read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), bytes: 0 }
    }

    pub fn finish(self) -> ([u8; 32], u64) {
        (self.hasher.finalize().into(), self.bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

pub fn sha256_hex(digest: &[u8; 32]) -> String {
    hex::encode(digest)
}

pub fn check_hash(name: &str, expected: [u8; 32], actual: [u8; 32]) -> Result<(), VerifyError> {
    if expected == actual {
        Ok(())
    } else {
        Err(VerifyError::HashMismatch { name: name.to_owned(), expected: sha256_hex(&expected), actual: sha256_hex(&actual) })
    }
}

#[cfg(test)]
mod tests;
