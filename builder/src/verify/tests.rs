use super::*;

const DATA: &[u8] = include_bytes!("testdata/data.txt");
const SIGNER: &[u8] = include_bytes!("testdata/signer.asc");
const PRIMARY: &[u8] = include_bytes!("testdata/primary.asc");
const BOTH_BINARY: &[u8] = include_bytes!("testdata/both.gpg");
const SIGNER_UNBOUND: &[u8] = include_bytes!("testdata/signer-unbound.gpg");
const SIG_BY_SUBKEY: &[u8] = include_bytes!("testdata/data.txt.subkey.asc");
const SIG_BY_PRIMARY_BINARY: &[u8] = include_bytes!("testdata/data.txt.primary.sig");
const SIG_BY_OTHER: &[u8] = include_bytes!("testdata/data.txt.other.asc");

fn keys(bytes: &[u8]) -> TrustedKeys {
    TrustedKeys::from_bytes(bytes, "test keyring").unwrap()
}

#[test]
fn signature_by_a_bound_signing_subkey_is_good() {
    let k = keys(SIGNER);
    let good = verify_detached(&k, DATA, SIG_BY_SUBKEY).unwrap();
    assert_eq!(good.primary_fingerprint, k.fingerprints()[0]);
    assert_ne!(good.signing_key_fingerprint, good.primary_fingerprint);
}

#[test]
fn binary_signature_by_a_primary_key_is_good() {
    let k = keys(PRIMARY);
    let good = verify_detached(&k, DATA, SIG_BY_PRIMARY_BINARY).unwrap();
    assert_eq!(good.signing_key_fingerprint, good.primary_fingerprint);
}

#[test]
fn binary_keyring_with_several_keys_is_read() {
    let k = keys(BOTH_BINARY);
    assert_eq!(k.fingerprints().len(), 2);
    verify_detached(&k, DATA, SIG_BY_SUBKEY).unwrap();
    verify_detached(&k, DATA, SIG_BY_PRIMARY_BINARY).unwrap();
}

#[test]
fn changed_data_is_refused() {
    let mut data = DATA.to_vec();
    data[3] ^= 1;
    let err = verify_detached(&keys(SIGNER), &data, SIG_BY_SUBKEY).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
    assert!(err.to_string().contains("changed after it was signed"), "{err}");
}

#[test]
fn signature_by_an_untrusted_key_names_the_key() {
    let err = verify_detached(&keys(SIGNER), DATA, SIG_BY_OTHER).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, VerifyError::UntrustedKey { .. }), "{text}");
    assert!(text.contains("not in the trusted keyring test keyring"), "{text}");
    assert!(text.contains(&keys(SIGNER).fingerprints()[0]), "{text}");
}

#[test]
fn subkey_without_a_binding_signature_is_refused() {
    // Whether the parser drops the unbound subkey or keeps it, it must not sign.
    let good = verify_detached(&keys(SIGNER), DATA, SIG_BY_SUBKEY).unwrap();
    let err = verify_detached(&keys(SIGNER_UNBOUND), DATA, SIG_BY_SUBKEY).unwrap_err();
    assert!(matches!(err, VerifyError::KeyNotValid { .. } | VerifyError::UntrustedKey { .. }), "{err}");
    assert!(err.to_string().contains(&good.signing_key_fingerprint), "{err}");
}

#[test]
fn garbage_signature_and_keyring_are_reported() {
    let err = verify_detached(&keys(SIGNER), DATA, b"not a signature at all").unwrap_err();
    assert!(matches!(err, VerifyError::MalformedSignature(_)), "{err}");
    let err = TrustedKeys::from_bytes(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n", "k.asc").unwrap_err();
    assert!(err.to_string().starts_with("k.asc: no OpenPGP public key could be read"), "{err}");
}

#[test]
fn built_in_and_shipped_ubuntu_keys_have_the_published_fingerprints() {
    assert_eq!(ubuntu_cdimage_keys().fingerprints(), ["843938DF228D22F7B3742BC0D94AA3F0EFE21092"]);
    let archive_2018 = keys(include_bytes!("../../keys/ubuntu-archive-2018.asc"));
    assert_eq!(archive_2018.fingerprints(), ["F6ECB3762474EDA9D21B7022871920D1991BC93C"]);
    let archive_2012 = keys(include_bytes!("../../keys/ubuntu-archive-2012.asc"));
    assert_eq!(archive_2012.fingerprints(), ["790BC7277767219C42C86F933B4FE6ACC0B21F32"]);
}

const HEX_A: &str = "a9efd1a8fc9fc1e58cb4e1e2b51bcaee8072831c22ea1c1cdf8cdc4c02df608e";

#[test]
fn sha256sums_binary_and_text_lines_parse() {
    let text = format!("{HEX_A} *ubuntu.iso\n\n{} netboot.tar.gz\r\n", "00".repeat(31) + "01 ");
    let sums = Sha256Sums::parse(&text).unwrap();
    assert_eq!(sums.names().collect::<Vec<_>>(), ["ubuntu.iso", "netboot.tar.gz"]);
    assert_eq!(sha256_hex(&sums.get("ubuntu.iso").unwrap()), HEX_A);
    assert_eq!(sums.get("other.iso"), None);
}

#[test]
fn sha256sums_bad_lines_are_located() {
    let err = Sha256Sums::parse(&format!("{HEX_A} *a.iso\nxyz *b.iso\n")).unwrap_err();
    assert!(err.to_string().starts_with("SHA256SUMS line 2: the hash is not 64 hexadecimal digits"), "{err}");
    let err = Sha256Sums::parse(&format!("{HEX_A}\n")).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
    let dup = format!("{HEX_A} *a.iso\n{} *a.iso\n", "00".repeat(32));
    assert!(matches!(Sha256Sums::parse(&dup), Err(VerifyError::SumsDuplicate { .. })));
}

#[test]
fn hashing_reader_matches_sha256_of_the_whole_buffer() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut r = HashingReader::new(&data[..]);
    let mut sink = Vec::new();
    std::io::copy(&mut r, &mut sink).unwrap();
    let (digest, n) = r.finish();
    assert_eq!(n, data.len() as u64);
    assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&data)));
    assert_eq!(sink, data);
}

#[test]
fn hash_mismatch_says_which_file_and_both_hashes() {
    let err = check_hash("x.iso", [1; 32], [2; 32]).unwrap_err().to_string();
    assert!(err.starts_with("SHA-256 of x.iso is 0202"), "{err}");
    assert!(err.contains("SHA256SUMS says 0101") && err.contains("tampered"), "{err}");
    check_hash("x.iso", [3; 32], [3; 32]).unwrap();
}
