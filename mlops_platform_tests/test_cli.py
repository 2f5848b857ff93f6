"""The `mlops` command line: every command and option the argparse version had, help per command, completion, and
a fast `--help` (no Dagster, MLflow or Polars imported to print it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mlops_platform.cli import main

# Every command and its options: removing or renaming one breaks scripts and the README.
COMMANDS = {
    ("land",): ["--usecase", "--start", "--days"],
    ("run",): ["--usecase", "--start", "--days", "--skip-training", "--bootstrap-days"],
    ("status",): ["--usecase"],
    ("features",): ["--usecase", "--json"],
    ("promote",): ["--model", "--usecase"],
    ("rollback",): ["--model", "--usecase"],
    ("serve",): [],
    ("deploy",): ["--usecase", "--stage"],
    ("drift",): ["--usecase", "--start", "--end", "--json"],
    ("report",): ["--usecase", "--day"],
    ("monitoring", "refresh"): ["--usecase", "--start", "--end"],
    ("inference", "validate"): ["--json"],
    ("alerts", "test"): ["--usecase"],
}


@pytest.mark.parametrize("command", list(COMMANDS), ids=" ".join)
def test_each_command_has_help_naming_its_options(command, capsys):
    assert main([*command, "--help"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"Usage: mlops {' '.join(command)} [OPTIONS]")
    for option in COMMANDS[command]:
        assert option in shown


def test_the_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    assert "--env" in shown
    assert {command[0] for command in COMMANDS} <= {line.split()[0] for line in shown.split("Commands:")[1].splitlines()
                                                    if line.strip()}


def test_a_usage_error_exits_2_and_says_what_is_missing(capsys):
    assert main(["drift", "--start", "2013-01-01"]) == 2
    assert "Missing option '--end'" in capsys.readouterr().err
    assert main(["deploy", "--stage", "canary"]) == 2
    assert "'canary' is not one of 'staging', 'production'" in capsys.readouterr().err


def test_a_configuration_error_exits_2_naming_the_file(capsys):
    assert main(["--env", "no_such_env", "status"]) == 2
    assert "no_such_env.yaml: no such configuration file" in capsys.readouterr().err


def test_bash_completion_completes_commands_and_options():
    def complete(words: str) -> list[str]:
        env = {**os.environ, "_MLOPS_COMPLETE": "bash_complete", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
        done = subprocess.run([sys.executable, "-m", "mlops_platform.cli"], env=env, capture_output=True, text=True,
                              check=False, timeout=60)
        return [line.split(",", 1)[1] for line in done.stdout.splitlines()]

    assert complete("mlops dr") == ["drift"]
    assert complete("mlops deploy --st") == ["--stage"]
    assert complete("mlops deploy --stage ") == ["staging", "production"]


def test_help_imports_no_dagster_mlflow_or_polars():
    script = ("import json, sys\nfrom mlops_platform.cli import main\nassert main(['--help']) == 0\n"
              "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert not loaded & {"dagster", "mlflow", "polars", "pyarrow", "deltalake", "sklearn"}
