"""The example policies in policies/ validate with janitor's own loader, alone and together
(as /etc/janitor/ would merge them), and plan cleanly against paths that do not exist here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fsutil import REPO, janitor_cmd

POLICY_FILES = sorted((REPO / "policies").glob("*.y*ml"))


def test_there_are_example_policies_for_the_three_services() -> None:
    assert {p.name for p in POLICY_FILES} >= {"heygem-digital-human.yaml", "id-photo.yaml", "tts-service.yaml"}


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_each_example_file_validates(path: Path) -> None:
    result = janitor_cmd("validate", "-c", str(path))
    assert result.returncode == 0, result.stderr
    for policy in yaml.safe_load(path.read_text(encoding="utf-8"))["policies"]:
        assert policy["name"] in result.stdout


def test_the_directory_validates_merged() -> None:
    result = janitor_cmd("validate", "-c", str(REPO / "policies"), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["files"]) == len(POLICY_FILES)
    assert {"heygem-outputs-archive", "heygem-outputs-quota", "heygem-tmp-zips", "heygem-live-log",
            "id-photo-app-log", "id-photo-old-rotations", "tts-logs", "tts-cache-disk"} <= set(data["policies"])


def test_every_action_is_shown_by_an_example() -> None:
    actions = {p["action"] for f in POLICY_FILES for p in yaml.safe_load(f.read_text())["policies"]}
    assert actions >= {"archive", "quota", "delete", "truncate"}
