"""Trigger files: valid ones load, invalid ones are refused with their line and reason."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deploy.commands import hookstream_argv
from processors.triggers.rules import TriggerFileError, parse_trigger_file

VALID = """\
targets:
  ci:
    url: https://ci.example.com/hookstream
    secret_env: CI_DISPATCH_SECRET
    max_attempts: 3
workflows:
  deploy-api:
    on:
      - github:acme/api:pull_request.merged
      - event: github:acme/api:push
        branches: [main]
        paths: ["services/api/*"]
    targets: [ci]
  release:
    on:
      - event: github:acme/*:push.tag
        tags: ["v*"]
  deploy:
    commands:
      - command: deploy
        repositories: ["acme/*"]
        roles: [deployer]
"""


def test_a_valid_file_loads_with_yaml_1_2_booleans() -> None:
    triggers = parse_trigger_file(VALID)
    deploy_api = triggers.workflows["deploy-api"]
    # 'on' stays a key (YAML 1.1 would have read it as the boolean True).
    assert [t.event for t in deploy_api.on] == [
        "github:acme/api:pull_request.merged",
        "github:acme/api:push",
    ]
    assert deploy_api.on[1].branches == ("main",)
    assert deploy_api.on[1].parts == ("acme", "api", "push", None)
    assert triggers.targets["ci"].max_attempts == 3
    assert triggers.workflows["deploy"].commands[0].associations == (
        "OWNER",
        "MEMBER",
        "COLLABORATOR",
    )


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (VALID.replace("github:acme/api:pull_request.merged", "acme/api:pull_request.merged"),
         9, "is not a trigger"),
        (VALID.replace("        branches: [main]", "        branchs: [main]"),
         11, "branchs: Extra inputs are not permitted"),
        (VALID.replace("targets: [ci]", "targets: [cd]"), 13, "unknown target 'cd'"),
        (VALID.replace("    url: https://ci", "    url: ftp://ci"), 3, "url"),
        (VALID.replace("      - command: deploy", "      - command: Deploy!"), 20, "command"),
        (VALID.replace("        tags: [\"v*\"]\n", "        tags: [\"v*\"\n"), 18,
         "not valid YAML: expected ',' or ']', but got '<scalar>' (while parsing a flow "
         "sequence on line 17)"),
        (VALID + "  empty: {}\n", 23, "needs 'on' triggers or 'commands'"),
        ("- just\n- a list\n", 1, "must be a mapping"),
        ("targets: {}\n", 1, "workflows: Field required"),
    ],
)  # fmt: skip
def test_invalid_files_name_the_line_and_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(TriggerFileError) as info:
        parse_trigger_file(text, "triggers.yml")
    assert info.value.line == line, str(info.value)
    assert reason in info.value.reason
    assert str(info.value).startswith(f"triggers.yml:{line}: ")


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*hookstream_argv(), "triggers", "check", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_triggers_check_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text(VALID)
    result = run_check(good)
    assert result.returncode == 0
    assert "ok: 3 workflows, 3 triggers, 1 commands, 1 targets" in result.stdout

    bad = tmp_path / "bad.yml"
    bad.write_text(VALID.replace("targets: [ci]", "targets: [nope]"))
    result = run_check(bad)
    assert result.returncode == 1
    assert f"{bad}:13: workflows.deploy-api.targets: unknown target 'nope'" in result.stderr
    result = run_check(tmp_path / "missing.yml")
    assert result.returncode == 1
    assert "cannot read" in result.stderr


def test_the_readme_example_is_a_valid_trigger_file() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    triggers = parse_trigger_file(example, "README.md")
    assert set(triggers.workflows) == {"deploy-api", "release", "pr-checks", "deploy"}
    deploy = triggers.workflows["deploy"]
    assert deploy.check_name("deploy") == "deploy"
    assert [a.identifier for a in deploy.check_actions] == ["rollback"]
