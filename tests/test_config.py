"""Policy loading: every bad input names file, line and field; good input becomes typed objects."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from janitor.config import load_config
from janitor.errors import ConfigError

HEAD = "version: 1\nsettings:\n  state_dir: /tmp/janitor-test-state\npolicies:\n"


def policy(body: str) -> str:
    """A file whose first policy starts at line 5."""
    return HEAD + textwrap.indent(textwrap.dedent(body), "  ")


def problems_of(tmp_path: Path, text: str, name: str = "p.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [p.removeprefix(f"{path}:") for p in info.value.problems]


BAD = [
    # (policy text, expected "line: message")
    (
        "- name: a\n  path: /srv/x\n  action: delete\n  older_than: 7 dayz\n",
        "8: policies[0].older_than: '7 dayz' is not a duration (examples: 7d, 12h, 30m)",
    ),
    (
        "- name: a\n  path: /srv/x\n  action: delete\n  olderthan: 3d\n",
        "8: policies[0].olderthan: unknown key (did you mean 'older_than'?)",
    ),
    (
        "- name: a\n  path: /srv/x\n  action: delete\n  larger_than: 12 parsecs\n",
        "8: policies[0].larger_than: '12 parsecs' is not a size (examples: 512, 100K, 20MB, 1.5GiB)",
    ),
    (
        "- name: a\n  path: /srv/x\n  action: delete\n  when_disk_above: 80\n",
        "8: policies[0].when_disk_above: 80 is not a percent (examples: 80%, 92.5%)",
    ),
    (
        "- name: a\n  path: /srv/x\n  action: delete\n  when_disk_above: 180%\n",
        "8: policies[0].when_disk_above: '180%' is not a percent: it is above 100%",
    ),
    (
        "- name: a\n  path: relative/dir\n  action: delete\n",
        "6: policies[0].path: 'relative/dir' is not an absolute path",
    ),
    (
        "- name: a\n  path: /srv/x\n  action: shred\n",
        "7: policies[0].action: unknown action 'shred'; valid: ",
    ),
    (
        "- name: a\n  path: /srv/x\n  action: delet\n",
        "7: policies[0].action: unknown action 'delet' (did you mean 'delete'?); valid: ",
    ),
    (
        "- name: a\n  path: /srv/x\n",
        "5: policies[0].action: is required",
    ),
    (
        "- name: a b\n  path: /srv/x\n  action: delete\n",
        "5: policies[0].name: 'a b' is not a policy name (letters, digits, '.', '_', '-'; not '.' or '..')",
    ),
    (
        "- name: a\n  path: /srv/x\n  action: delete\n  keep_newest: lots\n",
        "8: policies[0].keep_newest: expected a whole number, got 'lots'",
    ),
    (
        "- name: a\n  path: /srv/x\n  action: delete\n  age_by: birthtime\n",
        "8: policies[0].age_by: 'birthtime' is not one of 'mtime', 'atime' or 'ctime'",
    ),
    (
        "- name: a\n  path: /srv/x\n  action: delete\n  retain: 14d\n",
        "8: policies[0].retain: is not an option of action 'delete' (it belongs to soft-delete",
    ),
    (
        "- name: a\n  path: /etc\n  action: delete\n",
        "6: policies[0].path: '/etc' is a system directory; refusing it unless the policy says allow_system_path: true",
    ),
    (
        "- name: a\n  path: /\n  action: delete\n",
        "6: policies[0].path: '/' is a system directory",
    ),
    (
        "- name: a\n  path: /lib64/x\n  action: delete\n",
        "6: policies[0].path: '/lib64/x' is a system directory",
    ),
    (
        "- name: a\n  path: /var/lib\n  action: delete\n",
        "6: policies[0].path: '/var/lib' is a system directory",
    ),
    (
        "- name: a\n  path: $JANITOR_TEST_UNSET_VAR/x\n  action: delete\n",
        "6: policies[0].path: '$JANITOR_TEST_UNSET_VAR/x': an environment variable in it is not set",
    ),
    (
        "- name: a\n  path: /srv/x\n  action: delete\n  match: ['/abs/*.log']\n",
        "8: policies[0].match: '/abs/*.log': globs are relative to the policy path; drop the leading '/'",
    ),
    (
        "- name: a\n  path: /srv/x\n  action: delete\n  larger_than: 10M\n  smaller_than: 1M\n",
        "9: policies[0].smaller_than: must be greater than larger_than, or nothing can match",
    ),
    (
        "- name: a\n  path: /srv/x\n  action: delete\n  action: soft-delete\n",
        "8: duplicate key 'action' (first at line 7); a duplicated key silently replaces the first one, so it is refused",
    ),
    (
        "- name: a\n  path: /srv/x\n  action: delete\n- name: a\n  path: /srv/y\n  action: delete\n",
        "8: policies[1].name: duplicate policy name 'a' (first at ",
    ),
]


@pytest.mark.parametrize(("body", "expected"), BAD, ids=[e.split(": ", 1)[1][:50] for _, e in BAD])
def test_bad_policy_is_reported_with_line_and_field(tmp_path: Path, body: str, expected: str) -> None:
    problems = problems_of(tmp_path, policy(body))
    assert any(p.startswith(expected) for p in problems), problems


FILE_LEVEL = [
    ("policies: []\n", "1: version: is required"),
    ("version: 2\npolicies: []\n", "1: version: version 2 is not supported (supported: 1)"),
    ("version: 1\nsetings: {}\n", "2: setings: unknown key (did you mean 'settings'?)"),
    ("version: 1\nsettings:\n  setle: 30s\n", "3: settings.setle: unknown key (did you mean 'settle'?)"),
    ("version: 1\nsettings:\n  settle: soon\n", "3: settings.settle: 'soon' is not a duration"),
    ("version: 1\ntargets:\n  m:\n    url: ftp://x\n", "4: targets.m.url: 'ftp://x' is not a target url"),
    ("- just\n- a list\n", "1: expected a mapping with version, settings, targets, policies"),
    ("version: 1\npolicies:\n  - name: [\n", "4: invalid YAML: "),
    ("version: 1\npolicies: !!python/object/apply:os.system ['true']\n", "2: invalid YAML: tag"),
]


@pytest.mark.parametrize(("text", "expected"), FILE_LEVEL, ids=[e for _, e in FILE_LEVEL])
def test_file_level_problems(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_of(tmp_path, text)
    assert any(p.startswith(expected) for p in problems), problems


def test_all_problems_are_reported_at_once_in_line_order(tmp_path: Path) -> None:
    text = policy("""\
        - name: a
          path: /srv/x
          action: delete
          older_than: 7 dayz
        - name: b
          path: /etc
          action: shred
          larger_than: huge
        """)
    problems = problems_of(tmp_path, text)
    assert [p.split(":")[0] for p in problems] == ["8", "10", "11", "12"]


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 9)}]")
    text = "version: 1\n" + "\n".join(lines) + "\npolicies: []\n"
    problems = problems_of(tmp_path, text)
    assert any("expands to more than 100000 values" in p for p in problems), problems


def test_directory_merges_files_and_refuses_duplicate_names_across_them(tmp_path: Path) -> None:
    d = tmp_path / "conf"
    d.mkdir()
    (d / "a.yaml").write_text(policy("- name: same\n  path: /srv/a\n  action: delete\n"))
    (d / "b.yml").write_text(policy("- name: same\n  path: /srv/b\n  action: delete\n"))
    (d / "notes.txt").write_text("not a policy")
    with pytest.raises(ConfigError) as info:
        load_config(d)
    assert info.value.problems == [
        f"{d / 'b.yml'}:5: policies[0].name: duplicate policy name 'same' (first at {d / 'a.yaml'}:5)"
    ]


def test_directory_merges_targets_and_settings(tmp_path: Path) -> None:
    d = tmp_path / "conf"
    d.mkdir()
    (d / "00-base.yaml").write_text(
        "version: 1\nsettings:\n  state_dir: /tmp/s\n  settle: 5m\ntargets:\n  nas:\n    url: file:///mnt/nas\n"
    )
    (d / "10-app.yaml").write_text(
        "version: 1\nsettings:\n  settle: 5m\npolicies:\n  - name: a\n    path: ~/x\n    action: delete\n"
    )
    config = load_config(d)
    assert config.settings.settle == 300
    assert config.settings.state_dir == "/tmp/s"
    assert set(config.targets) == {"nas"}
    assert config.policies[0].path == str(Path("~/x").expanduser())


def test_conflicting_settings_across_files_are_an_error(tmp_path: Path) -> None:
    d = tmp_path / "conf"
    d.mkdir()
    (d / "a.yaml").write_text("version: 1\nsettings:\n  settle: 5m\n")
    (d / "b.yaml").write_text("version: 1\nsettings:\n  settle: 10m\n")
    with pytest.raises(ConfigError) as info:
        load_config(d)
    assert info.value.problems == [f"{d / 'b.yaml'}:3: settings.settle: 600.0 conflicts with 300.0 at {d / 'a.yaml'}:3"]


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no \\*.yaml or \\*.yml policy files"):
        load_config(tmp_path)


def test_values_become_typed(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy("""\
        - name: videos
          path: /srv/out/
          match: "**/*.mp4"
          exclude: ["keep/**"]
          older_than: 1d12h
          larger_than: 1.5K
          smaller_than: 20MB
          keep_newest: 3
          when_disk_above: 80%
          action: soft-delete
          retain: 2w
          allow_system_path: false
        """))
    p = load_config(path).policies[0]
    assert p.path == "/srv/out"
    assert p.match == ("**/*.mp4",)
    assert p.older_than == 129600
    assert p.larger_than == 1536
    assert p.smaller_than == 20_000_000
    assert p.when_disk_above == 80.0
    assert p.retain == 14 * 86400
    assert p.selects("a/b.mp4") and not p.selects("keep/b.mp4") and not p.selects("a/b.mkv")
    assert p.prunes_dir("keep") and not p.prunes_dir("kept")


def test_system_path_is_allowed_when_the_policy_says_so(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy("- name: a\n  path: /var/lib/app/cache\n  action: delete\n  allow_system_path: true\n"))
    assert load_config(path).policies[0].path == "/var/lib/app/cache"


def test_cli_validate_exits_2_without_traceback(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "p.yaml"
    path.write_text(policy("- name: a\n  path: /srv/x\n  action: delete\n  older_than: 7 dayz\n"))
    proc = cli("validate", "-c", path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0] == (
        f"{path}:8: policies[0].older_than: '7 dayz' is not a duration (examples: 7d, 12h, 30m)"
    )
    assert proc.stderr.splitlines()[-1] == "janitor: 1 problem in the policy files"


def test_cli_validate_debug_shows_traceback(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "p.yaml"
    path.write_text("version: 3\n")
    proc = cli("--debug", "validate", "-c", path)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_alias_bomb_inside_an_allowed_field_is_refused(tmp_path: Path) -> None:
    lines = ["x-defs:", "  a0: &a0 ['*', '*', '*', '*', '*', '*', '*', '*', '*']"]
    for i in range(1, 9):
        lines.append(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    text = "version: 1\n" + "\n".join(lines) + "\npolicies:\n  - name: a\n    path: /srv/x\n    action: delete\n    match: *a8\n"
    problems = problems_of(tmp_path, text)
    assert any("expands to more than 100000 values" in p for p in problems), problems


def test_many_aliases_are_refused(tmp_path: Path) -> None:
    text = "version: 1\nx: &x a\ny: [" + ", ".join(["*x"] * 101) + "]\n"
    problems = problems_of(tmp_path, text)
    assert any("more than 100 YAML aliases" in p for p in problems), problems


@pytest.mark.parametrize("name", [".", ".."])
def test_dot_names_are_refused(tmp_path: Path, name: str) -> None:
    problems = problems_of(tmp_path, policy(f"- name: '{name}'\n  path: /srv/x\n  action: soft-delete\n"))
    assert any("is not a policy name" in p and p.startswith("5:") for p in problems), problems


@pytest.mark.parametrize("path", ["/var", "/usr/..", "/var/lib/.."])
def test_directories_above_system_directories_are_refused(tmp_path: Path, path: str) -> None:
    problems = problems_of(tmp_path, policy(f"- name: a\n  path: {path}\n  action: delete\n"))
    assert any("is a system directory" in p for p in problems), problems


@pytest.mark.parametrize("value", ["\n  name: x\n  path: /tmp/x\n  action: delete", " {}", " oops"])
def test_policies_that_are_not_a_list_are_an_error(tmp_path: Path, value: str) -> None:
    problems = problems_of(tmp_path, "version: 1\npolicies:" + value + "\n")
    assert any("policies: expected a list" in p for p in problems), problems


# --- each action's typed options (janitor/actions/base.py) ---------------------------------


def test_each_action_declares_its_keys_with_the_flat_fields_types() -> None:
    """An action's `Options` field means exactly what the flat policy key means: same type,
    same constraints, same default; and every action-specific key belongs to some action."""
    from janitor.actions.base import ACTION_SPECIFIC_KEYS, ACTIONS
    from janitor.config import Policy

    owned: set[str] = set()
    for action in ACTIONS.values():
        for name, option in action.Options.model_fields.items():
            flat = Policy.model_fields[name]
            assert (option.annotation, option.metadata, option.default) == (
                flat.annotation, flat.metadata, flat.default), (action.name, name)
        assert action.options == frozenset(action.Options.model_fields)
        owned |= action.options
    assert owned >= ACTION_SPECIFIC_KEYS


def test_a_policy_carries_its_actions_typed_options(tmp_path: Path) -> None:
    from janitor.actions.archive import ArchiveOptions
    from janitor.actions.quota import QuotaOptions
    from janitor.actions.truncate import TruncateOptions
    from janitor.config import KeepTail

    path = tmp_path / "p.yaml"
    path.write_text(HEAD.replace("policies:\n", "targets:\n  nas:\n    url: file:///mnt/nas\npolicies:\n")
                    + textwrap.indent(textwrap.dedent("""\
        - name: logs
          path: /srv/logs
          action: truncate
          keep_tail: 100 lines
          rotate: 3
        - name: cap
          path: /srv/cap
          action: quota
          max_size: 1GiB
          then: archive
          target: nas
        """), "  "))
    logs, cap = load_config(path).policies
    assert isinstance(logs.options, TruncateOptions)
    assert (logs.options.keep_tail, logs.options.rotate, logs.options.compress) == (KeepTail(lines=100), 3, None)
    assert logs.options.model_fields_set == {"keep_tail", "rotate"}
    assert isinstance(cap.options, QuotaOptions)
    assert (cap.options.max_size, cap.options.then) == (1 << 30, "archive")
    # quota's then: archive hands its policy to the archive action, which reads its own keys
    assert ArchiveOptions.of(cap).target == "nas"
    assert QuotaOptions.of(cap) is cap.options
