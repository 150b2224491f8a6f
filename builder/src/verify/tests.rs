//! Keys and signatures are made here with the pgp crate, with explicit
//! times, so every policy case is built on purpose rather than found.

use super::*;
use crate::test_support::Gnupg;
use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, KeyType, SecretKeyParamsBuilder, SignedSecretKey,
    SubkeyParamsBuilder,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{self, KeyFlags, PacketTrait, SignatureConfig, Subpacket};
use pgp::ser::Serialize;
use pgp::types::{Duration, Password, SigningKey, Timestamp};
use rand::SeedableRng;

/// 2023-11-14 22:13:20 UTC: keys are made then, signatures later.
const T0: u32 = 1_700_000_000;
const DAY: u32 = 86_400;
const DATA: &[u8] =
    b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef *ubuntu.iso\n";

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// A key with a certify-only primary (or a primary that also signs) and
/// optionally one signing subkey, both made at `T0`.
fn make_key(seed: u64, name: &str, primary_signs: bool, signing_subkey: bool) -> SignedSecretKey {
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(primary_signs)
        .created_at(Timestamp::from_secs(T0))
        .primary_user_id(format!("{name} <{name}@test.invalid>"));
    if signing_subkey {
        params.subkey(
            SubkeyParamsBuilder::default()
                .key_type(KeyType::Ed25519Legacy)
                .can_sign(true)
                .created_at(Timestamp::from_secs(T0))
                .build()
                .unwrap(),
        );
    }
    params.build().unwrap().generate(rng(seed)).unwrap()
}

fn sp(d: SubpacketData) -> Subpacket {
    Subpacket::regular(d).unwrap()
}

/// A detached binary-mode signature by `key` over `data`, made at `created`.
fn sign_at(key: &impl SigningKey, data: &[u8], created: u32) -> DetachedSignature {
    sign_with(key, HashAlgorithm::Sha256, data, created)
}

/// [`sign_at`] with the given hash algorithm.
fn sign_with(
    key: &impl SigningKey,
    hash: HashAlgorithm,
    data: &[u8],
    created: u32,
) -> DetachedSignature {
    let mut config = SignatureConfig::v4(SignatureType::Binary, key.algorithm(), hash);
    config.hashed_subpackets = vec![
        sp(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
            created,
        ))),
        sp(SubpacketData::IssuerFingerprint(key.fingerprint())),
    ];
    config.unhashed_subpackets = vec![sp(SubpacketData::IssuerKeyId(key.legacy_key_id()))];
    DetachedSignature::new(config.sign(key, &Password::empty(), data).unwrap())
}

fn armored(sig: &DetachedSignature) -> Vec<u8> {
    sig.to_armored_bytes(ArmorOptions::default()).unwrap()
}

fn binary(sig: &DetachedSignature) -> Vec<u8> {
    sig.to_bytes().unwrap()
}

/// The public half as a trusted keyring, through the armored parser.
fn trust(key: &SignedPublicKey) -> TrustedKeys {
    TrustedKeys::from_bytes(
        &key.to_armored_bytes(ArmorOptions::default()).unwrap(),
        "test keyring",
    )
    .unwrap()
}

struct Binding {
    sign_flag: bool,
    back_signature: bool,
    valid_for: Option<u32>,
    hash: HashAlgorithm,
    made: u32,
}

const GOOD_BINDING: Binding = Binding {
    sign_flag: true,
    back_signature: true,
    valid_for: None,
    hash: HashAlgorithm::Sha256,
    made: T0 + 60,
};

/// The key's public half with its subkey bound again by `binder` (normally
/// its own primary) as `binding` describes, plus `extra` signatures on the subkey.
fn rebound(
    key: &SignedSecretKey,
    binder: &SignedSecretKey,
    binding: Binding,
    extra: Vec<Signature>,
) -> SignedPublicKey {
    let primary = &binder.primary_key;
    let subkey = &key.secret_subkeys[0].key;
    let mut flags = KeyFlags::default();
    flags.set_sign(binding.sign_flag);
    let created = Timestamp::from_secs(binding.made);
    let mut hashed = vec![
        sp(SubpacketData::SignatureCreationTime(created)),
        sp(SubpacketData::KeyFlags(flags)),
        sp(SubpacketData::IssuerFingerprint(primary.fingerprint())),
    ];
    if let Some(secs) = binding.valid_for {
        hashed.push(sp(SubpacketData::KeyExpirationTime(Duration::from_secs(
            secs,
        ))));
    }
    if binding.back_signature {
        let mut back = SignatureConfig::v4(
            SignatureType::KeyBinding,
            subkey.algorithm(),
            HashAlgorithm::Sha256,
        );
        back.hashed_subpackets = vec![
            sp(SubpacketData::SignatureCreationTime(created)),
            sp(SubpacketData::IssuerFingerprint(subkey.fingerprint())),
        ];
        let back = back
            .sign_primary_key_binding(
                subkey,
                subkey.public_key(),
                &Password::empty(),
                key.primary_key.public_key(),
            )
            .unwrap();
        hashed.push(sp(SubpacketData::EmbeddedSignature(Box::new(back))));
    }
    let mut config = SignatureConfig::v4(
        SignatureType::SubkeyBinding,
        primary.algorithm(),
        binding.hash,
    );
    config.hashed_subpackets = hashed;
    let bound = config
        .sign_subkey_binding(
            primary,
            primary.public_key(),
            &Password::empty(),
            subkey.public_key(),
        )
        .unwrap();
    let mut public = key.to_public_key();
    let mut signatures = vec![bound];
    signatures.extend(extra);
    public.public_subkeys = vec![SignedPublicSubKey::new(
        subkey.public_key().clone(),
        signatures,
    )];
    public
}

/// A revocation of the key's subkey (`subkey`) or primary, made at `created`.
fn revocation(
    key: &SignedSecretKey,
    subkey: bool,
    code: RevocationCode,
    created: u32,
) -> Signature {
    let primary = &key.primary_key;
    let typ = if subkey {
        SignatureType::SubkeyRevocation
    } else {
        SignatureType::KeyRevocation
    };
    let mut config = SignatureConfig::v4(typ, primary.algorithm(), HashAlgorithm::Sha256);
    config.hashed_subpackets = vec![
        sp(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
            created,
        ))),
        sp(SubpacketData::IssuerFingerprint(primary.fingerprint())),
        sp(SubpacketData::RevocationReason(code, "test".into())),
    ];
    if subkey {
        let target = key.secret_subkeys[0].key.public_key();
        config
            .sign_subkey_binding(primary, primary.public_key(), &Password::empty(), target)
            .unwrap()
    } else {
        config
            .sign_key(primary, &Password::empty(), primary.public_key())
            .unwrap()
    }
}

