#!/usr/bin/env bash
# Builds the benchmark corpus: real image pairs from Debian packages, PyPI wheels and crates,
# into images/build/<size>/ (git-ignored), reproducibly (fixed package lists and versions,
# SOURCE_DATE_EPOCH, sorted file order, fixed owners and mtimes). Installs what it needs.
#
#   scripts/make-images.sh            full corpus (live ISO of a few hundred MB)
#   scripts/make-images.sh --small    small corpus (tens of MB), for quick runs
#
# Pairs (OLD -> NEW), each as <pair>.old / <pair>.new:
#   iso        live-ISO layout (live/filesystem.squashfs, gzip, plus boot files), base -> spin
#   squashfs   the gzip-compressed squashfs alone, base -> spin
#   xziso      the same live-ISO layout around an xz (-Xbcj x86) squashfs, as most distributions ship
#   xzsquash   that xz squashfs alone
#   xz1m       the base and spin as xz squashfs with 1 MiB blocks (-b 1M -Xbcj x86 -Xdict-size 1M)
#   zstdsquash the base and spin as zstd squashfs, level 19, made by Debian 12's mksquashfs (libzstd 1.5.4)
#   layered    an ISO as Ubuntu's: two xz squashfs layers (the root without /usr/share, and
#              /usr/share) and an initrd as dracut writes it (microcode cpio, then an xz stream
#              of a cpio that grows by 5 MB); layeredplain: the same with nothing compressed
#   zstdinitrd an initrd as Debian's initramfs-tools writes it (microcode cpio, then `zstd -q -9`
#              of a cpio of /usr/share/locale and storage modules), base -> spin;
#              zstdinitrdplain: the same uncompressed; xzinitrd: with `xz --check=crc32 -T1`;
#              gzinitrd: with initramfs-tools' `gzip -n`; gz9initrd: with dracut's `gzip -n -9`;
#              zstd15initrd: with dracut-ng's `zstd -15 -q -T0` (Fedora 43's default)
#   rawsquash  the same root file systems as uncompressed squashfs images
#   tar        the same root file systems as uncompressed tarballs
#   native     a large native library from two adjacent PyPI releases
#              (full: jaxlib 0.4.30 -> 0.4.31 xla_extension.so; small: pyarrow 16.1.0 -> 17.0.0 libarrow)
#   rustcli    a Rust command-line program, two adjacent releases built with cargo install
#   spins/     one base, several spins (scripts/bench-spins.sh): spins/<lang>.iso for German,
#              French and Spanish spins (the base plus that language's packages and locale),
#              live-ISO layout with a gzip squashfs as for iso; iso.old is their base
#   erofs/     the base and spin's /usr/share as EROFS made with Fedora's, lorax's and Debian's
#              settings (erofs/<kind>.old, .new; scripts/bench-erofs.sh), and across formats
#              (cross: xz squashfs -> EROFS LZMA; crossplain: both uncompressed)
#   refs/      the .deb files the spin adds to the base (18 in the full corpus: locales,
#              manpages-de, hunspell-de-de, ...), as a mirror serves them: references for issue 23
#   update     the base before and after `apt-get upgrade` from bookworm-security and -updates
#              (about 30 packages: openssl, python3.11, perl, apt, zlib, tzdata...), both as
#              uncompressed squashfs (update.old is rawsquash.old)
#   sparse     the base root's /usr/lib files concatenated (full: 256 MiB, small: 32 MiB), and the
#              same with a few dozen scattered small edits (full: 64, small: 16), as a security
#              update to one library is
# "base" is a debootstrapped Debian bookworm root; "spin" is the same root plus a fixed set of
# language packages (locales, translated man pages, dictionaries) and a German default locale.
# Prints sizes and sha256s, and writes them to images/build/<size>/MANIFEST.
set -euo pipefail
cd "$(dirname "$0")/.."

size=full
[ "${1:-}" = "--small" ] && size=small
out=$PWD/images/build/$size
mkdir -p "$out"
export SOURCE_DATE_EPOCH=1700000000
SUITE=bookworm

# --- package lists (fixed) --------------------------------------------------------------
BASE_SMALL=(ca-certificates less nano xz-utils)
BASE_FULL=("${BASE_SMALL[@]}" linux-image-amd64 firmware-linux-free systemd-sysv udev kmod
           python3 perl vim git curl wget openssh-client rsync man-db bash-completion
           iproute2 iputils-ping sudo zstd file htop gcc make)
