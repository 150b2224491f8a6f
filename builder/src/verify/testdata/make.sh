#!/usr/bin/env bash
# Regenerates the OpenPGP test vectors for builder/src/verify/tests.rs with
# GnuPG. Keys are made for the tests only; nothing here is secret.
set -euo pipefail
cd "$(dirname "$0")"
export GNUPGHOME=$(mktemp -d) LC_ALL=C
trap 'gpgconf --kill all; rm -rf "$GNUPGHOME"' EXIT
gen() { gpg --batch --quiet --pinentry-mode loopback --passphrase '' --quick-gen-key "$@"; }
fpr() { gpg --batch --with-colons --list-keys "$1" | awk -F: '$1 == "fpr" { print $10 }' | sed -n "${2:-1}p"; }

gen "signer <signer@test.invalid>" ed25519 cert never
gpg --batch --quiet --pinentry-mode loopback --passphrase '' --quick-add-key "$(fpr signer@)" ed25519 sign never
gen "primary signer <primary@test.invalid>" ed25519 sign,cert never
gen "other <other@test.invalid>" ed25519 sign,cert never

printf 'a9ef  *ubuntu.iso\nThis is the signed text.\n' > data.txt
gpg --batch --armor --export signer@ > signer.asc
gpg --batch --armor --export primary@ > primary.asc
gpg --batch --export signer@ primary@ > both.gpg
gpg --batch --yes --armor --local-user "$(fpr signer@ 2)!" --detach-sign -o data.txt.subkey.asc data.txt
gpg --batch --yes --local-user "$(fpr primary@)!" --detach-sign -o data.txt.primary.sig data.txt
gpg --batch --yes --armor --local-user "$(fpr other@)!" --detach-sign -o data.txt.other.asc data.txt
# The signer's key with the subkey binding signature removed.
gpg --batch --export signer@ | python3 -c '
import sys
data = sys.stdin.buffer.read(); out = b""; i = 0; prev = None
while i < len(data):
    hdr = data[i]; assert hdr & 0x80, "not an OpenPGP packet"
    if hdr & 0x40:
        tag = hdr & 0x3F; l = data[i + 1]
        if l < 192: n, hl = l, 2
        elif l < 224: n, hl = ((l - 192) << 8) + data[i + 2] + 192, 3
        else: n, hl = int.from_bytes(data[i + 2:i + 6], "big"), 6
    else:
        tag = (hdr >> 2) & 0xF; lt = hdr & 3; w = {0: 1, 1: 2, 2: 4}[lt]
        n, hl = int.from_bytes(data[i + 1:i + 1 + w], "big"), 1 + w
    pkt = data[i:i + hl + n]; i += hl + n
    if not (tag == 2 and prev == 14): out += pkt
    prev = tag
sys.stdout.buffer.write(out)' > signer-unbound.gpg
