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


def _imported_modules(path):
    """The dotted names of the berth modules a module imports (what comes
    from a layer's package is a module: the packages are empty)."""
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("berth."):
            package = os.path.isdir(os.path.join(PACKAGE, *node.module.split(".")[1:]))
            yield from ([f"{node.module}.{a.name}" for a in node.names] if package else [node.module])
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("berth."))


def _exists(module):
    where = os.path.join(PACKAGE, *module.split(".")[1:])
    return os.path.isfile(where + ".py") or os.path.isfile(os.path.join(where, "__init__.py"))


def test_every_import_names_a_module_that_is_there():
    """A module moved or split (lifecycle.actions, say) leaves no import of
    its old name behind, not even one inside a function that only runs on
    a Slurm node or at a login, nor in a test or benchmark."""
    repo = os.path.join(PACKAGE, "..", "..")
    files = [path for _, path in _modules()] + [
        os.path.join(dirpath, name) for top in ("tests", "benchmarks")
        for dirpath, _, names in os.walk(os.path.join(repo, top)) for name in names if name.endswith(".py")]
    missing = [f"{os.path.relpath(path, repo)} imports {module}"
               for path in files for module in _imported_modules(path) if not _exists(module)]
    assert missing == [], "\n".join(missing)


def test_the_check_sees_an_import_of_a_module_that_is_gone(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from berth.lifecycle import gone\n    from berth.lifecycle.up import up\n")
    assert [m for m in _imported_modules(str(path)) if not _exists(m)] == ["berth.lifecycle.gone"]
