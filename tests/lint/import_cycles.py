"""Fails if the files of a crate import each other in a cycle (`use crate::a` in b.rs and
`use crate::b` in a.rs, or longer loops), which the design rules out: each crate's modules
form a DAG. Reads `use crate::…` and `crate::…::` paths, brace groups (`use crate::{a, b::C}`)
included; a name the crate root re-exports (`pub use step::BoundStep` in lib.rs, then
`use crate::BoundStep`) counts as the module it comes from; `super::` inside a folder
module counts as its parent; comments and unit-test modules do not count. Run by .ci/run."""

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CRATES = ["connectors", "operators", "engine", "jobs", "service", "cli", "tests/fuzz"]


def module_of(src: Path, file: Path) -> str:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts) or "crate"


def code_of(file: Path) -> str:
    # Code only: doc comments name other modules in links, which is not a dependency, and
    # a file's unit tests (its `#[cfg(test)]` module, last by convention) may use anything.
    source = file.read_text().split("#[cfg(test)]\nmod tests", 1)[0]
    return "\n".join(line.split("//", 1)[0] for line in source.splitlines())


def group_items(text: str, start: int) -> list:
    """The top-level items of the brace group opening at `text[start]`, as paths."""
    depth, item, items = 0, "", []
    for char in text[start:]:
        if char == "{":
            depth += 1
            if depth == 1:
                continue
        elif char == "}":
            depth -= 1
            if depth == 0:
                break
        if depth == 1 and char == ",":
            items.append(item)
            item = ""
        else:
            item += char
    items.append(item)
    return [re.sub(r"\s+", "", i).split("{", 1)[0].rstrip(":") for i in items if i.strip()]


def crate_paths(text: str) -> list:
    """Every `crate::…` path in `text`, brace groups expanded one level."""
    paths = []
    for match in re.finditer(r"\bcrate::((?:[A-Za-z_][A-Za-z0-9_]*::)*)(\{|[A-Za-z_][A-Za-z0-9_]*)", text):
        prefix, last = match.group(1), match.group(2)
        if last == "{":
            paths += [prefix + item for item in group_items(text, match.end(2) - 1)]
        else:
            paths.append(prefix + last)
    return paths


def reexports(src: Path) -> dict:
    """Names the crate root re-exports, mapped to the module they come from."""
    names = {}
    for root in ("lib.rs", "main.rs"):
        if not (src / root).exists():
            continue
        text = code_of(src / root)
        for match in re.finditer(r"pub use ([a-z_][a-z0-9_]*)::(\{[^;]*\}|[A-Za-z_][A-Za-z0-9_]*)\s*;", text):
            module, items = match.group(1), match.group(2)
            for item in items.strip("{}").split(","):
                name = item.strip().split(" as ")[-1].strip()
                if name:
                    names[name] = module
    return names


def imports(src: Path, file: Path, modules: set, exported: dict) -> set:
    text = code_of(file)
    me = module_of(src, file)
    found = set()
    for path in crate_paths(text):
        parts = [p for p in path.split("::") if p]
        # The longest prefix that names a module of this crate, else a root re-export.
        for end in range(len(parts), 0, -1):
            name = "::".join(parts[:end])
            if name in modules:
                found.add(name)
                break
        else:
            if parts and parts[0] in exported:
                found.add(exported[parts[0]])
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
    exported = reexports(src)
    graph = {module_of(src, f): imports(src, f, modules, exported) for f in files}
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
