"""The folders are the architecture: each layer imports only what lies
below it. Every import of the package is read (function-level ones too),
so a shortcut taken inside a function shows here as well.

    core                        imports no other part of berth
    net, daemon, proxy          core only, and not each other
    lifecycle                   the three above
    login, ops                  anything below them
    slurm                       the layers below lifecycle, and lifecycle (not login or ops)
    cli, entry                  on top: nothing imports them
"""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(__file__), "..", "..", "src", "berth")
ALLOWED = {
    "core": {"core"},
    "net": {"core", "net"},
    "daemon": {"core", "daemon"},
    "proxy": {"core", "proxy"},
    "lifecycle": {"core", "net", "daemon", "proxy", "lifecycle"},
    "login": {"core", "net", "daemon", "proxy", "lifecycle", "login"},
    "ops": {"core", "net", "daemon", "proxy", "lifecycle", "login", "ops"},
    "slurm": {"core", "net", "daemon", "proxy", "lifecycle", "slurm"},
}


def _imports(path):
    """The parts of berth a module imports: 'core', 'cli', ... ('' for berth itself: __version__)."""
    tree = ast.parse(open(path).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.add("relative")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "berth":
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("berth.")}
    return found - {"__version__"}


def _modules():
    for dirpath, _, files in os.walk(PACKAGE):
        layer = os.path.relpath(dirpath, PACKAGE)
        for name in files:
            if name.endswith(".py"):
                yield (layer if layer != "." else ""), os.path.join(dirpath, name)


def test_each_layer_imports_only_what_lies_below_it():
    wrong = []
    for layer, path in _modules():
        imported = _imports(path)
        if "relative" in imported:
            wrong.append(f"{os.path.relpath(path, PACKAGE)}: a relative import (write berth.<layer>.<module>)")
        if layer:
            for part in sorted(imported - ALLOWED[layer] - {"relative"}):
                wrong.append(f"{os.path.relpath(path, PACKAGE)} ({layer}) imports berth.{part}")
    assert wrong == [], "\n".join(wrong)


def test_every_module_lies_in_a_layer():
    top = sorted(n for n in os.listdir(PACKAGE) if n.endswith(".py"))
    assert top == ["__init__.py", "__main__.py", "cli.py", "entry.py"], top
    assert sorted(n for n in os.listdir(PACKAGE) if os.path.isdir(os.path.join(PACKAGE, n))
                  and n not in ("data", "__pycache__")) == sorted(ALLOWED)


def test_layer_packages_stay_empty_so_the_login_path_stays_light():
    for layer in ALLOWED:
        with open(os.path.join(PACKAGE, layer, "__init__.py")) as f:
            assert f.read().strip() == "", f"berth/{layer}/__init__.py imports on every login"


def test_the_check_sees_a_shortcut_inside_a_function(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from berth.ops import status\n    from berth import __version__\n")
    assert _imports(str(path)) == {"ops"}
