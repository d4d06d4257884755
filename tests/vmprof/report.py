"""`make profile-vm`'s report: where a module's own time goes.

Reads the newest V8 CPU profile (`node --cpu-prof`) in the folder given and
prints, over the samples whose leaf frame is the module's code (the
stand-in host's JavaScript left out): the functions with the most samples of
their own, and those most often on the stack. Rust's legacy symbol mangling
is undone; v0 names (parts of std) are left as they are.
"""
import collections
import glob
import json
import os
import re
import sys

ESCAPES = [("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","), ("$RF$", "&"),
           ("$BP$", "*"), ("$u7b$", "{"), ("$u7d$", "}"), ("$LP$", "("), ("$RP$", ")"), ("..", "::")]


def demangle(name):
    m = re.fullmatch(r"_ZN(.*)17h[0-9a-f]{16}E", name)
    if not m:
        return name
    rest, parts = m.group(1), []
    while rest:
        n = re.match(r"\d+", rest)
        if not n:
            break
        length = int(n.group(0))
        rest = rest[len(n.group(0)):]
        parts.append(rest[:length])
        rest = rest[length:]
    out = "::".join(parts)
    for a, b in ESCAPES:
        out = out.replace(a, b)
    return out


def is_module(name):
    # The module's functions carry Rust or C (dlmalloc, libc) symbol names;
    # the host's are JavaScript, V8's wrappers are "wasm-to-js:...".
    return name.startswith(("_ZN", "_R", "dl", "__")) or name in ("memcmp", "memcpy", "memset", "malloc", "free")


def main(folder, top):
    newest = max(glob.glob(os.path.join(folder, "*.cpuprofile")), key=os.path.getmtime)
    profile = json.load(open(newest))
    nodes = {n["id"]: n for n in profile["nodes"]}
    parent = {c: n["id"] for n in profile["nodes"] for c in n.get("children", [])}
    own, on_stack = collections.Counter(), collections.Counter()
    total = module = 0
    for sample in profile["samples"]:
        total += 1
        leaf = nodes[sample]["callFrame"]["functionName"]
        if not is_module(leaf):
            continue
        module += 1
        own[demangle(leaf)] += 1
        seen, i = set(), sample
        while i is not None:
            name = nodes[i]["callFrame"]["functionName"]
            if is_module(name) and name not in seen:
                seen.add(name)
                on_stack[demangle(name)] += 1
            i = parent.get(i)
    print(f"{module} of {total} samples in the module's code ({100 * module / max(total, 1):.0f}%); shares below are of those")
    print("\nown samples:")
    for name, n in own.most_common(top):
        print(f"{100 * n / module:6.1f}%  {name[:150]}")
    print("\non the stack:")
    for name, n in on_stack.most_common(top):
        print(f"{100 * n / module:6.1f}%  {name[:150]}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30)
