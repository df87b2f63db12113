#!/usr/bin/env bash
# Real public test data shipped inside Debian packages, unpacked (not installed: no dependencies
# pulled) under .cache/debian/<package>/ for the tests that read it:
#   r-bioc-variantannotation  VariantAnnotation extdata: 1000 Genomes chr22.vcf.gz, hapmap_exome_chr22.vcf.gz
#                             (tests/test_sage_net_real_vcf.py)
# Usage: bash scripts/debian_test_data.sh [package ...]. Needs apt-get and dpkg-deb (Debian/Ubuntu);
# elsewhere it says so and exits 0, and the tests that need the data skip with that reason.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=("$@")
[ ${#PACKAGES[@]} -gt 0 ] || PACKAGES=(r-bioc-variantannotation)
DEST=.cache/debian
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "debian_test_data: apt-get/dpkg-deb not found: tests on Debian-packaged data will skip"
    exit 0
fi
mkdir -p "$DEST"
for pkg in "${PACKAGES[@]}"; do
    if [ -f "$DEST/$pkg/.unpacked" ]; then
        echo "debian_test_data: $pkg already unpacked"
        continue
    fi
    tmp=$(mktemp -d "$DEST/.download.XXXXXX")
    # apt-get download needs current package lists; refresh them once if the first try fails
    if ! (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1); then
        apt-get update -qq >/dev/null 2>&1 || true
        if ! (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1); then
            echo "debian_test_data: could not download $pkg: tests on its data will skip"
            rm -rf "$tmp"
            continue
        fi
    fi
    rm -rf "${DEST:?}/$pkg"
    dpkg-deb -x "$tmp"/*.deb "$DEST/$pkg"
    basename "$tmp"/*.deb > "$DEST/$pkg/.unpacked"
    rm -rf "$tmp"
    echo "debian_test_data: $pkg -> $DEST/$pkg ($(cat "$DEST/$pkg/.unpacked"))"
done
