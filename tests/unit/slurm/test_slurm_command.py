"""The hooks' exit codes, which Slurm reads: a non-zero Prolog or Epilog
drains the node, a non-zero TaskProlog cancels the task."""

import io
import os

from berth.slurm import command, hooks


def write_config(tmp_path, text):
    path = tmp_path / "berth.toml"
    path.write_text(text)
    return str(path)


def test_the_task_prolog_points_docker_at_the_jobs_socket_when_there_is_one(tmp_path):
    run_dir = tmp_path / "run"
    me = __import__("pwd").getpwuid(os.getuid()).pw_name
    os.makedirs(run_dir / me)
    cfg = write_config(tmp_path, f'[paths]\nrun_dir = "{run_dir}"\n')
    out = io.StringIO()
    assert command.main("task-prolog", cfg, out, environ={"SLURM_JOB_ID": "42"}) == 0
    assert out.getvalue() == ""  # no socket: the login's DOCKER_HOST stays
    (run_dir / me / "job-42.sock").write_text("")
    assert command.main("task-prolog", cfg, out, environ={"SLURM_JOB_ID": "42"}) == 0
    assert out.getvalue() == f"export DOCKER_HOST=unix://{run_dir}/{me}/job-42.sock\n"


def test_the_task_prolog_never_fails_a_task(tmp_path, capsys):
    cfg = write_config(tmp_path, "[paths]\nrun_dir = 5\n")
    assert command.main("task-prolog", cfg, io.StringIO(), environ={"SLURM_JOB_ID": "42"}) == 0
    assert capsys.readouterr().err.startswith("berth: no job socket for this task (ConfigError")
    assert hooks.task_prolog("/run/berth", {}, os.getuid()) == []


def test_a_config_that_does_not_load_is_a_broken_node(tmp_path):
    cfg = write_config(tmp_path, "[paths]\nrun_dir = 5\n")
    for hook in ("prolog", "epilog"):
        assert command.main(hook, cfg, io.StringIO(), environ={"SLURM_JOB_ID": "42"}) == 1


def test_a_hook_without_slurmds_environment_does_nothing_and_drains_nothing(tmp_path):
    if os.geteuid() != 0:
        assert command.main("prolog", write_config(tmp_path, ""), io.StringIO(), environ={}) == 1  # needs root
        return
    cfg = write_config(tmp_path, f'[paths]\nrun_dir = "{tmp_path}/run"\nstate_dir = "{tmp_path}/state"\n'
                                 f'log_dir = "{tmp_path}/log"\n')
    for hook in ("prolog", "epilog"):
        assert command.main(hook, cfg, io.StringIO(), environ={"SLURM_JOB_USER": "alice"}) == 0
    assert not os.path.exists(tmp_path / "run")


def test_a_user_berth_does_not_serve_is_nothing_to_do(tmp_path):
    if os.geteuid() != 0:
        return
    cfg = write_config(tmp_path, f'[paths]\nrun_dir = "{tmp_path}/run"\nstate_dir = "{tmp_path}/state"\n'
                                 f'log_dir = "{tmp_path}/log"\n')
    env = {"SLURM_JOB_ID": "42", "SLURM_JOB_USER": "root", "SLURM_JOB_UID": "0"}
    for hook in ("prolog", "epilog"):
        assert command.main(hook, cfg, io.StringIO(), environ=env) == 0
    assert not os.path.exists(tmp_path / "run")


def test_the_task_prologs_wrapper_line_skips_the_cli():
    from berth import entry

    assert entry.task_prolog_config(["slurm", "task-prolog", "--config", "/etc/b.toml"]) == "/etc/b.toml"
    assert entry.task_prolog_config(["slurm", "task-prolog"]) == ""
    for other in (["slurm", "prolog", "--config", "x"], ["slurm", "task-prolog", "--debug"],
                  ["slurm", "task-prolog", "--config"], ["up", "alice"]):
        assert entry.task_prolog_config(other) is None
