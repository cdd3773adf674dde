"""nnrun stands on the frameworks' public surface: no private module or name of another package, no assignment
to another package's functions or classes. A patch release of Hydra, OmegaConf or torch must not break it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
OURS = ("nnrun", "hydra_plugins.nnrun")


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def _ours(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in OURS)


def findings(tree: ast.AST) -> list[str]:
    """Imports of private modules or names of other packages; attributes that start with one underscore, but
    an object's own (`self._x`) and torch's _foreach_* ops (which torch.optim itself uses); assignments to
    another package's attributes."""
    imported: dict[str, str] = {}  # local name -> the other package's dotted name it stands for
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _ours(alias.name):
                    if _private(alias.name):
                        found.append(f"import {alias.name}")
                    imported[(alias.asname or alias.name).split(".")[0]] = alias.name.split(".")[0] \
                        if alias.asname is None else alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and not _ours(node.module):
            for alias in node.names:
                if _private(node.module) or _private(alias.name):
                    found.append(f"from {node.module} import {alias.name}")
                imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        # Any object's attribute that starts with one underscore, but an object's own (self, cls).
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                and not node.attr.startswith("_foreach_") \
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            found.append(f"{ast.unparse(node)}")
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                root = target
                while isinstance(root, (ast.Attribute, ast.Subscript)):
                    root = root.value
                # sys's attributes are the process's state, set as they are meant to be (sys.argv for Hydra).
                if isinstance(target, ast.Attribute) and isinstance(root, ast.Name) and root.id in imported \
                        and imported[root.id] != "sys":
                    found.append(f"assignment to {ast.unparse(target)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" \
                and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in imported:
            found.append(f"setattr on {node.args[0].id}")
    return found


def test_src_uses_no_private_name_of_another_package_and_patches_none():
    problems = {str(path.relative_to(SRC)): findings(ast.parse(path.read_text(encoding="utf-8")))
                for path in sorted(SRC.rglob("*.py"))}
    assert {path: found for path, found in problems.items() if found} == {}


def test_the_check_finds_what_it_looks_for():
    code = """
import torch
from hydra._internal.hydra import Hydra
from omegaconf import base
from omegaconf._utils import get_omega_conf_dumper
import atexit
import sys
sys.argv = ["nnrun"]
base.parse = 1
Hydra.get_mode = lambda *a: None
atexit._run_exitfuncs()
torch._foreach_copy_([], [])
handler._open()
config._get_node("hydra")._set_parent(config)
self._own = 1
setattr(base, "parse", 2)
"""
    assert sorted(findings(ast.parse(code))) == sorted([
        "from hydra._internal.hydra import Hydra", "from omegaconf._utils import get_omega_conf_dumper",
        "atexit._run_exitfuncs", "assignment to base.parse", "assignment to Hydra.get_mode", "handler._open",
        'config._get_node', "config._get_node('hydra')._set_parent", "setattr on base"])
