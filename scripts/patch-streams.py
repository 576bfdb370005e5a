#!/usr/bin/env python3
"""Where a spindiff patch's bytes go, and what coding its streams across chunks would save.

usage: patch-streams.py PATCH [LEVEL]

Reads the container (docs/FORMAT.md), decodes every chunk's control, add and insert streams (a version-3 group's linked parts as
one frame),
and prints, per stream, the decoded bytes, the bytes of the per-chunk zstd frames, and the bytes
of one frame over the whole stream (zstd LEVEL, default 19, 128 MiB window); then the framing.
Installs python-zstandard (pip) when it is missing.
"""
import struct
import subprocess
import sys

try:
    import zstandard as zs
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "zstandard"], check=True)
    import zstandard as zs


def main():
    path = sys.argv[1]
    level = int(sys.argv[2]) if len(sys.argv) > 2 else 19
    p = open(path, "rb").read()
    if p[:8] != b"SPINDIFF":
        sys.exit(f"{path}: not a spindiff patch")
    version = struct.unpack_from("<H", p, 8)[0]
    count = struct.unpack_from("<Q", p, 104)[0]
    group = struct.unpack_from("<I", p, 100)[0] if version >= 3 else 1
    flags = struct.unpack_from("<H", p, 10)[0]
    at = 120
    if flags and count:
        # the first chunk follows the transform (references) section: the index says where
        index = struct.unpack_from("<Q", p, len(p) - 24)[0]
        at = struct.unpack_from("<Q", p, index + 12)[0]
    streams = [[], [], []]
    frames = [0, 0, 0]
    linked = [[], [], []]  # version 3+: the parts of the current group's frame, per stream kind
    for i in range(count):
        header = p[at:at + 72]
        if header[:4] != b"CHNK":
            sys.exit(f"{path}: no chunk record at {at}")
        stored = struct.unpack_from("<I", header, 20)[0] if version >= 3 else 0
        compressed = struct.unpack_from("<3I", header, 24)
        decoded = struct.unpack_from("<3I", header, 36)
        q = at + 72
        for k in range(3):
            part = p[q:q + compressed[k]]
            frames[k] += compressed[k]
            if stored >> k & 1:
                streams[k].append(part)
            elif version >= 3:
                linked[k].append(part)
            elif compressed[k]:
                streams[k].append(zs.ZstdDecompressor().decompress(part, max_output_size=decoded[k]))
            q += compressed[k]
        if version >= 3 and ((i + 1) % group == 0 or i + 1 == count):
            for k in range(3):
                frame = b"".join(linked[k])
                if frame:
                    streams[k].append(zs.ZstdDecompressor().decompressobj().decompress(frame))
                linked[k] = []
        at = q
    params = zs.ZstdCompressionParameters.from_level(level, window_log=27)
    print(f"{path}: {len(p):,} bytes, format version {version}, {count} chunks, "
          f"framing {len(p) - sum(frames):,} bytes")
    whole_total = 0
    for k, name in enumerate(["control", "add", "insert"]):
        joined = b"".join(streams[k])
        whole = len(zs.ZstdCompressor(compression_params=params).compress(joined)) if joined else 0
        whole_total += whole
        change = f"{(whole / frames[k] - 1) * 100:+.1f}%" if frames[k] else ""
        print(f"  {name:8} decoded {len(joined):>13,}  per-chunk frames {frames[k]:>12,}  "
              f"one frame {whole:>12,} {change}")
    if sum(frames):
        print(f"  streams  per-chunk frames {sum(frames):,}, one frame each {whole_total:,} "
              f"({(whole_total / sum(frames) - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
