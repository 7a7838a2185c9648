#!/bin/sh
# Are two commits' DKIM signers byte-identical? Builds PeregrineDKIM's signing
# sources of OLD and of the work tree (swiftc -O, no package build) into one
# harness each, signs 404 messages (fixed, and seeded random headers and
# bodies: folding, tabs, case, repeated fields, bare CR, trailing blank lines)
# under the four canonicalisation pairs with an Ed25519 and an RSA-2048 key,
# with and without l=, x=, i=, and compares every output byte.
# RSA PKCS#1 v1.5 and Ed25519 are deterministic, so equal inputs sign equally.
# usage: scripts/dkim-identity/run.sh OLD_COMMIT   (from the repository root)
set -eu
old=${1:?usage: run.sh OLD_COMMIT}
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl genpkey -algorithm ED25519 -out "$work/ed.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rsa.pem" 2>/dev/null
files="DKIMBodyHasher DKIMHeaderFields DKIMKeys DKIMSigner DKIMTypes SHA256Context"
for side in old new; do
    mkdir -p "$work/$side"
    for f in $files; do
        if [ $side = old ]; then git show "$old:Sources/PeregrineDKIM/$f.swift" > "$work/$side/$f.swift"
        else cp "Sources/PeregrineDKIM/$f.swift" "$work/$side/"; fi
    done
    cp Sources/PeregrineIO/Base64.swift "$work/$side/"
    sed -i '/^import PeregrineIO/d' "$work/$side"/*.swift
    swiftc -O -wmo -I Sources/COpenSSL -I Sources/CDKIMScan -o "$work/id-$side" \
        scripts/dkim-identity/main.swift "$work/$side"/*.swift
    (cd "$work" && ./id-$side > out-$side.txt)
done
tail -1 "$work/out-old.txt"
tail -1 "$work/out-new.txt"
cmp "$work/out-old.txt" "$work/out-new.txt" && echo "byte-identical to $old"
