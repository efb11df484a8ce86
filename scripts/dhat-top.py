#!/usr/bin/env python3
"""Summarise a dhat heap profile (dhat-heap.json, from the soak's `--features dhat`).

Prints the allocation sites holding the most live memory at the heap's peak ("gb": for
the soak, memory still held near its end, before shutdown frees the connections) and at
the end ("eb"), each with its first frames outside the allocator and std:

    python3 scripts/dhat-top.py dhat-heap.json [COUNT] [gb|eb]
"""
import json
import sys

SKIP = ("alloc::", "dhat::", "core::", "std::", "hashbrown::", "<alloc::", "[root]", "__rust")


def frames(ftbl, fs, depth=6):
    out = []
    for i in fs:
        f = ftbl[i]
        name = f.split(": ", 1)[-1]
        if name.startswith(SKIP):
            continue
        out.append(name)
        if len(out) == depth:
            break
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "dhat-heap.json"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    with open(path) as f:
        d = json.load(f)
    key = sys.argv[3] if len(sys.argv) > 3 else "gb"
    pps = sorted(d["pps"], key=lambda p: p.get(key, 0), reverse=True)
    live = sum(p.get(key, 0) for p in pps)
    blocks = sum(p.get(key + "k", 0) for p in pps)
    when = "the peak" if key == "gb" else "the end"
    print(f"live at {when}: {live} bytes in {blocks} blocks, {len(pps)} sites")
    for p in pps[:count]:
        print(f"\n{p.get(key, 0):>10} B {p.get(key + 'k', 0):>7} blocks"
              f"  (allocated in all: {p['tb']} B in {p['tbk']} blocks)")
        for name in frames(d["ftbl"], p["fs"]):
            print("      ", name[:160])


if __name__ == "__main__":
    main()