SPIN_SMALL=(locales manpages-de hunspell-de-de)
SPIN_FULL=("${SPIN_SMALL[@]}" manpages-fr hunspell-fr aspell-de task-german task-french)
# one spin per language, for the many-targets benchmark
declare -A LANG_SPIN=([de]="locales manpages-de hunspell-de-de aspell-de"
                      [fr]="locales manpages-fr hunspell-fr"
                      [es]="locales manpages-es hunspell-es")
declare -A LANG_LOCALE=([de]=de_DE [fr]=fr_FR [es]=es_ES)
if [ "$size" = small ]; then
    BASE=("${BASE_SMALL[@]}"); SPIN=("${SPIN_SMALL[@]}")
    NATIVE=(pyarrow 16.1.0 17.0.0 'pyarrow/libarrow.so.*' manylinux2014_x86_64)
else
    BASE=("${BASE_FULL[@]}"); SPIN=("${SPIN_FULL[@]}")
    NATIVE=(jaxlib 0.4.30 0.4.31 'jaxlib/xla_extension.so' manylinux2014_x86_64)
fi
RUST_CRATE=(ripgrep 14.1.0 14.1.1)

# --- tools ------------------------------------------------------------------------------
need=()
for t in debootstrap:debootstrap mksquashfs:squashfs-tools xorriso:xorriso cpio:cpio xz:xz-utils zstd:zstd; do
    command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

join() { local IFS=,; echo "$*"; }

# Deterministic clean-up of a debootstrapped root: volatile state that differs run to run.
scrub() {
    local root=$1
    rm -rf "$root"/var/log/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/var/lib/apt/lists/* "$root"/var/cache/ldconfig/aux-cache "$root"/var/cache/man \
        "$root"/var/lib/dpkg/*-old "$root"/etc/ssh/ssh_host_* "$root"/tmp/* "$root"/run/*
    : > "$root/etc/machine-id"
    find "$root" -name '*.pyc' -delete
    find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

rootfs() { # NAME PACKAGES...
    local name=$1; shift
    local root=$out/work/$name
    if [ ! -f "$root/.done" ]; then
        rm -rf "$root"; mkdir -p "$root" "$out/work/cache"
        debootstrap --variant=minbase --cache-dir="$out/work/cache" --include="$(join "$@")" \
            "$SUITE" "$root" >"$out/work/$name.log" 2>&1 || { tail -20 "$out/work/$name.log"; exit 1; }
        # debootstrap can leave the chroot's /proc mounted (in containers): nothing of the host
        # may end up in the images, and scrub must not walk it
        for m in proc sys dev/pts; do
            if mountpoint -q "$root/$m"; then umount "$root/$m"; fi
        done
        if [ "$name" = spin ]; then
            printf 'LANG=de_DE.UTF-8\nLANGUAGE=de_DE:de:fr:en\n' > "$root/etc/default/locale"
            printf 'de_DE.UTF-8 UTF-8\nfr_FR.UTF-8 UTF-8\n' > "$root/etc/locale.gen"
        fi
        if [ -n "${LANG_LOCALE[${name#spin-}]:-}" ]; then
            local l=${LANG_LOCALE[${name#spin-}]}
            printf 'LANG=%s.UTF-8\nLANGUAGE=%s:%s:en\n' "$l" "$l" "${l%_*}" > "$root/etc/default/locale"
            printf '%s.UTF-8 UTF-8\n' "$l" > "$root/etc/locale.gen"
        fi
        scrub "$root"
        touch "$root/.done"
    fi
}

squash() { # ROOT OUT [compression options...]
    local root=$1 dst=$2; shift 2
    # -e takes every argument after it, so it comes last
    mksquashfs "$root" "$dst" -noappend -all-root -no-xattrs -no-progress -quiet "$@" -e .done >/dev/null
}

# The live-ISO layout around the squashfs image SQUASHFS of ROOT (boot files taken from ROOT,
# LABEL in the boot menu), written to OUT.
live_iso() { # ROOT LABEL SQUASHFS OUT
    local root=$1 label=$2 fs=$3 dst=$4 iso=$out/work/iso-$2
    rm -rf "$iso"; mkdir -p "$iso/live" "$iso/boot/grub" "$iso/.disk"
    cp "$fs" "$iso/live/filesystem.squashfs"
    for f in "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-*; do
        [ -e "$f" ] && cp "$f" "$iso/live/$(basename "$f" | sed 's/-[0-9].*//')"
    done
    printf 'menuentry "Debian %s live (%s)" {\n  linux /live/vmlinuz boot=live\n  initrd /live/initrd.img\n}\n' \
        "$SUITE" "$label" > "$iso/boot/grub/grub.cfg"
    printf 'Debian GNU/Linux %s live %s\n' "$SUITE" "$label" > "$iso/.disk/info"
    find "$iso" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    xorriso -as mkisofs -quiet -o "$dst" -V "DEBIAN_LIVE" -R -J \
        --modification-date="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S00)" "$iso" 2>/dev/null
    rm -rf "$iso"
}

