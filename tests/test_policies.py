"""The example policies in policies/ validate with janitor's own loader.

Truncate and archive are being added on other branches; until they are all here, each file
is checked with only the policies whose actions (and quota's `then:`) this build has, as
`janitor validate -c` sees them. Once every action exists, the filter keeps everything and
this is the whole-directory check.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO, janitor_cmd

from janitor.actions import ACTIONS

POLICY_FILES = sorted((REPO / "policies").glob("*.y*ml"))


def _implemented(policy: dict) -> bool:
    return policy["action"] in ACTIONS and (policy["action"] != "quota" or policy.get("then", "delete") in ACTIONS)


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_example_policies_validate(path: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    kept = [p for p in data["policies"] if _implemented(p)]
    if not kept:
        pytest.skip(f"{path.name}: no policy whose actions are all in this build")
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump({**data, "policies": kept}, allow_unicode=True, sort_keys=False))
    result = janitor_cmd("validate", "-c", str(copy))
    assert result.returncode == 0, result.stderr
    for policy in kept:
        assert policy["name"] in result.stdout


def test_quota_and_when_disk_above_examples_are_covered() -> None:
    names = {p["name"] for f in POLICY_FILES for p in yaml.safe_load(f.read_text())["policies"] if _implemented(p)}
    assert {"tts-cache-disk", "heygem-tmp-zips", "id-photo-old-rotations"} <= names
    if "archive" in ACTIONS:
        assert "heygem-outputs-quota" in names


@pytest.mark.skipif("archive" in ACTIONS, reason="the archive action is in this build")
def test_quota_then_archive_fails_only_for_the_missing_archive_action(tmp_path: Path) -> None:
    path = REPO / "policies" / "heygem-digital-human.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    quota = [p for p in data["policies"] if p["action"] == "quota"]
    copy = tmp_path / "quota.yaml"
    copy.write_text(yaml.safe_dump({**data, "policies": quota}, allow_unicode=True, sort_keys=False))
    result = janitor_cmd("validate", "-c", str(copy))
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if not line.startswith("janitor:")]
    assert len(problems) == 1 and problems[0].endswith("policies[0].then: archive action not available in this janitor")