fn subkey_fpr(key: &SignedSecretKey) -> String {
    fingerprint(key.secret_subkeys[0].key.public_key())
}

#[test]
fn signature_by_a_signing_primary_is_good_armored_and_binary() {
    let key = make_key(1, "primary", true, false);
    let keys = trust(&key.to_public_key());
    let sig = sign_at(&key.primary_key, DATA, T0 + DAY);
    for bytes in [armored(&sig), binary(&sig)] {
        let good = verify_detached(&keys, DATA, &bytes).unwrap();
        assert_eq!(good.primary_fingerprint, keys.fingerprints()[0]);
        assert_eq!(good.signing_key_fingerprint, good.primary_fingerprint);
        assert_eq!(good.created, u64::from(T0 + DAY));
    }
}

#[test]
fn signature_by_a_bound_signing_subkey_is_good() {
    let key = make_key(2, "signer", false, true);
    let keys = trust(&key.to_public_key());
    let sig = sign_at(&key.secret_subkeys[0].key, DATA, T0 + DAY);
    for bytes in [armored(&sig), binary(&sig)] {
        let good = verify_detached(&keys, DATA, &bytes).unwrap();
        assert_eq!(
            good.primary_fingerprint,
            fingerprint(key.primary_key.public_key())
        );
        assert_eq!(good.signing_key_fingerprint, subkey_fpr(&key));
    }
}

#[test]
fn one_changed_byte_is_refused() {
    let key = make_key(2, "signer", false, true);
    let keys = trust(&key.to_public_key());
    let sig = armored(&sign_at(&key.secret_subkeys[0].key, DATA, T0 + DAY));
    let mut data = DATA.to_vec();
    data[10] ^= 1;
    let err = verify_detached(&keys, &data, &sig).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "signature by key {} does not match the data: the file was changed after signing",
            subkey_fpr(&key)
        )
    );
}

#[test]
fn signature_by_an_untrusted_key_names_the_key_and_the_keyring() {
    let trusted = make_key(2, "signer", false, true);
    let other = make_key(3, "other", true, false);
    let keys = trust(&trusted.to_public_key());
    let err = verify_detached(
        &keys,
        DATA,
        &armored(&sign_at(&other.primary_key, DATA, T0 + DAY)),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedKey { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "signature made by key {} which is not in the trusted keyring test keyring (fingerprints: {}); pass the right --keyring",
            fingerprint(other.primary_key.public_key()),
            keys.fingerprints()[0]
        )
    );
}

#[test]
fn a_trusted_failure_is_reported_over_a_foreign_signature_and_one_good_signature_suffices() {
    let trusted = make_key(2, "signer", false, true);
    let other = make_key(3, "other", true, false);
    let keys = trust(&trusted.to_public_key());
    let mut changed = DATA.to_vec();
    changed[0] ^= 1;
    let foreign = binary(&sign_at(&other.primary_key, DATA, T0 + DAY));
    let stale = binary(&sign_at(&trusted.secret_subkeys[0].key, &changed, T0 + DAY));
    let good = binary(&sign_at(&trusted.secret_subkeys[0].key, DATA, T0 + DAY));

    let err = verify_detached(&keys, DATA, &[foreign.clone(), stale].concat()).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
    let ok = verify_detached(&keys, DATA, &[foreign, good].concat()).unwrap();
    assert_eq!(ok.signing_key_fingerprint, subkey_fpr(&trusted));
}

#[test]
fn signature_without_issuer_is_tried_with_every_key() {
    let other = make_key(3, "other", true, false);
    let key = make_key(2, "signer", false, true);
    let signer = &key.secret_subkeys[0].key;
    let mut config = SignatureConfig::v4(
        SignatureType::Binary,
        signer.algorithm(),
        HashAlgorithm::Sha256,
    );
    config.hashed_subpackets = vec![sp(SubpacketData::SignatureCreationTime(
        Timestamp::from_secs(T0 + DAY),
    ))];
    let anonymous = armored(&DetachedSignature::new(
        config.sign(signer, &Password::empty(), DATA).unwrap(),
    ));
    let mut keys = trust(&other.to_public_key());
    keys.merge(trust(&key.to_public_key()));

    assert_eq!(
        verify_detached(&keys, DATA, &anonymous)
            .unwrap()
            .signing_key_fingerprint,
        subkey_fpr(&key)
    );
    let err = verify_detached(&keys, b"changed", &anonymous).unwrap_err();
    assert!(matches!(err, VerifyError::NoKeyVerifies { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("the file was changed after signing or another key signed it"),
        "{err}"
    );
}

#[test]
fn subkey_bound_by_another_primary_is_refused() {
    let key = make_key(2, "signer", false, true);
    let attacker = make_key(4, "attacker", true, false);
    let keys = trust(&rebound(&key, &attacker, GOOD_BINDING, vec![]));
    let err = verify_detached(
        &keys,
        DATA,
        &armored(&sign_at(&key.secret_subkeys[0].key, DATA, T0 + DAY)),
    )
    .unwrap_err();
    assert_refuses_key(&err, KeyRole::SigningSubkey);
    assert_eq!(
        err.to_string(),
        format!(
            "signing subkey {} is not bound to primary key {} by a valid binding signature",
            subkey_fpr(&key),
            keys.fingerprints()[0]
        )
    );
}

#[test]
fn subkey_without_any_binding_is_not_a_trusted_key() {
    let key = make_key(2, "signer", false, true);
    let mut public = key.to_public_key();
    public.public_subkeys[0].signatures.clear();
    let mut bytes = Vec::new();
    // Written packet by packet: the subkey packet without its binding.
    public
        .primary_key
        .to_writer_with_header(&mut bytes)
        .unwrap();
    public.details.to_writer(&mut bytes).unwrap();
    public.public_subkeys[0]
        .key
        .to_writer_with_header(&mut bytes)
        .unwrap();
    let keys = TrustedKeys::from_bytes(&bytes, "unbound.gpg").unwrap();
    let err = verify_detached(
        &keys,
        DATA,
        &armored(&sign_at(&key.secret_subkeys[0].key, DATA, T0 + DAY)),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedKey { .. }), "{err}");
    assert!(err.to_string().contains(&subkey_fpr(&key)), "{err}");
}

#[test]
fn subkey_bound_without_signing_flag_or_back_signature_is_refused() {
    let key = make_key(2, "signer", false, true);
    let sig = armored(&sign_at(&key.secret_subkeys[0].key, DATA, T0 + DAY));

    let no_flag = trust(&rebound(
        &key,
        &key,
        Binding {
            sign_flag: false,
            ..GOOD_BINDING
        },
        vec![],
    ));
    let err = verify_detached(&no_flag, DATA, &sig)
        .unwrap_err()
        .to_string();
    let expected = format!(
        "is not allowed to sign data (primary key {} bound it without the signing flag)",
        no_flag.fingerprints()[0]
    );
    assert!(err.ends_with(&expected), "{err}");

    let no_back = trust(&rebound(
        &key,
        &key,
        Binding {
            back_signature: false,
            ..GOOD_BINDING
        },
        vec![],
    ));
    let err = verify_detached(&no_back, DATA, &sig)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no valid back-signature"), "{err}");

    // The same rebinding with both in place passes: the checks above are what failed.
    verify_detached(
        &trust(&rebound(&key, &key, GOOD_BINDING, vec![])),
        DATA,
        &sig,
    )
    .unwrap();
}

#[test]
fn expired_subkey_is_refused_for_signatures_after_expiry_only() {
    let key = make_key(2, "signer", false, true);
    let keys = trust(&rebound(
        &key,
        &key,
        Binding {
            valid_for: Some(DAY),
            ..GOOD_BINDING
        },
        vec![],
    ));
    let signer = &key.secret_subkeys[0].key;

    verify_detached(&keys, DATA, &armored(&sign_at(signer, DATA, T0 + DAY / 2))).unwrap();
    let err =
        verify_detached(&keys, DATA, &armored(&sign_at(signer, DATA, T0 + 2 * DAY))).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "signing subkey {} expired on 2023-11-15 22:13:20 UTC, before the signature was made on 2023-11-16 22:13:20 UTC",
            subkey_fpr(&key)
        )
    );
}

