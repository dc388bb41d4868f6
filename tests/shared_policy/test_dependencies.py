"""The dependency direction: shared_policy imports no other part of the project."""

from __future__ import annotations

import ast
from pathlib import Path

import shared_policy

OTHER_PARTS = {"sim", "hardware", "fleet", "robot_agent", "benchmarks"}


def test_shared_policy_imports_no_other_part_of_the_project():
    found = []
    for path in sorted(Path(shared_policy.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):  # function-level imports too
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in OTHER_PARTS]
    assert not found, found
