"""Hostile input: every value parser and the policy loader either accept or explain; file
names with newlines, invalid UTF-8, leading dashes and very long paths work everywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import DAY, Tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janitor.config import load_config
from janitor.errors import ConfigError
from janitor.globs import compile_globs
from janitor.units import parse_duration, parse_percent, parse_size

values = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.from_regex(r"-?\d{1,6}(\.\d{1,3})?\s?([smhdwKMGTP%]|[KMGT]i?B|lines?)?", fullmatch=True),
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_value_parsers_accept_or_explain(value: object) -> None:
    for parse in (parse_duration, parse_size, parse_percent):
        try:
            result = parse(value)
        except ValueError as exc:
            assert str(exc)  # a message an operator can read
        else:
            assert isinstance(result, int | float) and result >= 0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_globs_compile_or_explain(pattern: str) -> None:
    try:
        regex = compile_globs([pattern])
    except ValueError as exc:
        # the three ways a glob can be wrong, each named (a bad class used to be a re.error)
        assert any(why in str(exc) for why in ("relative to the policy path", "is not a valid character class",
                                               "cannot contain a NUL byte")), exc
    else:
        assert regex is not None
        regex.match("a/b/c.mp4")


POLICY_KEYS = ["name", "path", "action", "match", "exclude", "older_than", "age_by", "larger_than",
               "smaller_than", "keep_newest", "when_disk_above", "retain", "rotate", "keep_tail", "max_size",
               "then", "target", "bogus", "max_percent", "settle", "compress", "mode", "reopen"]
yaml_scalars = st.one_of(st.text(max_size=20), st.integers(-5, 10**6), st.booleans(), st.none(),
                         st.sampled_from(["7d", "80%", "1GiB", "delete", "soft-delete", "truncate", "quota",
                                          "archive", "/srv/x", "**/*.mp4", "1000 lines", "/etc", "~/x", "$HOME/x"]))
policies = st.lists(st.dictionaries(st.sampled_from(POLICY_KEYS), st.one_of(yaml_scalars, st.lists(yaml_scalars, max_size=3)),
                                    max_size=8), max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(policies, st.sampled_from([1, 2, "1", None]))
def test_loader_yields_a_config_or_located_problems(tmp_path: Path, pols: list[dict], version: object) -> None:  # type: ignore[type-arg]
    path = tmp_path / "fuzz.yaml"
    path.write_text(json.dumps({"version": version, "policies": pols}))  # JSON is YAML
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.startswith(f"{path}:"), problem
            line = problem[len(str(path)) + 1 :].split(":", 1)[0]
            assert line.isdigit(), problem
    else:
        assert all(p.path.startswith("/") for p in config.policies)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_loader_never_crashes_on_arbitrary_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.problems


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\npolicies: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
        "version: !!python/name:os.system 1\n",
        "version: 1\npolicies:\n  - !!python/object:janitor.config.Policy {name: a}\n",
        "version: 1\n" + "x: " + "[" * 5000 + "]" * 5000 + "\n",
    ],
)
def test_dangerous_yaml_is_refused_without_a_traceback(tmp_path: Path, cli, text: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    proc = cli("validate", "-c", path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path("/tmp/pwned").exists()


HOSTILE_NAMES = [
    "new\nline.mp4",
    "-rf.mp4",
    "--help.mp4",
    " leading space.mp4",
    "tab\there.mp4",
    "quote\"and'apostrophe.mp4",
    "ünïcødé-视频.mp4",
    "back\\slash.mp4",
    "$(touch pwned).mp4",
]


@pytest.fixture
def hostile_tree(tree: Tree) -> tuple[Tree, list[bytes]]:
    names = [n.encode() for n in HOSTILE_NAMES] + [b"bad-\xff\xfe-utf8.mp4", b"latin1-\xe9t\xe9.mp4"]
    for raw in names:
        path = os.path.join(os.fsencode(tree.root), raw)
        with open(path, "wb") as f:
            f.write(b"payload " + raw)
        os.utime(path, (tree.now - 10 * DAY, tree.now - 10 * DAY))
    # a very long path: nested directories up to about 3,800 bytes
    deep = os.fsencode(tree.root)
    for i in range(30):
        deep = os.path.join(deep, b"d" * 120 + str(i).encode())
    os.makedirs(deep)
    long_file = os.path.join(deep, b"deep.mp4")
    with open(long_file, "wb") as f:
        f.write(b"deep")
    os.utime(long_file, (tree.now - 10 * DAY, tree.now - 10 * DAY))
    names.append(os.path.relpath(long_file, os.fsencode(tree.root)))
    return tree, names


def _all_files(root: Path) -> dict[bytes, bytes]:
    out = {}
    for dirpath, _, files in os.walk(os.fsencode(root)):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, os.fsencode(root))] = fh.read()
    return out


def test_hostile_names_through_plan_run_history_restore(hostile_tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    tree, names = hostile_tree
    cfg = write_config("""\
        version: 1
        settings: {{state_dir: {state}, settle: 0s}}
        policies:
          - {{name: v, path: {root}, match: ["**/*.mp4"], older_than: 7d, action: soft-delete}}
        """)
    before = _all_files(tree.root)
    assert set(before) == set(names)
    plan = cli("plan", "-c", cfg, "--json")
    assert plan.returncode == 0, plan.stderr
    data = json.loads(plan.stdout)
    assert data["files"] == len(names)
    table = cli("plan", "-c", cfg)
    assert table.returncode == 0 and "\\n" in table.stdout  # the newline is shown escaped, not printed raw
    run = cli("run", "-c", cfg, "--log-format", "json")
    assert run.returncode == 0, run.stderr
    for line in run.stderr.splitlines():
        json.loads(line)
    assert _all_files(tree.root) == {}
    history = json.loads(cli("history", "-c", cfg, "--json").stdout)
    assert len(history) == len(names)
    restore = cli("restore", "-c", cfg, "--all")
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert _all_files(tree.root) == before


def test_html_report_with_undecodable_names(hostile_tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree, _ = hostile_tree
    cfg = write_config("version: 1\nsettings: {{state_dir: {state}}}\npolicies:\n  - {{name: v, path: {root}, action: delete, older_than: 30d}}\n")
    page = tmp_path / "r.html"
    proc = cli("report", "-c", cfg, "--html", page)
    assert proc.returncode == 0, proc.stderr
    assert "bad-\\xff\\xfe-utf8.mp4" in page.read_text(encoding="utf-8")
    assert not (tmp_path / "r.html.tmp").exists()