#[test]
fn revoked_subkey_is_refused_unless_retired_after_the_signature() {
    let key = make_key(2, "signer", false, true);
    let sig = armored(&sign_at(&key.secret_subkeys[0].key, DATA, T0 + 2 * DAY));

    let compromised = revocation(&key, true, RevocationCode::KeyCompromised, T0 + 5 * DAY);
    let keys = trust(&rebound(&key, &key, GOOD_BINDING, vec![compromised]));
    let err = verify_detached(&keys, DATA, &sig).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "signing subkey {} was revoked on 2023-11-19",
            subkey_fpr(&key)
        )),
        "{err}"
    );
    assert!(err.contains("KeyCompromised"), "{err}");

    let retired_later = revocation(&key, true, RevocationCode::KeyRetired, T0 + 5 * DAY);
    verify_detached(
        &trust(&rebound(&key, &key, GOOD_BINDING, vec![retired_later])),
        DATA,
        &sig,
    )
    .unwrap();

    let retired_before = revocation(&key, true, RevocationCode::KeyRetired, T0 + DAY);
    let err = verify_detached(
        &trust(&rebound(&key, &key, GOOD_BINDING, vec![retired_before])),
        DATA,
        &sig,
    )
    .unwrap_err();
    assert_refuses_key(&err, KeyRole::SigningSubkey);
}

#[test]
fn revoked_primary_voids_its_subkeys() {
    let key = make_key(2, "signer", false, true);
    let mut public = key.to_public_key();
    public.details.revocation_signatures.push(revocation(
        &key,
        false,
        RevocationCode::NoReason,
        T0 + 5 * DAY,
    ));
    let err = verify_detached(
        &trust(&public),
        DATA,
        &armored(&sign_at(&key.secret_subkeys[0].key, DATA, T0 + DAY)),
    )
    .unwrap_err();
    assert_refuses_key(&err, KeyRole::PrimaryKey);
    assert!(err.to_string().contains("was revoked on"), "{err}");
}

#[test]
fn expired_primary_is_refused() {
    let key = make_key(1, "primary", true, false);
    let primary = &key.primary_key;
    let expires = sp(SubpacketData::KeyExpirationTime(Duration::from_secs(
        3 * DAY,
    )));
    let public = self_signed_with_subpackets(&key, HashAlgorithm::Sha256, T0 + 100, vec![expires]);
    let keys = trust(&public);
    verify_detached(&keys, DATA, &armored(&sign_at(primary, DATA, T0 + DAY))).unwrap();
    let err = verify_detached(&keys, DATA, &armored(&sign_at(primary, DATA, T0 + 4 * DAY)))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "primary key {} expired on 2023-11-17 22:13:20 UTC",
            keys.fingerprints()[0]
        )),
        "{err}"
    );
}

#[test]
fn certify_only_primary_may_not_sign_data() {
    let key = make_key(2, "signer", false, true);
    let err = verify_detached(
        &trust(&key.to_public_key()),
        DATA,
        &armored(&sign_at(&key.primary_key, DATA, T0 + DAY)),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("is not allowed to sign data (its self-signature grants no signing flag)"),
        "{err}"
    );
}

#[test]
fn signature_times_are_checked() {
    let key = make_key(1, "primary", true, false);
    let keys = trust(&key.to_public_key());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;

    let err = verify_detached(
        &keys,
        DATA,
        &armored(&sign_at(&key.primary_key, DATA, now + DAY)),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("which is in the future") && err.contains("check this machine's clock"),
        "{err}"
    );
    // A clock a minute behind the signer's is tolerated.
    verify_detached(
        &keys,
        DATA,
        &armored(&sign_at(&key.primary_key, DATA, now + 60)),
    )
    .unwrap();

    let err = verify_detached(
        &keys,
        DATA,
        &armored(&sign_at(&key.primary_key, DATA, T0 - DAY)),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("after the signature dated 2023-11-13 22:13:20 UTC"),
        "{err}"
    );
}

