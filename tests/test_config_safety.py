"""What `validate` refuses so that a run can never be aimed at the wrong place.

janitor's own state and trash (issue 11 point 8), every spelling of a system directory and
NUL bytes and uncompilable globs (point 9), durations without a unit (issue 12 defect 5),
warnings and --strict (issue 12 friction), and the `su` key.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janitor.asowner import Credentials
from janitor.config import SYSTEM_PATHS, load_config
from janitor.errors import ConfigError


def write(tmp_path: Path, policy_lines: str, *, state: Path | None = None, extra_settings: str = "",
          name: str = "p.yaml") -> Path:
    """A file whose first policy starts at line 5 (`- name:`), its path at line 6 (one more per
    line of `extra_settings`)."""
    state = state or tmp_path / "state"
    path = tmp_path / name
    path.write_text(f"version: 1\nsettings:\n  state_dir: {state}\n{extra_settings}policies:\n" + policy_lines)
    return path


def problems(path: Path, *, strict: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, strict=True) if strict else load_config(path)
    return [p.removeprefix(f"{path}:") for p in info.value.problems]


# -- janitor never cleans its own state (issue 11 point 8) -------------------------------------


@pytest.mark.parametrize(
    ("policy_path", "expected"),
    [
        ("{state}", "is the state_dir"),
        ("{state}/", "is the state_dir"),
        ("{state}/trash/run1", "lies inside the state_dir"),
        ("{tmp}", "contains the state_dir"),
        ("{tmp}/trash", "is the trash_dir"),
        ("{tmp}/trash/x/y", "lies inside the trash_dir"),
        ("{tmp}/srv/.janitor-trash/20261204T000000Z-abc/p", "lies inside a .janitor-trash directory"),
    ],
)
def test_a_policy_over_janitors_own_directories_is_refused(tmp_path: Path, policy_path: str, expected: str) -> None:
    state = tmp_path / "state"
    p = policy_path.format(state=state, tmp=tmp_path)
    cfg = write(tmp_path, f"  - name: a\n    path: {p}\n    action: delete\n    older_than: 1d\n",
                extra_settings=f"  trash_dir: {tmp_path / 'trash'}\n")
    found = problems(cfg)
    assert any(f.startswith("7: policies[0].path: ") and expected in f for f in found), found


def test_a_policy_over_another_policys_trash_dir_is_refused(tmp_path: Path) -> None:
    cfg = write(tmp_path, f"  - name: keep\n    path: {tmp_path / 'data'}\n    action: soft-delete\n"
                          f"    trash_dir: {tmp_path / 'data-trash'}\n"
                          f"  - name: sweep\n    path: {tmp_path / 'data-trash'}\n    action: delete\n"
                          "    older_than: 1d\n")
    found = problems(cfg)
    assert any(f.startswith("10: policies[1].path: ") and "is the trash_dir of policy 'keep'" in f
               for f in found), found


def test_a_symlinked_spelling_of_the_state_dir_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "trash").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(state)
    cfg = write(tmp_path, f"  - name: a\n    path: {tmp_path / 'alias' / 'trash'}\n    action: delete\n"
                          "    older_than: 1d\n")
    found = problems(cfg)
    assert any(f.startswith("6: policies[0].path: ") and "the state_dir" in f for f in found), found


def test_cli_validate_refuses_the_state_dir_with_exit_2(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    cfg = write(tmp_path, f"  - name: a\n    path: {tmp_path}\n    action: delete\n    older_than: 1d\n")
    proc = cli("validate", "-c", cfg)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"{cfg}:6: policies[0].path: '{tmp_path}' contains the state_dir")
    assert "Traceback" not in proc.stderr


# -- every spelling of a system directory (issue 11 point 9) -----------------------------------


def _spellings() -> st.SearchStrategy[tuple[str, str]]:
    """(system dir, a spelling of it or of a directory below it) with `$EMPTY` set to ''."""
    part = st.sampled_from(["", "/", "/.", "/./", "//", "/$EMPTY", "/${EMPTY}", "/x/..", "/x/y/../..", "/./x/.."])

    @st.composite
    def spelled(draw: st.DrawFn) -> tuple[str, str]:
        target = draw(st.sampled_from(SYSTEM_PATHS + ("/lib", "/lib64")))
        below = draw(st.sampled_from(["", "/app", "/app/cache"]))
        words = [w for w in (target + below).split("/") if w]
        out = draw(st.sampled_from(["/", "//", "///", "$EMPTY/", "/./", "/../"]))
        for k, w in enumerate(words):
            out += w + draw(part) + ("/" if k < len(words) - 1 else "")
        out += draw(st.sampled_from(["", "/", "//", "/.", "/./"]))
        return target, out

    return spelled()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_spellings())
def test_every_spelling_of_a_system_directory_is_refused(tmp_path: Path, case: tuple[str, str]) -> None:
    target, spelling = case
    os.environ["EMPTY"] = ""
    try:
        cfg = write(tmp_path, f"  - name: a\n    path: '{spelling}'\n    action: delete\n    older_than: 1d\n")
        found = problems(cfg)
    finally:
        del os.environ["EMPTY"]
    assert any(f.startswith("6: policies[0].path: ") and "system directory" in f for f in found), (spelling, found)


def test_a_symlink_to_a_system_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "conf").symlink_to("/etc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to("/usr/share")
    for alias in (tmp_path / "conf", tmp_path / "conf" / "ssl", tmp_path / "sub" / "up" / "doc"):
        cfg = write(tmp_path, f"  - name: a\n    path: {alias}\n    action: delete\n    older_than: 1d\n")
        found = problems(cfg)
        assert any(f.startswith("6: policies[0].path: ") and "system directory" in f for f in found), found


@pytest.fixture
def bind_mount(tmp_path: Path):  # type: ignore[no-untyped-def]
    mounted: list[Path] = []

    def bind(source: str, name: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        proc = subprocess.run(["mount", "--bind", source, str(where)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot bind-mount here: {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield bind
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize(("source", "below"), [("/etc", ""), ("/etc", "ssl"), ("/", ""), ("/", "usr/share"),
                                               ("/var", "")])
def test_a_bind_mount_of_a_system_directory_is_refused(tmp_path: Path, bind_mount, source: str,  # type: ignore[no-untyped-def]
                                                       below: str) -> None:
    where = bind_mount(source, "alias")
    cfg = write(tmp_path, f"  - name: a\n    path: {where / below if below else where}\n    action: delete\n"
                          "    older_than: 1d\n")
    found = problems(cfg)
    assert any(f.startswith("6: policies[0].path: ") and "system directory" in f for f in found), found


def test_an_ordinary_directory_stays_allowed(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    cfg = write(tmp_path, f"  - name: a\n    path: //{str(tmp_path / 'data').lstrip('/')}/./\n    action: delete\n"
                          "    older_than: 1d\n")
    config = load_config(cfg)
    assert config.policies[0].path == str(tmp_path / "data")  # one spelling, one leading slash
    assert config.warnings == ()


# -- NUL bytes and globs that cannot compile ---------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ('    path: "/srv/x\\0/etc"\n    action: delete\n', '6: policies[0].path: contains a NUL byte'),
        ('    path: /srv/x\n    action: delete\n    match: ["ok/*", "a\\0b"]\n',
         "8: policies[0].match[1]: contains a NUL byte"),
        ('    path: /srv/x\n    action: delete\n    description: "x\\0y"\n',
         "8: policies[0].description: contains a NUL byte"),
        ('    path: /srv/x\n    action: delete\n    match: "[z-a].log"\n',
         "8: policies[0].match: '[z-a].log': [z-a] is not a valid character class (bad character range z-a)"),
        ('    path: /srv/x\n    action: delete\n    exclude: ["keep/[!]/**"]\n',
         "8: policies[0].exclude: 'keep/[!]/**': [!] is not a valid character class"),
    ],
)
def test_nul_bytes_and_bad_globs_are_located(tmp_path: Path, lines: str, expected: str) -> None:
    cfg = write(tmp_path, "  - name: a\n" + lines)
    found = problems(cfg)
    assert any(f.startswith(expected) for f in found), found


def test_a_nul_byte_in_a_setting_is_located(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    cfg = write(tmp_path, "  - name: a\n    path: /srv/x\n    action: delete\n    older_than: 1d\n",
                extra_settings='  log_file: "/var/log/j\\0.log"\n')
    proc = cli("validate", "-c", cfg)
    assert proc.returncode == 2, proc.stderr
    assert f"{cfg}:4: settings.log_file: contains a NUL byte" in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr


path_chars = st.sampled_from(list("ab/.*?[]!-z\\\0$~ "))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(path_chars, max_size=16), st.text(path_chars, max_size=12), st.text(path_chars, max_size=12))
def test_any_path_or_glob_is_a_config_or_located_problems(tmp_path: Path, path: str, match: str,
                                                          log_file: str) -> None:
    cfg = tmp_path / "fuzz.yaml"
    cfg.write_text(json.dumps({"version": 1, "settings": {"state_dir": str(tmp_path / "s"), "log_file": log_file},
                               "policies": [{"name": "a", "path": path, "match": match, "action": "delete",
                                             "older_than": "1d"}]}))
    try:
        config = load_config(cfg)
    except ConfigError as exc:
        for problem in exc.problems:
            line, _, rest = problem.removeprefix(f"{cfg}:").partition(": ")
            assert line.isdigit() and rest.split(":")[0] in (
                "policies[0].path", "policies[0].match", "settings.log_file", "settings"), problem
    else:
        assert "\0" not in config.policies[0].path and not config.policies[0].path.startswith("//")


def test_bad_globs_on_the_command_line_exit_2(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "data").mkdir()
    cfg = write(tmp_path, f"  - name: a\n    path: {tmp_path / 'data'}\n    action: soft-delete\n"
                          "    older_than: 1d\n")
    assert cli("run", "-c", cfg).returncode == 0  # a catalog to query
    for args in (["restore", "/srv/[z-a]"], ["restore", "[!]"], ["history", "--path", "[z-a]"]):
        proc = cli(*args, "-c", cfg)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "is not a valid character class" in proc.stderr, proc.stderr
        assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("restore", "/srv/[z-a]", "-c", cfg)
    assert proc.stderr.strip() == (
        "janitor: '/srv/[z-a]': [z-a] is not a valid character class (bad character range z-a)")


# -- durations need a unit; version (issue 12 defect 5) ----------------------------------------


@pytest.mark.parametrize(
    ("lines", "extra", "expected"),
    [
        ("    older_than: 7\n", "",
         "8: policies[0].older_than: 7 is a duration without a unit: write 7d, 7h, 7m or 7s (examples: 7d, 12h, 30m)"),
        ("    older_than: '7'\n", "", "8: policies[0].older_than: '7' is a duration without a unit"),
        ("    older_than: 1.5\n", "", "8: policies[0].older_than: 1.5 is a duration without a unit"),
        ("    settle: 60\n", "", "8: policies[0].settle: 60 is a duration without a unit: write 60d"),
        ("", "  settle: 60\n", "4: settings.settle: 60 is a duration without a unit"),
    ],
)
def test_a_duration_without_a_unit_is_refused(tmp_path: Path, lines: str, extra: str, expected: str) -> None:
    cfg = write(tmp_path, "  - name: a\n    path: /srv/x\n    action: delete\n" + lines, extra_settings=extra)
    found = problems(cfg)
    assert any(f.startswith(expected) for f in found), found


def test_version_may_be_quoted_and_zero_carries_a_unit_too(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f'version: "1"\nsettings:\n  state_dir: {tmp_path / "s"}\n  settle: 0s\npolicies:\n'
                   f"  - name: a\n    path: {tmp_path / 'd'}\n    action: delete\n    older_than: 0s\n")
    config = load_config(cfg)
    assert config.settings.settle == 0 and config.policies[0].older_than == 0
    cfg.write_text(cfg.read_text().replace("settle: 0s", "settle: 0"))
    assert problems(cfg) == ["4: settings.settle: 0 is a duration without a unit: write 0d, 0h, 0m or 0s "
                             "(examples: 7d, 12h, 30m)"]


@pytest.mark.parametrize("version", ["1.0", "'1.0'", "true", "'one'", "2"])
def test_other_versions_are_refused(tmp_path: Path, version: str) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"version: {version}\npolicies: []\n")
    found = problems(cfg)
    assert any(f.startswith("1: version: ") for f in found), found


def test_cli_duration_options_need_a_unit(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    cfg = write(tmp_path, "  - name: a\n    path: /srv/x\n    action: delete\n    older_than: 1d\n")
    proc = cli("history", "--since", "7", "-c", cfg)
    assert proc.returncode == 2 and "--since: '7' is a duration without a unit" in proc.stderr, proc.stderr


# -- warnings and --strict (issue 12, validate friction) ---------------------------------------


def test_warnings_exit_0_and_strict_makes_them_errors(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "data").mkdir()
    cfg = write(tmp_path, f"  - name: typo\n    path: {tmp_path / 'dta'}\n    action: delete\n    older_than: 1d\n"
                          f"  - name: all\n    path: {tmp_path / 'data'}\n    action: delete\n"
                          f"  - name: fine\n    path: {tmp_path / 'data'}\n    action: soft-delete\n")
    expected = [
        f"{cfg}:6: policies[0].path: '{tmp_path / 'dta'}' does not exist: the policy does nothing until it does "
        "(a typo?)",
        f"{cfg}:11: policies[1].action: delete with no older_than, larger_than or smaller_than removes every "
        "matching file once it has settled; add a filter if that is not the intent",
    ]
    assert list(load_config(cfg).warnings) == expected
    proc = cli("validate", "-c", cfg)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"warning: {w}" for w in expected]
    proc = cli("validate", "--json", "-c", cfg)
    assert proc.returncode == 0 and json.loads(proc.stdout)["warnings"] == expected
    proc = cli("validate", "--strict", "-c", cfg)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [*expected, "janitor: 2 problems in the policy files"]


def test_skip_open_readers_is_refused_where_it_cannot_apply(tmp_path: Path) -> None:
    cfg = write(tmp_path, "  - name: a\n    path: /srv/x\n    action: truncate\n    larger_than: 1MiB\n"
                          "    skip_open_readers: true\n")
    found = problems(cfg)
    assert any(f.startswith("9: policies[0].skip_open_readers: does not apply to action 'truncate'") for f in found), found


# -- su: USER[:GROUP] --------------------------------------------------------------------------


def test_su_becomes_credentials(tmp_path: Path, attacker_account) -> None:  # type: ignore[no-untyped-def]
    account = attacker_account
    cfg = write(tmp_path, f"  - name: a\n    path: /srv/x\n    action: delete\n    older_than: 1d\n"
                          f"    su: {account.name}\n"
                          f"  - name: b\n    path: /srv/y\n    action: delete\n    older_than: 1d\n    su: '0:0'\n"
                          f"  - name: c\n    path: /srv/z\n    action: delete\n    older_than: 1d\n")
    a, b, c = load_config(cfg).policies
    assert a.su == Credentials(account.uid, account.gid)
    assert b.su == Credentials(0, 0)
    assert c.su is None


@pytest.mark.parametrize(("value", "expected"), [
    ("nosuchuser-zz", "9: policies[0].su: 'nosuchuser-zz': no such user 'nosuchuser-zz'"),
    ("root:nosuchgroup-zz", "9: policies[0].su: 'root:nosuchgroup-zz': no such group 'nosuchgroup-zz'"),
    ("':x'", "9: policies[0].su: ':x': expected USER or USER:GROUP"),
    ("[root]", "9: policies[0].su: ['root'] is not USER or USER:GROUP"),
])
def test_su_names_unknown_users_with_line_and_field(tmp_path: Path, value: str, expected: str) -> None:
    cfg = write(tmp_path, f"  - name: a\n    path: /srv/x\n    action: delete\n    older_than: 1d\n    su: {value}\n")
    found = problems(cfg)
    assert any(f.startswith(expected) for f in found), found


def test_a_bind_mount_of_the_state_dir_is_refused(tmp_path: Path, bind_mount) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "state"
    (state / "trash").mkdir(parents=True)
    alias = bind_mount(str(state), "alias")
    for path, how in ((alias, "is the state_dir"), (alias / "trash", "lies inside the state_dir")):
        cfg = write(tmp_path, f"  - name: a\n    path: {path}\n    action: delete\n    older_than: 1d\n")
        found = problems(cfg)
        assert any(f.startswith("6: policies[0].path: ") and how in f for f in found), found


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["", ".", "..", "a", "b", "etc", "x y"]), max_size=8), st.integers(1, 3),
       st.booleans())
def test_canonical_path_has_one_spelling(parts: list[str], slashes: int, trailing: bool) -> None:
    from janitor.config import canonical_path

    path = "/" * slashes + "/".join(parts) + ("/" if trailing else "")
    once = canonical_path(path)
    assert once == canonical_path(once) == os.path.normpath(once)  # idempotent, already normal
    assert once.startswith("/") and not once.startswith("//")
    assert "." not in once.split("/") and ".." not in once.split("/")
