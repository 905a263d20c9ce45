"""Integration tests name the docker CLI they run (Debian's, or each one in
turn through the docker_cli fixture), never whichever `docker` comes first
on PATH: the suite once passed only because a newer CLI came first."""

import ast
import os
import re

INTEGRATION = os.path.join(os.path.dirname(__file__), "..", "integration")
# a shell command line that starts a bare `docker` (ssh's command, bash -lc, an interactive login's input)
SHELL_DOCKER = re.compile(r'(^|[;&|("]\s*)docker\s+(-\S+\s+)*(ps|info|run|exec|build|images?|cp|version|inspect|'
                          r'pull|push|load|save|import|network|volume|logs|start|stop|create|rm|rmi|tag|system)\b')


def _bare_dockers(source):
    """(line, text) of each place that runs a `docker` found on PATH."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.List):  # an argv
            found += [(e.lineno, e.value) for e in node.elts if isinstance(e, ast.Constant) and e.value == "docker"]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) != "which":  # ssh(user, "docker", ...)
            found += [(a.lineno, a.value) for a in node.args if isinstance(a, ast.Constant) and a.value == "docker"]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                and SHELL_DOCKER.search(node.value):
            found.append((node.lineno, node.value))
    return sorted(found)


def test_no_integration_test_runs_the_first_docker_on_path():
    bare = []
    for name in sorted(os.listdir(INTEGRATION)):
        if name.endswith(".py"):
            with open(os.path.join(INTEGRATION, name)) as f:
                bare += [f"{name}:{line}: {text!r}" for line, text in _bare_dockers(f.read())]
    assert bare == [], "name the CLI (DEBIAN_CLI or the docker_cli fixture):\n" + "\n".join(bare)


def test_the_check_finds_what_it_looks_for():
    source = ('"""docker build in a docstring is prose."""\n'
              'subprocess.run(["docker", "-H", sock, "ps"])\n'
              'sshd.ssh(user, "docker", "info")\n'
              'sshd.ssh(user, \'bash -lc "docker ps; echo $DOCKER_HOST"\')\n'
              'login(sshd, user, "docker ps; exit 0")\n'
              'assert "berth: docker cp to or from" in err\n'
              'print("still starting; docker will work in a moment", shutil.which("docker"))\n'
              'for heavy in ("docker", "iptc"): pass\n')
    assert [line for line, _ in _bare_dockers(source)] == [2, 3, 4, 5]