echo "== root file systems ($size)"
rootfs base "${BASE[@]}"
rootfs spin "${BASE[@]}" "${SPIN[@]}"

# The packages the spin adds to the base, as a mirror serves them (issue 23: references beside
# OLD), kept from debootstrap's cache: the spin's installed packages the base does not have, by
# name, version and architecture (apt's file names write an epoch's colon as %3a).
echo "== the spin's added packages (refs/)"
if [ ! -f "$out/refs/.done" ]; then
    rm -rf "$out/refs"; mkdir -p "$out/refs"
    installed() { dpkg-query --admindir="$out/work/$1/var/lib/dpkg" -W \
                      -f '${Package}_${Version}_${Architecture}\n' | sed 's/:/%3a/g' | LC_ALL=C sort; }
    LC_ALL=C comm -13 <(installed base) <(installed spin) | while read -r deb; do
        cp "$out/work/cache/$deb.deb" "$out/refs/"
    done
    touch "$out/refs/.done"
fi

for v in base spin; do
    ext=old; [ "$v" = spin ] && ext=new
    root=$out/work/$v
    # built once: a rerun (for a part added later) never rewrites images a benchmark may be reading
    if [ -f "$out/work/$v.images-done" ]; then echo "== $v images (already built)"; continue; fi
    echo "== $v images"
    squash "$root" "$out/squashfs.$ext" -comp gzip
    squash "$root" "$out/xzsquash.$ext" -comp xz -Xbcj x86
    squash "$root" "$out/rawsquash.$ext" -noI -noD -noF -noX
    tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        --exclude=./.done -C "$root" -cf "$out/tar.$ext" .
    # live-ISO layout: the squashfs plus boot files, around the gzip and the xz squashfs
    live_iso "$root" "$v" "$out/squashfs.$ext" "$out/iso.$ext"
    live_iso "$root" "$v" "$out/xzsquash.$ext" "$out/xziso.$ext"
    touch "$out/work/$v.images-done"
done

# xz with 1 MiB blocks, BCJ and a 1 MiB dictionary, as Arch, openSUSE and Tails make theirs
# (issue 22: apply of a transformed patch whose blocks are 1 MiB)
for v in base spin; do
    ext=old; [ "$v" = spin ] && ext=new
    if [ ! -f "$out/xz1m.$ext" ]; then
        echo "== $v as xz squashfs with 1 MiB blocks"
        squash "$out/work/$v" "$out/xz1m.$ext.tmp" -comp xz -Xbcj x86 -b 1M -Xdict-size 1M
        mv "$out/xz1m.$ext.tmp" "$out/xz1m.$ext"
    fi
done

# zstd at level 19 as Debian 12's mksquashfs writes it (linked against Debian's libzstd 1.5.4:
# its blocks recompress only with that release, which scripts/zstd-releases.sh builds)
for v in base spin; do
    ext=old; [ "$v" = spin ] && ext=new
    if [ ! -f "$out/zstdsquash.$ext" ]; then
        echo "== $v as zstd squashfs (level 19, Debian's mksquashfs and libzstd)"
        squash "$out/work/$v" "$out/zstdsquash.$ext.tmp" -comp zstd -Xcompression-level 19
        mv "$out/zstdsquash.$ext.tmp" "$out/zstdsquash.$ext"
    fi
done

