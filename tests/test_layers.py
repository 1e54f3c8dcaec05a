"""The README's module picture holds: each module imports (relatively) only from its own layer or above."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "embedensemble"


def _layers() -> dict[str, int]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index("**Where the code lives.**") :]
    block = block[block.index("```\n") + 4 :]
    block = block[: block.index("```")]
    rank, layer = {}, -1
    for line in block.splitlines():
        names_part = re.split(r"\s{2,}", line.strip())[0] if line.strip() else ""
        if not line.startswith(" "):
            layer += 1
        elif not re.match(r"^  \S", line):  # a description continued on its own line
            continue
        for name in names_part.split():
            rank[name.rstrip("/")] = layer
    return rank


def _relative_imports(path: Path) -> list[tuple[str, int]]:
    package = path.relative_to(PACKAGE).parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = list(package)[: len(package) - (node.level - 1)]
            full = base + (node.module.split(".") if node.module else [])
            for target in [full[0]] if full else [alias.name for alias in node.names]:
                found.append((target, node.lineno))
    return found


def test_every_module_is_in_the_readme_picture():
    rank = _layers()
    tops = {p.relative_to(PACKAGE).with_suffix("").parts[0] for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert tops - set(rank) == set(), "modules missing from README's 'Where the code lives'"


def test_imports_go_only_upward():
    rank = _layers()
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).with_suffix("").parts[0]
        if top == "__init__":
            continue
        for target, line in _relative_imports(path):
            if target in rank and target != top and rank[target] > rank[top]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target} (a lower layer)")
    assert not wrong, "\n".join(wrong)