#[test]
fn keyrings_concatenate_and_merge() {
    let a = make_key(1, "primary", true, false);
    let b = make_key(2, "signer", false, true);
    let armored_a = a
        .to_public_key()
        .to_armored_bytes(ArmorOptions::default())
        .unwrap();
    let armored_b = b
        .to_public_key()
        .to_armored_bytes(ArmorOptions::default())
        .unwrap();
    let both = TrustedKeys::from_bytes(
        &[armored_a.clone(), b"\n".to_vec(), armored_b.clone()].concat(),
        "both.asc",
    )
    .unwrap();
    let expected = vec![
        fingerprint(a.primary_key.public_key()),
        fingerprint(b.primary_key.public_key()),
    ];
    assert_eq!(both.fingerprints(), expected);

    let binary = [
        a.to_public_key().to_bytes().unwrap(),
        b.to_public_key().to_bytes().unwrap(),
    ]
    .concat();
    assert_eq!(
        TrustedKeys::from_bytes(&binary, "both.gpg")
            .unwrap()
            .fingerprints(),
        expected
    );

    let mut merged = TrustedKeys::from_bytes(&armored_a, "a.asc").unwrap();
    merged.merge(TrustedKeys::from_bytes(&armored_b, "b.asc").unwrap());
    merged.merge(TrustedKeys::from_bytes(&armored_a, "a-again.asc").unwrap());
    assert_eq!(merged.fingerprints(), expected);
    assert_eq!(merged.origin(), "a.asc + b.asc + a-again.asc");
    verify_detached(
        &merged,
        DATA,
        &armored(&sign_at(&b.secret_subkeys[0].key, DATA, T0 + DAY)),
    )
    .unwrap();
}

#[test]
fn garbage_signatures_and_keyrings_are_reported() {
    let keys = trust(&make_key(1, "primary", true, false).to_public_key());
    for garbage in [
        &b"not a signature at all"[..],
        b"",
        b"-----BEGIN PGP SIGNATURE-----\n\n!!!!\n-----END PGP SIGNATURE-----\n",
    ] {
        let err = verify_detached(&keys, DATA, garbage).unwrap_err();
        assert!(matches!(err, VerifyError::MalformedSignature(_)), "{err}");
        assert!(
            err.to_string()
                .starts_with("the signature is not a usable OpenPGP detached signature"),
            "{err}"
        );
    }
    let err = verify_detached(&keys, DATA, b"-----BEGIN PGP SIGNATURE-----\n\nxx\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no -----END PGP"), "{err}");

    let err = TrustedKeys::from_bytes(
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n-----END PGP PUBLIC KEY BLOCK-----\n",
        "k.asc",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("k.asc: no OpenPGP public key could be read"),
        "{err}"
    );
    let err = TrustedKeys::from_bytes(b"hello", "k.txt")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("neither binary OpenPGP data nor ASCII armor"),
        "{err}"
    );
}

#[test]
fn built_in_and_shipped_ubuntu_keys_have_the_published_fingerprints() {
    assert_eq!(
        ubuntu_cdimage_keys().fingerprints(),
        ["843938DF228D22F7B3742BC0D94AA3F0EFE21092"]
    );
    let archive_2018 =
        TrustedKeys::from_bytes(include_bytes!("../../keys/ubuntu-archive-2018.asc"), "2018")
            .unwrap();
    assert_eq!(
        archive_2018.fingerprints(),
        ["F6ECB3762474EDA9D21B7022871920D1991BC93C"]
    );
    let archive_2012 =
        TrustedKeys::from_bytes(include_bytes!("../../keys/ubuntu-archive-2012.asc"), "2012")
            .unwrap();
    assert_eq!(
        archive_2012.fingerprints(),
        ["790BC7277767219C42C86F933B4FE6ACC0B21F32"]
    );
    // Their self-signatures verify and allow signing, or no Ubuntu signature could pass.
    for keys in [ubuntu_cdimage_keys(), archive_2018, archive_2012] {
        let key = &keys.keys[0];
        check_primary(key, &keys.fingerprints()[0], u64::from(T0), true).unwrap();
    }
}

/// Asserts that `err` refuses a key of `role` (primary key or signing subkey).
fn assert_refuses_key(err: &VerifyError, role: KeyRole) {
    assert!(
        matches!(err, VerifyError::KeyNotValid { role: r, .. } if *r == role),
        "{err}"
    );
}

/// GnuPG is the signer in the real world; its keys (back-signature in the
/// binding, issuer subpackets) must pass the same checks.
#[test]
fn gnupg_made_subkey_signature_is_good() {
    let gpg = Gnupg::new();
    gpg.generate_key("gpg signer <gpg@test.invalid>", "cert");
    let primary = gpg.fingerprints("gpg@test.invalid")[0].clone();
    gpg.run(&["--quick-add-key", &primary, "ed25519", "sign", "never"]);
    let sub_fpr = gpg.fingerprints("gpg@test.invalid")[1].clone();
    let data_path = gpg.home().join("SHA256SUMS");
    std::fs::write(&data_path, DATA).unwrap();
    let sig = gpg.run(&[
        "--armor",
        "--local-user",
        &format!("{sub_fpr}!"),
        "--detach-sign",
        "-o",
        "-",
        data_path.to_str().unwrap(),
    ]);
    let keys =
        TrustedKeys::from_bytes(&gpg.run(&["--export", "gpg@test.invalid"]), "gpg export").unwrap();
    let good = verify_detached(&keys, DATA, &sig).unwrap();
    assert_eq!(
        (
            good.primary_fingerprint.as_str(),
            good.signing_key_fingerprint.as_str()
        ),
        (primary.as_str(), sub_fpr.as_str())
    );
}

#[test]
fn utc_formats_known_instants() {
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(u64::from(T0)), "2023-11-14 22:13:20 UTC");
    assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
}

const HEX_A: &str = "a9efd1a8fc9fc1e58cb4e1e2b51bcaee8072831c22ea1c1cdf8cdc4c02df608e";

