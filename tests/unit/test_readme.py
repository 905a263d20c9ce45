"""The README tells the truth about what the repo has."""

import os
import re

from berth.core import config

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
with open(os.path.join(REPO, "README.md")) as f:
    README = f.read()
with open(os.path.join(REPO, "docs", "architecture.md")) as f:
    ARCHITECTURE = f.read()


def test_configuration_block_is_the_example_config():
    section = README[README.index("## Configuration"):]
    block = section[section.index("```toml\n") + len("```toml\n"):section.index("```\n", 8)]
    assert block == config.example_text()


def test_the_readme_is_read_in_one_sitting():
    assert README.count("\n") <= 300, "the rest goes to docs/, with a line in the README"


def test_every_relative_link_leads_somewhere():
    for name in ["README.md"] + [f"docs/{n}" for n in os.listdir(os.path.join(REPO, "docs")) if n.endswith(".md")]:
        with open(os.path.join(REPO, name)) as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            path = os.path.normpath(os.path.join(REPO, os.path.dirname(name), target))
            assert os.path.exists(path), f"{name} links to {target}, which is not there"


def test_layout_lists_every_module():
    layout = ARCHITECTURE[ARCHITECTURE.index("## Layout"):]
    package = os.path.join(REPO, "src", "berth")
    missing = []
    for dirpath, _, files in os.walk(package):
        layer = os.path.relpath(dirpath, package)
        if layer != "." and not re.search(rf"^  {re.escape(layer)}/", layout, re.M):
            missing.append(f"{layer}/")
        missing += [f"{layer}/{n}" for n in files if n.endswith(".py") and n not in ("__init__.py", "__main__.py")
                    and not re.search(rf"\b{re.escape(n)}", layout)]
    missing = [m for m in missing if "__pycache__" not in m and not m.startswith("data")]
    assert missing == [], f"docs/architecture.md's Layout does not name {missing}"


def test_the_quick_start_commands_exist():
    for script in ("scripts/install.sh", "scripts/test.sh"):
        assert f"./{script}" in README
        assert os.access(os.path.join(REPO, script), os.X_OK)
    with open(os.path.join(REPO, ".ci", "run")) as f:
        assert "./scripts/test.sh" in f.read(), ".ci/run calls the README's test command"
