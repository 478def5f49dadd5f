#!/usr/bin/env python3
"""The include graph of qrux's C sources, folder by folder: every
`#include "folder/file.h"` must point to the same folder or to a layer
below. Prints each include that points up or sideways and exits 1 if there
is one; run by CTest (lint.layers) and by hand:

    scripts/layers.py [--graph]     --graph: the folder-level edges too

The layers, lowest first (a folder may include its own files and those of
any lower layer; folders of one layer never include each other):

    proxy/base
    bpf (the XDP program; proxy/base/cid.h is shared with it)
    config
    proxy/conf
    proxy/upstream
    proxy/exchange
    proxy/front/tcp, proxy/front/quic
    proxy/worker, proxy/xdp
    admin
    proxy (main.c)
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = [
    ["proxy/base"],
    ["bpf"],
    ["config"],
    ["proxy/conf"],
    ["proxy/upstream"],
    ["proxy/exchange"],
    ["proxy/front/tcp", "proxy/front/quic"],
    ["proxy/worker", "proxy/xdp"],
    ["admin"],
    ["proxy"],
]
RANK = {folder: i for i, layer in enumerate(LAYERS) for folder in layer}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def folder_of_source(path):
    return os.path.dirname(os.path.relpath(path, ROOT))


def folder_of_include(name, src_folder):
    """The folder an include names, or None for one outside the layers
    (a generated header, a header beside the source in bpf/)."""
    if "/" not in name:
        return src_folder if os.path.exists(os.path.join(ROOT, src_folder, name)) else None
    for base in ("proxy", ""):
        p = os.path.join(ROOT, base, name)
        if os.path.exists(p):
            return os.path.dirname(os.path.relpath(p, ROOT))
    return None


def main():
    edges = {}
    bad = []
    for top in ("proxy", "config", "admin", "bpf"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for fn in sorted(files):
                if not fn.endswith((".c", ".h")):
                    continue
                path = os.path.join(dirpath, fn)
                src = folder_of_source(path)
                if src not in RANK:
                    bad.append("%s: folder %s is in no layer (scripts/layers.py)" % (path, src))
                    continue
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                for name in INCLUDE.findall(text):
                    dst = folder_of_include(name, src)
                    if dst is None or dst == src:
                        continue
                    edges.setdefault((src, dst), []).append(os.path.relpath(path, ROOT))
                    if dst not in RANK:
                        bad.append("%s includes %s: folder %s is in no layer"
                                   % (os.path.relpath(path, ROOT), name, dst))
                    elif RANK[dst] >= RANK[src]:
                        bad.append("%s includes \"%s\": %s (layer %d) may not include %s (layer %d)"
                                   % (os.path.relpath(path, ROOT), name, src, RANK[src], dst,
                                      RANK[dst]))
    if "--graph" in sys.argv:
        for (s, d), who in sorted(edges.items()):
            print("%-18s -> %-18s (%d)" % (s, d, len(who)))
    for b in bad:
        print(b)
    if bad:
        print("%d includes point up or sideways" % len(bad))
        return 1
    print("layers: %d folder edges, all pointing down" % len(edges))
    return 0


if __name__ == "__main__":
    sys.exit(main())