#[test]
fn sha256sums_binary_and_text_lines_parse() {
    let text = format!(
        "{HEX_A} *ubuntu-24.04.3-live-server-amd64.iso\n\n{}  netboot.tar.gz\r\n",
        "00".repeat(31) + "01"
    );
    let sums = Sha256Sums::parse(&text).unwrap();
    assert_eq!(
        sums.names().collect::<Vec<_>>(),
        ["ubuntu-24.04.3-live-server-amd64.iso", "netboot.tar.gz"]
    );
    assert_eq!(
        sha256_hex(&sums.get("ubuntu-24.04.3-live-server-amd64.iso").unwrap()),
        HEX_A
    );
    assert_eq!(sums.get("netboot.tar.gz").unwrap()[31], 1);
    assert_eq!(sums.get("other.iso"), None);
    // The same entry twice is harmless.
    assert_eq!(
        Sha256Sums::parse(&format!("{HEX_A} *a.iso\n{HEX_A} *a.iso\n"))
            .unwrap()
            .names()
            .count(),
        1
    );
}

#[test]
fn sha256sums_bad_lines_are_located() {
    let err = Sha256Sums::parse(&format!("{HEX_A} *a.iso\nxyz *b.iso\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SHA256SUMS line 2: the hash is not 64 hexadecimal digits: \"xyz *b.iso\""
    );
    for (text, problem) in [
        (format!("{HEX_A}\n"), "line 1: expected `<sha256> *<name>`"),
        (
            format!("{HEX_A} a.iso\n"),
            "line 1: expected ` *` or two spaces",
        ),
        (format!("\n{HEX_A} *\n"), "line 2: no file name"),
        (format!("{}0 *a.iso\n", HEX_A), "line 1: the hash is not 64"),
    ] {
        let err = Sha256Sums::parse(&text).unwrap_err().to_string();
        assert!(err.contains(problem), "{text:?}: {err}");
    }
    let dup = format!("{HEX_A} *a.iso\n{} *a.iso\n", "00".repeat(32));
    let err = Sha256Sums::parse(&dup).unwrap_err();
    assert!(matches!(err, VerifyError::SumsDuplicate { .. }), "{err}");
}

/// Reads `r` to its end in reads of `size` bytes: what came through, and
/// the digest and count it reports.
fn read_through<R: Read>(mut r: HashingReader<R>, size: usize) -> (Vec<u8>, ([u8; 32], u64)) {
    let mut sink = Vec::new();
    let mut buf = vec![0u8; size];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sink.extend_from_slice(&buf[..n]);
    }
    (sink, r.finish())
}

#[test]
fn hashing_reader_matches_sha256_of_the_whole_buffer() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    // Odd-sized reads, so chunking cannot hide a bug.
    let (sink, (digest, n)) = read_through(HashingReader::new(&data[..]), 777);
    assert_eq!(n, data.len() as u64);
    assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&data)));
    assert_eq!(sink, data);
    assert_eq!(
        sha256_hex(&HashingReader::new(&b""[..]).finish().0),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn hashing_in_the_background_matches_sha256_across_reused_chunks() {
    // 21 MiB and a bit: more than the worker's 4 chunks of 4 MiB, so
    // chunks come back and are refilled, and the last one is partial.
    let len = 21 * (1 << 20) + 12_345;
    let data: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (sink, (digest, n)) = read_through(HashingReader::in_background(&data[..]), 1_000_003);
    assert_eq!(n, len as u64);
    assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&data)));
    assert_eq!(sink, data);
    // One changed byte in the middle of a reused chunk changes the digest.
    let mut changed = data.clone();
    changed[17 * (1 << 20) + 5] ^= 1;
    let mut r = HashingReader::in_background(&changed[..]);
    std::io::copy(&mut r, &mut std::io::sink()).unwrap();
    assert_ne!(r.finish().0, digest);
    assert_eq!(
        sha256_hex(&HashingReader::in_background(&b""[..]).finish().0),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn hash_mismatch_says_which_file_and_both_hashes() {
    let err = check_hash("x.iso", [1; 32], [2; 32])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "SHA-256 of x.iso is {} but SHA256SUMS says {}: the file is corrupt or was tampered with; download it again",
            "02".repeat(32),
            "01".repeat(32)
        )
    );
    check_hash("x.iso", [3; 32], [3; 32]).unwrap();
}

/// 2022-01-01 00:00:00 UTC: before the SHA-1 cutoff for self-signatures.
const T2022: u32 = 1_640_995_200;

/// An RSA key made at 2022-01-01 whose primary signs, with one Ed25519
/// signing subkey. Only RSA signs with MD5, SHA-1 or RIPEMD-160 (EdDSA and
/// ECDSA need longer hashes), so it is the key the weak-hash cases need.
fn rsa_key(bits: u32, seed: u64) -> SignedSecretKey {
    SecretKeyParamsBuilder::default()
        .key_type(KeyType::Rsa(bits))
        .can_certify(true)
        .can_sign(true)
        .created_at(Timestamp::from_secs(T2022))
        .primary_user_id(format!("rsa{bits} <rsa{bits}@test.invalid>"))
        .subkey(
            SubkeyParamsBuilder::default()
                .key_type(KeyType::Ed25519Legacy)
                .can_sign(true)
                .created_at(Timestamp::from_secs(T2022))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
        .generate(rng(seed))
        .unwrap()
}

/// RSA-2048 keys take seconds to make in a debug build: one for all tests.
fn rsa2048() -> &'static SignedSecretKey {
    static KEY: std::sync::OnceLock<SignedSecretKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| rsa_key(2048, 20))
}

/// The key's public half with its one user id certified only by a
/// self-signature with `hash`, made at `made`.
fn self_signed_with(key: &SignedSecretKey, hash: HashAlgorithm, made: u32) -> SignedPublicKey {
    self_signed_with_subpackets(key, hash, made, vec![])
}

/// As [`self_signed_with`], with `extra` hashed subpackets in the self-signature.
fn self_signed_with_subpackets(
    key: &SignedSecretKey,
    hash: HashAlgorithm,
    made: u32,
    extra: Vec<Subpacket>,
) -> SignedPublicKey {
    let primary = &key.primary_key;
    let mut flags = KeyFlags::default();
    flags.set_certify(true);
    flags.set_sign(true);
    let mut config = SignatureConfig::v4(SignatureType::CertPositive, primary.algorithm(), hash);
    config.hashed_subpackets = vec![
        sp(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
            made,
        ))),
        sp(SubpacketData::IssuerFingerprint(primary.fingerprint())),
        sp(SubpacketData::KeyFlags(flags)),
    ];
    config.hashed_subpackets.extend(extra);
    let mut public = key.to_public_key();
    let user = &mut public.details.users[0];
    let self_sig = config
        .sign_certification(
            primary,
            primary.public_key(),
            &Password::empty(),
            Tag::UserId,
            &user.id,
        )
        .unwrap();
    user.signatures = vec![self_sig];
    public
}