# An ISO as Ubuntu's desktop ISOs are made: the root file system in layers (casper's
# minimal.squashfs without /usr/share, minimal.standard.squashfs with it; xz, BCJ) and an
# initrd as dracut writes one: an uncompressed early cpio (microcode) in front of an xz stream
# (`xz --check=crc32 --lzma2=dict=1MiB -T2`: a block per 3 MiB) of a cpio that grows with the
# spin (its /usr/share/locale: 69 -> 75 MB). `layeredplain` is the same ISO with nothing
# compressed (uncompressed squashfs layers and cpio): what expanding every part can reach.
layered_iso() { # ROOT LABEL PLAIN(0|1) OUT
    local root=$1 label=$2 plain=$3 dst=$4 iso=$out/work/layered-$2-$3
    local comp=(-comp xz -Xbcj x86)
    [ "$plain" = 1 ] && comp=(-noI -noD -noF -noX)
    rm -rf "$iso"; mkdir -p "$iso/casper" "$iso/early/kernel/x86/microcode"
    mksquashfs "$root" "$iso/casper/minimal.squashfs" -noappend -all-root -no-xattrs -no-progress \
        -quiet "${comp[@]}" -wildcards -e .done usr/share >/dev/null
    mksquashfs "$root/usr/share" "$iso/casper/minimal.standard.squashfs" -noappend -all-root \
        -no-xattrs -no-progress -quiet "${comp[@]}" >/dev/null
    # the microcode: the same bytes in base and spin
    head -c 300000 "$out/work/base/usr/bin/bash" > "$iso/early/kernel/x86/microcode/GenuineIntel.bin"
    cpio_of() { (cd "$1" && find "${@:2}" | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 2>/dev/null); }
    cpio_of "$iso/early" . > "$iso/casper/initrd"
    if [ "$plain" = 1 ]; then
        cpio_of "$root" usr/share/locale >> "$iso/casper/initrd"
    else
        cpio_of "$root" usr/share/locale | xz --check=crc32 --lzma2=dict=1MiB -T2 >> "$iso/casper/initrd"
    fi
    rm -rf "$iso/early"
    cp "$out/work/base/usr/bin/bash" "$iso/casper/vmlinuz"
    find "$iso" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    xorriso -as mkisofs -quiet -o "$dst" -V "UBUNTU_LIKE" -R -J \
        --modification-date="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S00)" "$iso" 2>/dev/null
    rm -rf "$iso"
}
for v in base spin; do
    ext=old; [ "$v" = spin ] && ext=new
    for plain in 0 1; do
        name=layered; [ "$plain" = 1 ] && name=layeredplain
        if [ ! -f "$out/$name.$ext" ]; then
            echo "== $v as an ISO with two squashfs layers and an xz initrd ($name)"
            layered_iso "$out/work/$v" "$v" "$plain" "$out/$name.$ext.tmp"
            mv "$out/$name.$ext.tmp" "$out/$name.$ext"
        fi
    done
done

# An initrd as Debian's initramfs-tools (0.142, bookworm) writes one: an uncompressed early
# cpio (microcode) in front of `zstd -q -9` of the main cpio, from a pipe (Debian's zstd 1.5.4:
# its multi-threaded framing, no content size), of a root's /usr/share/locale (it grows with the
# spin) and the file system and storage modules (about 120 MB in all); `zstdinitrdplain` is the
# same with the main cpio uncompressed, `xzinitrd` with initramfs-tools' `xz --check=crc32`
# (single-threaded on Debian 12's xz 5.4: one block for the whole cpio), `gzinitrd` with its
# `gzip -n` (level 6), `gz9initrd` with dracut's `gzip -n -9` and `zstd15initrd` with dracut-ng's
# `zstd -15 -q -T0` (its default compressor and level since Fedora 43).
zstd_initrd() { # ROOT PLAIN(0|1|xz|gz|gz9|zstd15) OUT
    local root=$1 plain=$2 dst=$3 early=$out/work/zstd-initrd-early
    rm -rf "$early"; mkdir -p "$early/kernel/x86/microcode"
    head -c 300000 "$out/work/base/usr/bin/bash" > "$early/kernel/x86/microcode/GenuineIntel.bin"
    find "$early" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    (cd "$early" && find . | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 2>/dev/null) > "$dst"
    # (a root without kernel modules, the small corpus's, gives the locale alone)
    main() { (cd "$root" && { find usr/share/locale usr/lib/modules/*/kernel/fs \
              usr/lib/modules/*/kernel/drivers/{ata,nvme,block,md} 2>/dev/null || true; } |
              LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 2>/dev/null); }
    case $plain in
        1) main >> "$dst" ;;
        xz) main | xz --check=crc32 -T1 >> "$dst" ;;
        gz) main | gzip -n >> "$dst" ;;
        gz9) main | gzip -n -9 >> "$dst" ;;
        zstd15) main | zstd -15 -q -T0 >> "$dst" ;;
        *) main | zstd -q -9 >> "$dst" ;;
    esac
    rm -rf "$early"
}
for v in base spin; do
    ext=old; [ "$v" = spin ] && ext=new
    for plain in 0 1 xz gz gz9 zstd15; do
        case $plain in
            1) name=zstdinitrdplain ;; xz) name=xzinitrd ;; gz) name=gzinitrd ;;
            gz9) name=gz9initrd ;; zstd15) name=zstd15initrd ;; *) name=zstdinitrd ;;
        esac
        if [ ! -f "$out/$name.$ext" ]; then
            echo "== $v's initrd as initramfs-tools writes it ($name)"
            zstd_initrd "$out/work/$v" "$plain" "$out/$name.$ext.tmp"
            mv "$out/$name.$ext.tmp" "$out/$name.$ext"
        fi
    done
