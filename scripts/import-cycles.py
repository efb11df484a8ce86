#!/usr/bin/env python3
"""Checks that the modules of a crate import no circle: `python3 scripts/import-cycles.py
crates/quicswarm/src`. Every `crate::a::b` path (in `use` lines and in code) and every
`super::x` path is an edge from the file's module to the module it names (a folder module
counts as its `mod.rs`). A module's own children are not edges back. Prints each circle and
exits 1 if there is one."""

import pathlib
import re
import sys


def module_of(root, path):
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def main(root):
    root = pathlib.Path(root)
    files = {module_of(root, p): p for p in root.rglob("*.rs")}
    modules = set(files)
    edges = {m: set() for m in modules}

    def resolve(target):
        # The longest prefix of `target` that is a module.
        for n in range(len(target), 0, -1):
            if tuple(target[:n]) in modules:
                return tuple(target[:n])
        return None

    for mod, path in files.items():
        text = re.sub(r"//[^\n]*", "", path.read_text())
        # Test modules may use anything.
        text = text.split("#[cfg(test)]")[0]
        # Expand `use crate::{a::{b, c}, d}` into paths, roughly: every `crate::` or `super::`
        # path and every name inside the braces right after it.
        for m in re.finditer(r"\b(crate|super(?:::super)*)::(\{[^;]*\}|[a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", text):
            head, rest = m.group(1), m.group(2)
            base = [] if head == "crate" else list(mod[: len(mod) - head.count("super")])
            names = re.findall(r"(?:^|[{,\s])([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", rest) if rest.startswith("{") else [rest]
            for name in names:
                target = resolve(base + name.split("::"))
                if target and target != mod and target[: len(mod)] != mod:
                    edges[mod].add(target)

    # Circles: strongly connected components of more than one module (Tarjan).
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    # A parent importing its child and the child importing the parent is a circle too, but
    # a child reaching its own ancestors' items (`super::x`) is how Rust nests: only circles
    # between modules that are not one inside the other count.
    real = []
    for comp in out:
        names = ["::".join(c) or "crate" for c in sorted(comp)]
        real.append(names)
    for names in real:
        print("circle:", " -> ".join(names))
    print(f"{len(modules)} modules, {sum(map(len, edges.values()))} edges, {len(real)} circles")
    return 1 if real else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "crates/quicswarm/src"))
