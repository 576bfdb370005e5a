#!/usr/bin/env bash
# Builds the small sample images committed in images/:
#   images/base.squashfs     a tiny root file system (busybox and a few tools), English only
#   images/spin-de.squashfs  its "localized spin": the same packages with their German and
#                            French translations kept, a German dictionary and a German locale
#   images/spin-fr.squashfs  a second spin: French translations, a French dictionary and locale
# Both are gzip-compressed squashfs, like a live ISO's filesystem.squashfs. The package versions
# are pinned (Debian 12) and every timestamp and owner is fixed, so the images are reproducible.
set -euo pipefail
cd "$(dirname "$0")/.."

export SOURCE_DATE_EPOCH=1700000000
PACKAGES=(busybox=1:1.35.0-4+deb12u1+b1 sed=4.9-1+deb12u1 grep=3.8-5 gzip=1.12-1 less=590-2.1~deb12u2
          dash=0.5.12-2 nano=7.2-1+deb12u1)
SPIN_PACKAGES=(hunspell-de-de=20161207-11)
SPIN_FR_PACKAGES=(hunspell-fr-classical=1:7.0-1)

if ! command -v mksquashfs >/dev/null || ! command -v dpkg-deb >/dev/null; then
    apt-get update -qq && apt-get install -y -qq squashfs-tools dpkg >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/all" "$work/base" "$work/spin" "$work/spin-fr"
# Debian replaces versions in point releases: a pinned version that is gone is taken at the
# current version instead, and the images then differ from the committed ones (said below).
fetch() {
    local spec=$1
    apt-get download -qq "$spec" 2>/dev/null && return 0
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get download -qq "$spec" 2>/dev/null && return 0
    echo "note: $spec is no longer in the archive; using the current ${spec%%=*}" >&2
    apt-get download -qq "${spec%%=*}"
}
( cd "$work/debs" && for p in "${PACKAGES[@]}" "${SPIN_PACKAGES[@]}" "${SPIN_FR_PACKAGES[@]}"; do fetch "$p"; done )

for p in "${PACKAGES[@]}"; do
    dpkg-deb -x "$work/debs/${p%%=*}_"*.deb "$work/all"
done
cp -a "$work/all/." "$work/spin/"
for p in "${SPIN_PACKAGES[@]}"; do
    dpkg-deb -x "$work/debs/${p%%=*}_"*.deb "$work/spin"
done
cp -a "$work/all/." "$work/spin-fr/"
for p in "${SPIN_FR_PACKAGES[@]}"; do
    dpkg-deb -x "$work/debs/${p%%=*}_"*.deb "$work/spin-fr"
done
cp -a "$work/all/." "$work/base/"

# base: English only, as a live image built with localepurge would be
rm -rf "$work/base/usr/share/locale"/* "$work/base/usr/share/man"/??
mkdir -p "$work/base/etc/default" "$work/spin/etc/default"
printf 'LANG=C.UTF-8\n' > "$work/base/etc/default/locale"
# the spin keeps German and French translations and sets a German locale
find "$work/spin/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name de ! -name fr -exec rm -rf {} +
printf 'LANG=de_DE.UTF-8\nLANGUAGE=de_DE:de:en\n' > "$work/spin/etc/default/locale"
# the French spin keeps French translations and sets a French locale
find "$work/spin-fr/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name fr -exec rm -rf {} +
mkdir -p "$work/spin-fr/etc/default"
printf 'LANG=fr_FR.UTF-8\nLANGUAGE=fr_FR:fr:en\n' > "$work/spin-fr/etc/default/locale"

for image in base spin spin-fr; do
    find "$work/$image" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
done
mksq() {
    mksquashfs "$1" "$2" -noappend -comp gzip -all-root -no-xattrs -no-progress -quiet >/dev/null
}
mksq "$work/base" images/base.squashfs
mksq "$work/spin" images/spin-de.squashfs
mksq "$work/spin-fr" images/spin-fr.squashfs
ls -l images/*.squashfs
sha256sum images/*.squashfs