done

echo "== spins of the base (de, fr, es)"
mkdir -p "$out/spins"
for lang in de fr es; do
    if [ ! -f "$out/spins/$lang.iso" ]; then
        # shellcheck disable=SC2086
        rootfs "spin-$lang" "${BASE[@]}" ${LANG_SPIN[$lang]}
        squash "$out/work/spin-$lang" "$out/work/spin-$lang.sq" -comp gzip
        live_iso "$out/work/spin-$lang" "spin-$lang" "$out/work/spin-$lang.sq" "$out/spins/$lang.iso.tmp"
        rm "$out/work/spin-$lang.sq"
        mv "$out/spins/$lang.iso.tmp" "$out/spins/$lang.iso"
    fi
done

echo "== native library (${NATIVE[0]} ${NATIVE[1]} -> ${NATIVE[2]})"
for i in 1 2; do
    ext=old; [ $i = 2 ] && ext=new
    ver=${NATIVE[$i]}
    d=$out/work/wheel-$ver
    if [ ! -f "$out/native.$ext" ]; then
        mkdir -p "$d"
        pip download -q --no-deps --only-binary=:all: --platform "${NATIVE[4]}" \
            --python-version 3.11 "${NATIVE[0]}==$ver" -d "$d"
        python3 - "$d" "${NATIVE[3]}" "$out/native.$ext" <<'PY'
import fnmatch, glob, sys, zipfile
d, pattern, dst = sys.argv[1:]
z = zipfile.ZipFile(glob.glob(d + "/*.whl")[0])
names = [n for n in z.namelist() if fnmatch.fnmatch(n, pattern)]
open(dst, "wb").write(z.read(names[0]))
PY
    fi
done

echo "== Rust program (${RUST_CRATE[0]} ${RUST_CRATE[1]} -> ${RUST_CRATE[2]})"
for i in 1 2; do
    ext=old; [ $i = 2 ] && ext=new
    ver=${RUST_CRATE[$i]}
    # built once for both corpus sizes
    shared=$PWD/images/build/cargo-$ver
    if [ ! -x "$shared/bin/rg" ]; then
        CARGO_TARGET_DIR=$PWD/images/build/cargo-target cargo install --quiet --locked --root "$shared" \
            --version "$ver" "${RUST_CRATE[0]}"
    fi
    cp "$shared/bin/rg" "$out/rustcli.$ext"
done

echo "== update: the base before and after its pending security and point updates"
# The base root as a system that has not run `apt-get upgrade` since it was installed, and the
# same root after it (bookworm-security and bookworm-updates: openssl, python3.11, perl, apt,
# zlib, tzdata, ... as the mirror has them), both as uncompressed squashfs: issue 22's update
# pair, whose man pages and changelogs change inside gzip members. update.old is rawsquash.old.
if [ ! -f "$out/update.new" ]; then
    root=$out/work/update
    rm -rf "$root"; cp -a "$out/work/base" "$root"; rm -f "$root/.done"
    printf 'deb http://deb.debian.org/debian %s main\n' "$SUITE" > "$root/etc/apt/sources.list"
    printf 'deb http://deb.debian.org/debian %s-updates main\n' "$SUITE" >> "$root/etc/apt/sources.list"
    printf 'deb http://deb.debian.org/debian-security %s-security main\n' "$SUITE" >> "$root/etc/apt/sources.list"
    mount -t proc proc "$root/proc"
    if ! chroot "$root" sh -c 'apt-get -q update && DEBIAN_FRONTEND=noninteractive apt-get -q -y \
            -o Dpkg::Options::=--force-confold upgrade' >"$out/work/update.log" 2>&1; then
        umount "$root/proc"; tail -20 "$out/work/update.log"; exit 1
    fi
    umount "$root/proc"
    grep -c '^Unpacking' "$out/work/update.log" | sed 's/^/   packages upgraded: /'
    scrub "$root"
    squash "$root" "$out/update.new.tmp" -noI -noD -noF -noX
    ln -f "$out/rawsquash.old" "$out/update.old"
    mv "$out/update.new.tmp" "$out/update.new"
