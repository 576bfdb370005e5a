#!/usr/bin/env python3
"""Builds a synthetic but realistic OLD/NEW pair for benchmarks and acceptance runs.

OLD is real binary data: regular files under /usr/lib (sorted by path, so the same machine
gives the same OLD), concatenated until SIZE. NEW is OLD with, from a fixed seed:
  - scattered edits: runs of 1-64 bytes replaced by random bytes,
  - inserts and deletes of 16 B - 16 KiB,
  - moved blocks of 64 KiB - 1 MiB (cut from one place, pasted at another),
  - pointer shifts: over 4-64 KiB regions, every 4-byte little-endian word at a 16-byte
    stride gets a constant added, as in a relinked binary.

usage: make-pair.py SIZE OUT_DIR [--edits N] [--seed S]
writes OUT_DIR/old.bin and OUT_DIR/new.bin
"""
import argparse
import os
import random
import struct
import sys


def parse_size(s):
    units = {"k": 10, "m": 20, "g": 30}
    s = s.strip().lower()
    if s[-1] in units:
        return int(float(s[:-1]) * (1 << units[s[-1]]))
    return int(s)


def gather(size, root="/usr/lib"):
    out = bytearray()
    paths = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            paths.append(os.path.join(d, f))
    for p in paths:
        if len(out) >= size:
            break
        try:
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as fh:
                out += fh.read(size - len(out))
        except OSError:
            continue
    if len(out) < size:
        sys.exit(f"only {len(out)} bytes of files under {root}, wanted {size}")
    return out


def mutate(old, edits, rng):
    new = bytearray(old)
    n = edits
    # moved blocks first (they reorder content), then the rest
    for _ in range(max(1, n // 20)):
        ln = rng.randint(64 << 10, 1 << 20)
        if len(new) < 4 * ln:
            continue
        a = rng.randrange(0, len(new) - ln)
        block = new[a:a + ln]
        del new[a:a + ln]
        b = rng.randrange(0, len(new))
        new[b:b] = block
    for _ in range(max(1, n // 10)):
        ln = rng.randint(4 << 10, 64 << 10)
        a = rng.randrange(0, max(1, len(new) - ln))
        delta = rng.randint(1, 1 << 20)
        words = len(range(a, a + ln - 3, 16))
        for i in range(a, a + ln - 3, 16):
            (v,) = struct.unpack_from("<I", new, i)
            struct.pack_into("<I", new, i, (v + delta) & 0xFFFFFFFF)
        _ = words
    for _ in range(n):
        kind = rng.random()
        if kind < 0.6:
            ln = rng.randint(1, 64)
            a = rng.randrange(0, len(new) - ln)
            new[a:a + ln] = rng.randbytes(ln)
        elif kind < 0.8:
            ln = rng.randint(16, 16 << 10)
            a = rng.randrange(0, len(new))
            new[a:a] = rng.randbytes(ln)
        else:
            ln = rng.randint(16, 16 << 10)
            a = rng.randrange(0, len(new) - ln)
            del new[a:a + ln]
    return new


def sparse_edits(old, edits, rng):
    new = bytearray(old)
    for _ in range(edits):
        ln = rng.randint(1, 64)
        a = rng.randrange(0, len(new) - ln)
        new[a:a + ln] = rng.randbytes(ln)
    return new


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("size")
    ap.add_argument("out_dir")
    ap.add_argument("--edits", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sparse", action="store_true")
    ap.add_argument("--root", default="/usr/lib")
    a = ap.parse_args()
    size = parse_size(a.size)
    os.makedirs(a.out_dir, exist_ok=True)
    old = gather(size, a.root)
    edit = sparse_edits if a.sparse else mutate
    new = edit(old, a.edits, random.Random(a.seed))
    with open(os.path.join(a.out_dir, "old.bin"), "wb") as f:
        f.write(old)
    with open(os.path.join(a.out_dir, "new.bin"), "wb") as f:
        f.write(new)
    print(f"old.bin {len(old)} bytes, new.bin {len(new)} bytes, {a.edits} edits, seed {a.seed}")


if __name__ == "__main__":
    main()