#[test]
fn data_signatures_with_md5_sha1_ripemd160_or_sha224_are_refused_naming_the_algorithm() {
    let key = rsa2048();
    let keys = trust(&key.to_public_key());
    let fpr = keys.fingerprints()[0].clone();
    for (hash, name) in [
        (HashAlgorithm::Md5, "MD5"),
        (HashAlgorithm::Sha1, "SHA-1"),
        (HashAlgorithm::Ripemd160, "RIPEMD-160"),
        (HashAlgorithm::Sha224, "SHA-224"),
    ] {
        let sig = armored(&sign_with(&key.primary_key, hash, DATA, T0 + DAY));
        let err = verify_detached(&keys, DATA, &sig).unwrap_err();
        assert!(matches!(err, VerifyError::WeakHash { .. }), "{name}: {err}");
        assert_eq!(
            err.to_string(),
            format!("signature by key {fpr} uses {name}, which is too weak for data signatures; ask the publisher for a SHA-256 (or stronger) signature")
        );
    }
}

#[test]
fn data_signatures_with_sha256_sha384_sha512_or_sha3_are_accepted() {
    let key = rsa2048();
    let keys = trust(&key.to_public_key());
    for hash in [
        HashAlgorithm::Sha256,
        HashAlgorithm::Sha384,
        HashAlgorithm::Sha512,
        HashAlgorithm::Sha3_256,
        HashAlgorithm::Sha3_512,
    ] {
        let sig = armored(&sign_with(&key.primary_key, hash, DATA, T0 + DAY));
        let good = verify_detached(&keys, DATA, &sig).unwrap_or_else(|e| panic!("{hash:?}: {e}"));
        assert_eq!(good.signing_key_fingerprint, keys.fingerprints()[0]);
        // The policy is checked on a signature that is otherwise good.
        let err = verify_detached(&keys, b"changed", &sig).unwrap_err();
        assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
    }
    // The Ed25519 subkey, bound by the RSA primary, signs too.
    let sub = verify_detached(
        &keys,
        DATA,
        &armored(&sign_with(
            &key.secret_subkeys[0].key,
            HashAlgorithm::Sha512,
            DATA,
            T0 + DAY,
        )),
    )
    .unwrap();
    assert_eq!(sub.signing_key_fingerprint, subkey_fpr(key));
}

/// An RSA-1024 primary key that may sign (by its direct-key
/// self-signature), with `subkey` bound to it. pgp's key builder refuses
/// to make keys this small, so it is put together packet by packet.
fn rsa1024_key(subkey: &SignedSecretKey) -> (packet::SecretKey, SignedPublicKey) {
    use pgp::crypto::public_key::PublicKeyAlgorithm;
    use pgp::types::{KeyVersion, PlainSecretParams, PublicParams, SecretParams};
    let private = rsa::RsaPrivateKey::new(&mut rng(21), 1024).unwrap();
    let secret = pgp::crypto::rsa::SecretKey::from(private);
    let public = packet::PublicKey::from_inner(
        packet::PubKeyInner::new(
            KeyVersion::V4,
            PublicKeyAlgorithm::RSA,
            Timestamp::from_secs(T2022),
            None,
            PublicParams::RSA((&secret).into()),
        )
        .unwrap(),
    )
    .unwrap();
    let primary = packet::SecretKey::new(
        public.clone(),
        SecretParams::Plain(PlainSecretParams::RSA(secret)),
    )
    .unwrap();
    let mut flags = KeyFlags::default();
    flags.set_certify(true);
    flags.set_sign(true);
    let mut config = SignatureConfig::v4(
        SignatureType::Key,
        PublicKeyAlgorithm::RSA,
        HashAlgorithm::Sha256,
    );
    config.hashed_subpackets = vec![
        sp(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
            T2022,
        ))),
        sp(SubpacketData::IssuerFingerprint(public.fingerprint())),
        sp(SubpacketData::KeyFlags(flags)),
    ];
    let direct = config
        .sign_key(&primary, &Password::empty(), &public)
        .unwrap();
    // The subkey bound by the small primary: `rebound` with it as binder.
    let sub = &subkey.secret_subkeys[0].key;
    let mut flags = KeyFlags::default();
    flags.set_sign(true);
    let mut back = SignatureConfig::v4(
        SignatureType::KeyBinding,
        sub.algorithm(),
        HashAlgorithm::Sha256,
    );
    back.hashed_subpackets = vec![
        sp(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
            T2022,
        ))),
        sp(SubpacketData::IssuerFingerprint(sub.fingerprint())),
    ];
    let back = back
        .sign_primary_key_binding(sub, sub.public_key(), &Password::empty(), &public)
        .unwrap();
    let mut binding = SignatureConfig::v4(
        SignatureType::SubkeyBinding,
        PublicKeyAlgorithm::RSA,
        HashAlgorithm::Sha256,
    );
    binding.hashed_subpackets = vec![
        sp(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
            T2022,
        ))),
        sp(SubpacketData::KeyFlags(flags)),
        sp(SubpacketData::IssuerFingerprint(public.fingerprint())),
        sp(SubpacketData::EmbeddedSignature(Box::new(back))),
    ];
    let binding = binding
        .sign_subkey_binding(&primary, &public, &Password::empty(), sub.public_key())
        .unwrap();
    let signed = SignedPublicKey::new(
        public,
        pgp::composed::SignedKeyDetails::new(vec![], vec![direct], vec![], vec![]),
        vec![SignedPublicSubKey::new(
            sub.public_key().clone(),
            vec![binding],
        )],
    );
    (primary, signed)
}

