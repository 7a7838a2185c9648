#!/usr/bin/env python3
"""Attribute `perf script -F comm,ip,sym,dso` samples (recorded with
--call-graph dwarf) to the parts of one call: samples whose stack holds ROOT
(a substring of a symbol) are counted, each under the first of the PARTS
(substring patterns, innermost-first search) its stack holds, and, inside
each part, under the nearest exported/named frame at or above the leaf
(libcrypto's static functions have no names here: the frame is the first
named one above them, e.g. EVP_DigestSign).

usage: attribute.py SCRIPT.txt ROOT [PART=pattern ...]
"""
import re
import sys
from collections import Counter, defaultdict


def samples(path):
    stack = []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if stack:
                    yield stack
                stack = []
                continue
            if not line.startswith(("\t", " ")):
                continue  # the comm line
            m = re.match(r"\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$", line)
            if m:
                stack.append((m.group(2), m.group(3)))
    if stack:
        yield stack


def short(sym):
    # Swift mangled names: keep a readable core.
    for pat, rep in ((r"^\$s13PeregrineDKIM", "DKIM."), (r"^\$s11PeregrineIO", "IO."), (r"33_[0-9A-F]{32}LL", "")):
        sym = re.sub(pat, rep, sym)
    return sym[:110]


def main():
    path, root = sys.argv[1], sys.argv[2]
    parts = [a.split("=", 1) for a in sys.argv[3:]]
    total = 0
    by_part = Counter()
    detail = defaultdict(Counter)
    for st in samples(path):
        syms = [s for s, _ in st]
        if not any(root in s for s in syms):
            continue
        total += 1
        part = "other"
        for name, pat in parts:
            if any(pat in s for s in syms):
                part = name
                break
        # The nearest named frame to the leaf.
        leaf = next((s for s, d in st if s and not s.startswith("0x") and s != "[unknown]"), "?")
        # Inside a stripped library the nearest named frame may be its caller:
        # prefer the innermost named frame of the leaf's own library.
        leaf_dso = st[0][1]
        named_in_leaf_dso = next((s for s, d in st if d == leaf_dso and s and not s.startswith("0x") and s != "[unknown]"), None)
        if named_in_leaf_dso:
            leaf = named_in_leaf_dso
        dso = st[0][1].rsplit("/", 1)[-1]
        detail[part][f"{short(leaf)} [{dso}]"] += 1
        by_part[part] += 1
    print(f"{total} samples under {root}")
    for part, n in by_part.most_common():
        print(f"\n{part}: {n} ({100.0 * n / total:.1f} %)")
        for k, c in detail[part].most_common(int(__import__("os").environ.get("TOP", "12"))):
            print(f"   {100.0 * c / total:5.1f} %  {k}")


if __name__ == "__main__":
    main()