fi

echo "== sparse edits"
if [ ! -f "$out/sparse.new" ]; then
    sparse=(256M 64); [ "$size" = small ] && sparse=(32M 16)
    python3 scripts/make-pair.py "${sparse[0]}" "$out/work/sparse" --sparse --edits "${sparse[1]}" --seed 12 \
        --root "$out/work/base/usr/lib" >/dev/null
    mv "$out/work/sparse/old.bin" "$out/sparse.old"
    mv "$out/work/sparse/new.bin" "$out/sparse.new"
fi

echo "== EROFS of /usr/share (Fedora's settings; mkfs.erofs 1.8.9 from ../shared/peers)"
# The base and German spin's /usr/share (where a spin's language packs land), as EROFS images
# made the way distributions make them: Fedora KDE's trials (LZMA, all fragments, 1 MiB
# pclusters), Fedora CoreOS (LZMA, fragments), lorax (zstd, dedupe, 64 KiB pclusters), Debian
# 12's erofs-utils default (lz4hc), and uncompressed (what a transform can reach). /usr/share
# rather than the whole root: mkfs.erofs's LZMA runs at about 1 MB/s here.
erofs_bin=$(scripts/erofs-utils.sh)
mkdir -p "$out/erofs"
# zstd pclusters depend on the libzstd mkfs.erofs was linked with: images made by another
# build of it are made again
if [ "$(cat "$out/erofs/MKFS" 2>/dev/null)" != "$erofs_bin" ]; then
    rm -f "$out/erofs"/lorax.*
    echo "$erofs_bin" > "$out/erofs/MKFS"
fi
declare -A EROFS=([kde]="-zlzma,level=6 -Eall-fragments,fragdedupe=inode -C1048576"
                  [coreos]="-zlzma,level=6 -Efragments"
                  [lorax]="-zzstd,level=8 -Ededupe,all-fragments -C65536"
                  [lz4hc]="-zlz4hc"
                  [plain]="")
for kind in plain lz4hc lorax coreos kde; do
    for v in base spin; do
        ext=old; [ "$v" = spin ] && ext=new
        dst=$out/erofs/$kind.$ext
        [ -f "$dst" ] && continue
        # shellcheck disable=SC2086
        "$erofs_bin/mkfs.erofs" --quiet -T"$SOURCE_DATE_EPOCH" -U 6a6f6e65-7370-696e-6469-666600000001 \
            ${EROFS[$kind]} "$dst.tmp" "$out/work/$v/usr/share"
        mv "$dst.tmp" "$dst"
    done
done
# Across formats, as Fedora 41 -> 42 users upgraded: the base's /usr/share as xz squashfs (1 MiB
# blocks, BCJ) against the spin's as EROFS with Fedora KDE's settings, and the same two trees
# uncompressed (uncompressed squashfs against uncompressed EROFS: what a transform can reach).
for pair in "cross:-comp xz -Xbcj x86 -b 1M -Xdict-size 1M:kde" "crossplain:-noI -noD -noF -noX:plain"; do
    IFS=: read -r kind options erofs_kind <<< "$pair"
    if [ ! -f "$out/erofs/$kind.old" ]; then
        # shellcheck disable=SC2086
        squash "$out/work/base/usr/share" "$out/erofs/$kind.old.tmp" $options
        mv "$out/erofs/$kind.old.tmp" "$out/erofs/$kind.old"
    fi
    ln -f "$out/erofs/$erofs_kind.new" "$out/erofs/$kind.new"
done

echo "== manifest"
( cd "$out" && for f in iso squashfs xziso xzsquash xz1m zstdsquash layered layeredplain zstdinitrd zstdinitrdplain xzinitrd gzinitrd gz9initrd zstd15initrd rawsquash tar update native rustcli sparse; do
    for e in old new; do
        printf '%-14s %12d  %s\n' "$f.$e" "$(stat -c %s "$f.$e")" "$(sha256sum "$f.$e" | cut -d' ' -f1)"
    done
done ) | tee "$out/MANIFEST"
( cd "$out" && for f in spins/*.iso; do
    printf '%-14s %12d  %s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
done ) | tee "$out/SPINS"