#[test]
fn rsa_keys_under_2048_bits_and_dsa_keys_may_not_sign_data() {
    let strong_subkey = make_key(2, "signer", false, true);
    let (small, public) = rsa1024_key(&strong_subkey);
    let keys = trust(&public);
    let fpr = keys.fingerprints()[0].clone();
    let err = verify_detached(&keys, DATA, &armored(&sign_at(&small, DATA, T0 + DAY))).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::WeakKey {
                role: KeyRole::PrimaryKey,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "primary key {fpr} is an RSA key of 1024 bits; signing keys must be RSA of at least 2048 bits, ECDSA on NIST P-256, P-384 or P-521, or Ed25519/Ed448; ask the publisher for a signature by a stronger key"
        )
    );
    // A strong subkey does not help when the primary that bound it is weak.
    let err = verify_detached(
        &keys,
        DATA,
        &armored(&sign_at(
            &strong_subkey.secret_subkeys[0].key,
            DATA,
            T0 + DAY,
        )),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!(
            "primary key {fpr} (which vouches for signing subkey {}) is an RSA key of 1024 bits",
            subkey_fpr(&strong_subkey)
        )),
        "{err}"
    );

    let dsa = SecretKeyParamsBuilder::default()
        .key_type(KeyType::Dsa(pgp::composed::DsaKeySize::B1024))
        .can_certify(true)
        .can_sign(true)
        .created_at(Timestamp::from_secs(T0))
        .primary_user_id("dsa <dsa@test.invalid>".into())
        .build()
        .unwrap()
        .generate(rng(22))
        .unwrap();
    let keys = trust(&dsa.to_public_key());
    let err = verify_detached(
        &keys,
        DATA,
        &armored(&sign_at(&dsa.primary_key, DATA, T0 + DAY)),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::WeakKey { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "primary key {} is a DSA key, and DSA is refused at any size;",
            keys.fingerprints()[0]
        )),
        "{err}"
    );
}

#[test]
fn a_sha1_self_signature_counts_only_if_made_before_the_2023_cutoff() {
    let key = rsa2048();
    let sig = armored(&sign_at(&key.primary_key, DATA, T0 + DAY));
    // Made in 2022, like the Ubuntu archive key's of 2012: accepted.
    verify_detached(
        &trust(&self_signed_with(key, HashAlgorithm::Sha1, T2022 + DAY)),
        DATA,
        &sig,
    )
    .unwrap();
    // Made after 2023-02-01: ignored, so the key has no self-signature.
    let keys = trust(&self_signed_with(key, HashAlgorithm::Sha1, T0));
    let err = verify_detached(&keys, DATA, &sig).unwrap_err();
    assert_refuses_key(&err, KeyRole::PrimaryKey);
    assert_eq!(
        err.to_string(),
        format!(
            "primary key {} has no self-signature that the signature policy accepts: its newest one uses SHA-1 and was made on 2023-11-14 22:13:20 UTC; SHA-1 is accepted only for self-signatures made before 2023-02-01 00:00:00 UTC; its owner must certify it again with SHA-256 or stronger (see docs/verification.md)",
            keys.fingerprints()[0]
        )
    );
    // MD5 never counts, however old.
    let err = verify_detached(
        &trust(&self_signed_with(key, HashAlgorithm::Md5, T2022 + DAY)),
        DATA,
        &sig,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("its newest one uses MD5, which is never accepted"),
        "{err}"
    );
}

#[test]
fn a_sha1_subkey_binding_made_after_the_cutoff_is_refused() {
    let key = rsa2048();
    let sig = armored(&sign_at(&key.secret_subkeys[0].key, DATA, T0 + DAY));
    let sha1_binding = |made| Binding {
        hash: HashAlgorithm::Sha1,
        made,
        ..GOOD_BINDING
    };
    verify_detached(
        &trust(&rebound(key, key, sha1_binding(T2022 + DAY), vec![])),
        DATA,
        &sig,
    )
    .unwrap();
    let keys = trust(&rebound(key, key, sha1_binding(T0 + 60), vec![]));
    let err = verify_detached(&keys, DATA, &sig).unwrap_err();
    assert_refuses_key(&err, KeyRole::SigningSubkey);
    assert_eq!(
        err.to_string(),
        format!(
            "signing subkey {} has no binding signature that the signature policy accepts: the newest one by primary key {} uses SHA-1 and was made on 2023-11-14 22:14:20 UTC; SHA-1 is accepted only for self-signatures made before 2023-02-01 00:00:00 UTC; the key's owner must bind it again with SHA-256 or stronger (see docs/verification.md)",
            subkey_fpr(key),
            keys.fingerprints()[0]
        )
    );
}

#[test]
fn the_policy_cutoffs_are_the_published_dates() {
    assert_eq!(
        utc(policy::SHA1_SELF_SIGNATURE_CUTOFF),
        "2023-02-01 00:00:00 UTC"
    );
    assert_eq!(
        utc(policy::RIPEMD160_SELF_SIGNATURE_CUTOFF),
        "2013-02-01 00:00:00 UTC"
    );
}

const UBUNTU_SUMS: &[u8] = include_bytes!("../../tests/vectors/ubuntu-20.04.1/SHA256SUMS");
const UBUNTU_SIG: &[u8] = include_bytes!("../../tests/vectors/ubuntu-20.04.1/SHA256SUMS.gpg");

#[test]
fn the_real_ubuntu_20_04_1_list_verifies_with_the_built_in_key() {
    let good = verify_detached(&ubuntu_cdimage_keys(), UBUNTU_SUMS, UBUNTU_SIG).unwrap();
    assert_eq!(
        good.primary_fingerprint,
        "843938DF228D22F7B3742BC0D94AA3F0EFE21092"
    );
    assert_eq!(good.signing_key_fingerprint, good.primary_fingerprint);
    assert_eq!(utc(good.created), "2020-08-06 15:30:35 UTC");
    let sums = Sha256Sums::parse(std::str::from_utf8(UBUNTU_SUMS).unwrap()).unwrap();
    assert_eq!(
        sha256_hex(&sums.get("ubuntu-20.04.1-live-server-amd64.iso").unwrap()),
        "443511f6bf12402c12503733059269a2e10dec602916c0a75263e5d990f6bb93"
    );
}

#[test]
fn every_changed_byte_of_the_ubuntu_list_fails() {
    let keys = ubuntu_cdimage_keys();
    for at in 0..UBUNTU_SUMS.len() {
        let mut sums = UBUNTU_SUMS.to_vec();
        sums[at] ^= 1;
        let err = verify_detached(&keys, &sums, UBUNTU_SIG).unwrap_err();
        assert!(
            matches!(err, VerifyError::BadSignature { .. }),
            "byte {at}: {err}"
        );
    }
}

