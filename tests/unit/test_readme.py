"""The README tells the truth about what the repo has."""

import os
import re

from berth import config

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
with open(os.path.join(REPO, "README.md")) as f:
    README = f.read()


def test_configuration_block_is_the_example_config():
    section = README[README.index("## Configuration"):]
    block = section[section.index("```toml\n") + len("```toml\n"):section.index("```\n", 8)]
    assert block == config.example_text()


def test_layout_lists_every_module():
    layout = README[README.index("## Layout"):]
    package = os.path.join(REPO, "src", "berth")
    modules = {n for n in os.listdir(package) if n.endswith(".py") and n not in ("__init__.py", "__main__.py")}
    missing = sorted(m for m in modules if not re.search(rf"\b{re.escape(m)}", layout))
    assert missing == [], f"README's Layout does not name {missing}"


def test_the_quick_start_commands_exist():
    for script in ("scripts/install.sh", "scripts/test.sh"):
        assert f"./{script}" in README
        assert os.access(os.path.join(REPO, script), os.X_OK)
    with open(os.path.join(REPO, ".ci", "run")) as f:
        assert "./scripts/test.sh" in f.read(), ".ci/run calls the README's test command"
