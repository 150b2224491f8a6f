//! The signature policy: which hash algorithms and public keys may vouch
//! for what. It is modelled on Sequoia's `StandardPolicy` (sequoia-openpgp
//! 1.x) and published in `docs/verification.md`; the two must agree.
//!
//! - **Data signatures** (the detached signature over `SHA256SUMS`, and
//!   anything else [`super::verify_detached`] checks) need a hash with full
//!   collision resistance: SHA-256, SHA-384, SHA-512, SHA3-256 or SHA3-512.
//!   MD5, SHA-1, RIPEMD-160, SHA-224 and unknown algorithms are refused
//!   whatever the signature's date. Sequoia still accepts SHA-224; it is
//!   refused here because its 112-bit collision resistance is below the
//!   128 bits of the SHA-256 that the signed list vouches for, and no
//!   publisher imgforge knows of uses it.
//! - **Self-signatures, subkey bindings and back-signatures** cover data the
//!   key owner chose, so only second pre-image resistance matters. As in
//!   Sequoia, the SHA-2 family (SHA-224 included) and SHA3 are accepted;
//!   SHA-1 is accepted for such signatures made before 2023-02-01 00:00 UTC
//!   and RIPEMD-160 before 2013-02-01 00:00 UTC; MD5 and unknown algorithms
//!   never (Sequoia allows MD5 before 2004; no key in use is that old). A
//!   self-signature that fails the policy is ignored, as if absent.
//! - **Revocations** are honoured whatever hash they use: a forged one can
//!   only make verification fail, never pass.
//! - **Signing keys**: the key that made a data signature, and the primary
//!   key that bound it when it is a subkey, must be RSA of at least 2048
//!   bits, ECDSA on NIST P-256, P-384 or P-521, or EdDSA (Ed25519, Ed448).
//!   DSA is refused at any size (FIPS 186-5 withdrew it for signing;
//!   Sequoia refuses DSA-1024), as is every other algorithm.

use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::ser::Serialize;
use pgp::types::{EcdsaPublicParams, EddsaLegacyPublicParams, KeyDetails, PublicParams};

/// SHA-1 self-signatures made at or after this instant (2023-02-01
/// 00:00:00 UTC) are ignored; Sequoia's cutoff for second pre-image use.
pub const SHA1_SELF_SIGNATURE_CUTOFF: u64 = 1_675_209_600;

/// RIPEMD-160 self-signatures made at or after this instant (2013-02-01
/// 00:00:00 UTC) are ignored, as in Sequoia.
pub const RIPEMD160_SELF_SIGNATURE_CUTOFF: u64 = 1_359_676_800;

/// The smallest RSA modulus accepted for signing.
pub const MIN_RSA_BITS: u32 = 2048;

/// How messages name a hash algorithm.
pub fn hash_name(hash: HashAlgorithm) -> String {
    match hash {
        HashAlgorithm::Md5 => "MD5".into(),
        HashAlgorithm::Sha1 => "SHA-1".into(),
        HashAlgorithm::Ripemd160 => "RIPEMD-160".into(),
        HashAlgorithm::Sha224 => "SHA-224".into(),
        HashAlgorithm::Sha256 => "SHA-256".into(),
        HashAlgorithm::Sha384 => "SHA-384".into(),
        HashAlgorithm::Sha512 => "SHA-512".into(),
        HashAlgorithm::Sha3_256 => "SHA3-256".into(),
        HashAlgorithm::Sha3_512 => "SHA3-512".into(),
        other => format!("hash algorithm {}", u8::from(other)),
    }
}

/// Whether a data signature may use `hash`.
pub fn data_hash_accepted(hash: HashAlgorithm) -> bool {
    matches!(
        hash,
        HashAlgorithm::Sha256
            | HashAlgorithm::Sha384
            | HashAlgorithm::Sha512
            | HashAlgorithm::Sha3_256
            | HashAlgorithm::Sha3_512
    )
}

/// Why a self-signature, binding or back-signature made at `created` with
/// `hash` is not accepted, or `None` when it is.
pub fn self_signature_hash_problem(hash: HashAlgorithm, created: u64) -> Option<String> {
    let cutoff = match hash {
        HashAlgorithm::Sha224
        | HashAlgorithm::Sha256
        | HashAlgorithm::Sha384
        | HashAlgorithm::Sha512
        | HashAlgorithm::Sha3_256
        | HashAlgorithm::Sha3_512 => return None,
        HashAlgorithm::Sha1 => SHA1_SELF_SIGNATURE_CUTOFF,
        HashAlgorithm::Ripemd160 => RIPEMD160_SELF_SIGNATURE_CUTOFF,
        other => {
            return Some(format!(
                "uses {}, which is never accepted",
                hash_name(other)
            ))
        }
    };
    (created >= cutoff).then(|| {
        format!(
            "uses {} and was made on {}; {} is accepted only for self-signatures made before {}",
            hash_name(hash),
            super::utc(created),
            hash_name(hash),
            super::utc(cutoff)
        )
    })
}

/// Why `key` may not sign for us, or `None` when its algorithm and size
/// are accepted.
pub fn signing_key_problem(key: &impl KeyDetails) -> Option<String> {
    let accepted = "signing keys must be RSA of at least 2048 bits, ECDSA on NIST P-256, P-384 or P-521, or Ed25519/Ed448";
    let problem = match (key.algorithm(), key.public_params()) {
        (PublicKeyAlgorithm::RSA | PublicKeyAlgorithm::RSASign, PublicParams::RSA(_)) => {
            let bits = rsa_bits(key.public_params());
            if bits >= MIN_RSA_BITS {
                return None;
            }
            format!("is an RSA key of {bits} bits")
        }
        (PublicKeyAlgorithm::DSA, _) => "is a DSA key, and DSA is refused at any size".into(),
        (
            PublicKeyAlgorithm::ECDSA,
            PublicParams::ECDSA(
                EcdsaPublicParams::P256 { .. }
                | EcdsaPublicParams::P384 { .. }
                | EcdsaPublicParams::P521 { .. },
            ),
        ) => return None,
        (
            PublicKeyAlgorithm::EdDSALegacy,
            PublicParams::EdDSALegacy(EddsaLegacyPublicParams::Ed25519 { .. }),
        )
        | (PublicKeyAlgorithm::Ed25519, PublicParams::Ed25519(_))
        | (PublicKeyAlgorithm::Ed448, PublicParams::Ed448(_)) => return None,
        (PublicKeyAlgorithm::ECDSA, PublicParams::ECDSA(EcdsaPublicParams::Secp256k1 { .. })) => {
            "is an ECDSA key on secp256k1".into()
        }
        (
            PublicKeyAlgorithm::ECDSA,
            PublicParams::ECDSA(EcdsaPublicParams::Unsupported { curve, .. }),
        )
        | (
            PublicKeyAlgorithm::EdDSALegacy,
            PublicParams::EdDSALegacy(EddsaLegacyPublicParams::Unsupported { curve, .. }),
        ) => format!("is a {:?} key on curve {}", key.algorithm(), curve.name()),
        (algorithm, _) => format!("is a {algorithm:?} key"),
    };
    Some(format!("{problem}; {accepted}"))
}

/// The size of an RSA modulus. Public parameters serialise as OpenPGP
/// MPIs, whose first two bytes are the bit length of the number, and the
/// modulus comes first.
fn rsa_bits(params: &PublicParams) -> u32 {
    params
        .to_bytes()
        .ok()
        .and_then(|b| Some(u32::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]))))
        .unwrap_or(0)
}