/// Every byte of the signature's base64 body changed in turn: the signed
/// parts fail to verify, and so does the issuer key ID, which OpenPGP
/// leaves outside the signed part but which must match the signed issuer
/// fingerprint.
#[test]
fn changed_bytes_of_the_ubuntu_signature_fail() {
    let keys = ubuntu_cdimage_keys();
    let text = std::str::from_utf8(UBUNTU_SIG).unwrap();
    // The base64 body: from after the blank line to the checksum line.
    let body_start = text.find("\n\n").unwrap() + 2;
    let body_end = text.find("\n=").unwrap();
    let mut failed = Vec::new();
    for at in body_start..body_end {
        if UBUNTU_SIG[at] == b'\n' {
            continue;
        }
        let mut sig = UBUNTU_SIG.to_vec();
        sig[at] ^= 1;
        if verify_detached(&keys, UBUNTU_SUMS, &sig).is_ok() {
            failed.push(at);
        }
    }
    assert_eq!(
        failed,
        Vec::<usize>::new(),
        "changed bytes at these offsets still verify"
    );
}

#[test]
fn unsigned_subpackets_other_than_the_issuer_are_refused() {
    let key = make_key(1, "primary", true, false);
    let keys = trust(&key.to_public_key());
    let signer = &key.primary_key;
    let signed = |unhashed: Vec<Subpacket>| {
        let mut config = SignatureConfig::v4(
            SignatureType::Binary,
            signer.algorithm(),
            HashAlgorithm::Sha256,
        );
        config.hashed_subpackets = vec![
            sp(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
                T0 + DAY,
            ))),
            sp(SubpacketData::IssuerFingerprint(signer.fingerprint())),
        ];
        config.unhashed_subpackets = unhashed;
        armored(&DetachedSignature::new(
            config.sign(signer, &Password::empty(), DATA).unwrap(),
        ))
    };
    // The issuer's own key ID, unsigned, is what GnuPG writes: fine.
    verify_detached(
        &keys,
        DATA,
        &signed(vec![sp(SubpacketData::IssuerKeyId(signer.legacy_key_id()))]),
    )
    .unwrap();

    let other = make_key(3, "other", true, false);
    let err = verify_detached(
        &keys,
        DATA,
        &signed(vec![sp(SubpacketData::IssuerKeyId(
            other.primary_key.legacy_key_id(),
        ))]),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::MalformedSignature(_)), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "its issuer key ID {} does not belong to its issuer fingerprint {}",
            hex::encode_upper(other.primary_key.legacy_key_id().as_ref()),
            keys.fingerprints()[0]
        )),
        "{err}"
    );

    let err = verify_detached(
        &keys,
        DATA,
        &signed(vec![sp(SubpacketData::SignersUserID(
            "someone else".into(),
        ))]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("its unsigned area holds a subpacket (SignersUserID")
            && err.contains("other than the issuer's key ID or fingerprint"),
        "{err}"
    );
}

const RELEASE_TEXT: &str = "Origin: Ubuntu\nSuite: noble\n- a line that starts with a dash\nSHA256:\n 0123 12 main/binary-amd64/Packages.xz\n";

fn clearsigned(key: &impl SigningKey, text: &str) -> Vec<u8> {
    CleartextSignedMessage::sign(rng(9), text, key, &Password::empty())
        .unwrap()
        .to_armored_bytes(ArmorOptions::default())
        .unwrap()
}

#[test]
fn clearsigned_text_is_returned_only_when_the_signature_is_good() {
    let key = make_key(2, "archive", false, true);
    let keys = trust(&key.to_public_key());
    let message = clearsigned(&key.secret_subkeys[0].key, RELEASE_TEXT);
    assert!(
        String::from_utf8_lossy(&message).contains("\n- - a line that starts with a dash\n"),
        "dash-escaped on the wire"
    );
    let good = verify_cleartext(&keys, &message).unwrap();
    assert_eq!(good.text.trim_end(), RELEASE_TEXT.trim_end());
    assert_eq!(good.signature.signing_key_fingerprint, subkey_fpr(&key));

    // One changed byte of the signed text.
    let text =
        String::from_utf8(message.clone())
            .unwrap()
            .replacen("Suite: noble", "Suite: nobld", 1);
    let err = verify_cleartext(&keys, text.as_bytes()).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
}

#[test]
fn clearsigned_text_by_another_key_names_that_key() {
    let trusted = make_key(2, "archive", false, true);
    let other = make_key(3, "rogue", true, false);
    let keys = trust(&trusted.to_public_key());
    let err = verify_cleartext(&keys, &clearsigned(&other.primary_key, RELEASE_TEXT)).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedKey { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&fingerprint(other.primary_key.public_key())),
        "{err}"
    );
}

#[test]
fn unsigned_text_around_a_clearsigned_message_is_refused() {
    let key = make_key(2, "archive", true, false);
    let keys = trust(&key.to_public_key());
    let message = clearsigned(&key.primary_key, RELEASE_TEXT);
    let before = [b"Suite: evil\n".as_slice(), &message].concat();
    let err = verify_cleartext(&keys, &before).unwrap_err();
    assert!(err.to_string().contains("not a clearsigned file"), "{err}");
    let after = [message.as_slice(), b"\nSuite: evil\n"].concat();
    let err = verify_cleartext(&keys, &after).unwrap_err();
    assert!(matches!(err, VerifyError::MalformedSignature(_)), "{err}");
    let err = verify_cleartext(&keys, RELEASE_TEXT.as_bytes()).unwrap_err();
    assert!(matches!(err, VerifyError::MalformedSignature(_)), "{err}");
}

#[test]
fn gnupg_clearsigned_file_verifies() {
    let gpg = Gnupg::new();
    gpg.generate_key("archive <a@test.invalid>", "sign");
    let path = gpg.home().join("Release");
    std::fs::write(&path, format!("{RELEASE_TEXT}trailing blanks   \n")).unwrap();
    let message = gpg.run(&[
        "--digest-algo",
        "SHA512",
        "--clearsign",
        "-o",
        "-",
        path.to_str().unwrap(),
    ]);
    let keys = TrustedKeys::from_bytes(
        &gpg.run(&["--export", "--armor", "a@test.invalid"]),
        "gpg export",
    )
    .unwrap();
    let good = verify_cleartext(&keys, &message).unwrap();
    assert_eq!(good.text, format!("{RELEASE_TEXT}trailing blanks"));
}
