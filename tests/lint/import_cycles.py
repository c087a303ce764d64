"""Fails if the files of a crate import each other in a cycle (`use crate::a` in b.rs and
`use crate::b` in a.rs, or longer loops), which the design rules out: each crate's modules
form a DAG. Reads `use crate::…` and `crate::…::` paths; `super::` inside a folder module
counts as its parent; comments and unit-test modules do not count. Run by .ci/run."""

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CRATES = ["connectors", "operators", "engine", "jobs", "tests/fuzz"]


def module_of(src: Path, file: Path) -> str:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts) or "crate"


def imports(src: Path, file: Path, modules: set) -> set:
    # Code only: doc comments name other modules in links, which is not a dependency, and
    # a file's unit tests (its `#[cfg(test)]` module, last by convention) may use anything.
    source = file.read_text().split("#[cfg(test)]\nmod tests", 1)[0]
    text = "\n".join(line.split("//", 1)[0] for line in source.splitlines())
    me = module_of(src, file)
    found = set()
    for match in re.finditer(r"crate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", text):
        path = match.group(1).split("::")
        # The longest prefix that names a module of this crate.
        for end in range(len(path), 0, -1):
            name = "::".join(path[:end])
            if name in modules:
                found.add(name)
                break
    for match in re.finditer(r"\bsuper::([a-z_][a-z0-9_]*)", text):
        parent = me.rsplit("::", 1)[0] if "::" in me else ""
        name = f"{parent}::{match.group(1)}" if parent else match.group(1)
        if name in modules:
            found.add(name)
    found.discard(me)
    # A module may use its own submodules; only imports between siblings or upwards matter.
    return {m for m in found if not m.startswith(me + "::")}


def cycles_in(crate: str) -> list:
    src = REPO / crate / "src"
    files = sorted(src.rglob("*.rs"))
    modules = {module_of(src, f) for f in files}
    graph = {module_of(src, f): imports(src, f, modules) for f in files}
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target] if target in path else [node, target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def main() -> int:
    bad = False
    for crate in CRATES:
        for cycle in cycles_in(crate):
            bad = True
            print(f"{crate}: import cycle {' -> '.join(cycle)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
