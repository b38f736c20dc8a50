#!/usr/bin/env bash
# Fetches the pinned OpenClaw gateway protocol schema that the conformance tests validate
# against: `npm pack @openclaw/gateway-protocol@2026.9.1` into target/openclaw-protocol/,
# extracted, with the sha256 of protocol.schema.json checked. Prints the schema's path.
#
# Idempotent: when target/openclaw-protocol/package/protocol.schema.json already exists, only
# its checksum is verified. Works from a fresh clone; needs npm (and the npm registry) only
# the first time. Runs from any directory.
set -euo pipefail

PACKAGE="@openclaw/gateway-protocol"
VERSION="2026.9.1"
SHA256="971f2c0d2f0e267a062213b21a398518849c019d2cff1c1d54ff6ee1af7cddf1"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/target/openclaw-protocol"
schema="$dest/package/protocol.schema.json"

die() {
  printf 'fetch-protocol-schema: %s\n' "$*" >&2
  exit 1
}

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 "$1" | cut -d' ' -f1
  else
    die "neither sha256sum nor shasum is installed"
  fi
}

if [ ! -f "$schema" ]; then
  command -v npm >/dev/null 2>&1 ||
    die "npm is not installed; install it (e.g. apt-get install npm) to fetch $PACKAGE@$VERSION"
  mkdir -p "$dest"
  # Work in a private directory and move the result into place at the end, so an interrupted
  # or concurrent run never leaves a half-extracted package behind.
  work="$(mktemp -d "$dest/.fetch.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null) ||
    die "npm pack $PACKAGE@$VERSION failed"
  tarballs=("$work"/*.tgz)
  [ -f "${tarballs[0]}" ] || die "npm pack $PACKAGE@$VERSION produced no tarball"
  tar -xzf "${tarballs[0]}" -C "$work" || die "cannot extract ${tarballs[0]}"
  [ -f "$work/package/protocol.schema.json" ] ||
    die "$PACKAGE@$VERSION has no package/protocol.schema.json"
  got="$(sha256_of "$work/package/protocol.schema.json")"
  [ "$got" = "$SHA256" ] ||
    die "sha256 of protocol.schema.json in $PACKAGE@$VERSION is $got, expected $SHA256"
  if [ ! -f "$schema" ]; then
    rm -rf "$dest/package"
    mv "$work/package" "$dest/package"
    mv "${tarballs[0]}" "$dest/"
  fi
fi

got="$(sha256_of "$schema")"
[ "$got" = "$SHA256" ] ||
  die "sha256 of $schema is $got, expected $SHA256; delete $dest and run this script again"
printf '%s\n' "$schema"
