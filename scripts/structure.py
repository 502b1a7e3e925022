#!/usr/bin/env python3
"""The shape of src/: bare `pub` items, import cycles between files, imports that run up the
data path, and functions longer than 80 lines. Exits 1 when there is a cycle, an arrow up or
a long function, so CI keeps them at zero.

    python3 scripts/structure.py            # the figures, then each finding
    python3 scripts/structure.py --quiet    # the figures only

Read from the text of `use` lines and `crate::`/`super::` paths, each resolved through
re-exports to the file that defines the name. Unit tests (`#[cfg(test)] mod tests`) are left
out: they may import what they test from anywhere.
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
LONGEST = 80

# The data path, from the edge down: a file may import from its own layer or any below it.
LAYERS = [
    ["main", "cli", "testkit"],
    ["lib"],
    ["control", "jobs", "notify"],
    ["http", "app"],
    ["central", "summary", "cluster"],
    ["ingest", "metrics"],
    ["attribution"],
    ["store"],
    ["link"],
    ["config"],
    ["privacy"],
    ["rows", "identity"],
    ["campaign", "text", "clock", "files", "crypto"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}

ITEM = re.compile(
    r"^\s*(pub(?:\([^)]*\))?\s+)?(?:async\s+|const\s+|unsafe\s+|extern\s+\"C\"\s+)*"
    r"(fn|struct|enum|trait|type|const|static|mod|union)\s+([A-Za-z_][A-Za-z0-9_]*)"
)
USE = re.compile(r"^\s*(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.M | re.S)
INLINE = re.compile(r"\b((?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def module_of(path):
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts in (["lib"], ["main"]):
        return ()
    return tuple(parts)


def without_tests(text):
    """The code of a file: its unit tests and comments left out."""
    cut = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod tests\b", text, re.M)
    text = text[: cut.start()] if cut else text
    return re.sub(r"^\s*//.*$", "", text, flags=re.M)


def expand(tree):
    """`a::{b, c::{d, e}}` as its paths; `self` inside braces names the prefix."""
    tree = re.sub(r"\s+", "", tree)
    if "{" not in tree:
        return [tree]
    head, rest = tree.split("{", 1)
    body = rest[: rest.rfind("}")]
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    out = []
    for part in filter(None, parts):
        for path in expand(part):
            out.append(head.rstrip(":") if path == "self" else head + path)
    return out


class Crate:
    def __init__(self):
        self.files = {}
        for path in sorted(SRC.rglob("*.rs")):
            self.files[module_of(path)] = path
        self.files[()] = SRC / "lib.rs"
        self.text = {m: without_tests(p.read_text()) for m, p in self.files.items()}
        self.defined = {}
        self.reexports = {}
        for module, text in self.text.items():
            names = set()
            for line in text.splitlines():
                found = ITEM.match(line)
                if found:
                    names.add(found.group(3))
            self.defined[module] = names
            exports = {}
            for vis, tree in USE.findall(text):
                if not vis:
                    continue
                for path in expand(tree):
                    name = path.split("::")[-1].split(" as ")[-1]
                    exports[name] = self.absolute(module, path.split(" as ")[0])
            self.reexports[module] = exports

    def absolute(self, module, path):
        """`path` as seen from `module`, from the crate's root; None outside the crate."""
        parts = path.split("::")
        if parts[0] == "crate":
            return parts[1:]
        if parts[0] in ("super", "self"):
            base = list(module)
            while parts and parts[0] in ("super", "self"):
                if parts.pop(0) == "super":
                    base.pop()
            return base + parts
        if tuple(module) + (parts[0],) in self.files:
            return list(module) + parts  # a child module, named without `self::`
        return None

    def resolve(self, parts, depth=0):
        """The module whose file defines what `parts` names."""
        if parts is None or depth > 8:
            return None
        for cut in range(len(parts), -1, -1):
            module = tuple(parts[:cut])
            if module in self.files:
                rest = parts[cut:]
                if not rest:
                    return module
                name = rest[0]
                if name in self.reexports[module]:
                    target = self.reexports[module][name]
                    if target is None:
                        return module
                    return self.resolve(target + rest[1:], depth + 1) or module
                return module
        return None

    def arrows(self):
        out = {}
        for module, text in self.text.items():
            targets = out.setdefault(module, set())
            paths = []
            for _, tree in USE.findall(text):
                paths += [p.split(" as ")[0] for p in expand(tree)]
            paths += INLINE.findall(text)
            for child in {m[-1] for m in self.files if m[:-1] == module and m}:
                paths += ["self::" + p for p in re.findall(
                    rf"(?<![\w:]){child}(?:::[A-Za-z_][A-Za-z0-9_]*)+", text)]
            for path in paths:
                if not path.startswith(("crate", "super", "self")):
                    continue
                target = self.resolve(self.absolute(module, path))
                if target is not None and target != module and target != ():
                    targets.add(target)
        return out


def cycles(arrows):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on.add(node)
        for nxt in arrows.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10000)
    for node in list(arrows):
        if node not in index:
            visit(node)
    return found


def long_functions(crate):
    out = []
    for module, text in crate.text.items():
        lines = text.splitlines()
        for number, line in enumerate(lines):
            if not re.match(r"^\s*(pub(\([^)]*\))?\s+)?(async\s+|const\s+|unsafe\s+)*fn\s", line):
                continue
            indent = len(line) - len(line.lstrip())
            end = number
            while end < len(lines):
                closing = lines[end]
                if closing.rstrip().endswith(";") and end == number:
                    break  # a declaration without a body
                if closing.startswith(" " * indent + "}") and len(closing) - len(
                    closing.lstrip()
                ) == indent:
                    break
                end += 1
            length = end - number + 1
            if length > LONGEST:
                name = re.search(r"fn\s+(\w+)", line).group(1)
                out.append((length, f"{crate.files[module].relative_to(SRC.parent)}::{name}"))
    return sorted(out, reverse=True)


def name(module):
    return "::".join(module) or "lib"


def main():
    crate = Crate()
    arrows = crate.arrows()
    bare = restricted = 0
    for text in crate.text.values():
        for line in text.splitlines():
            item = ITEM.match(line)
            if item and item.group(1) and item.group(2) != "mod":
                if item.group(1).strip() == "pub":
                    bare += 1
                else:
                    restricted += 1
    found = cycles(arrows)
    up = sorted(
        (name(a), name(b))
        for a, targets in arrows.items()
        for b in targets
        if a and b and RANK.get(a[0], 0) > RANK.get(b[0], 0)
    )
    long = long_functions(crate)
    print(f"items: {bare} bare pub, {restricted} pub(crate) or narrower (fields and modules aside)")
    print(f"cycles: {len(found)}; arrows up the data path: {len(up)}; "
          f"functions over {LONGEST} lines: {len(long)}")
    if "--quiet" not in sys.argv:
        for group in found:
            print("cycle:", " ".join(name(m) for m in group))
            members = set(group)
            for a in group:
                inside = sorted(name(b) for b in arrows[a] if b in members)
                print(f"    {name(a)} -> {', '.join(inside)}")
        for a, b in up:
            print(f"up: {a} -> {b}")
        for length, where in long:
            print(f"long: {where} ({length} lines)")
    return 1 if found or up or long else 0


if __name__ == "__main__":
    sys.exit(main())
