"""Checks on the shipped packaging (systemd units, cron file, Dockerfile) and example policies.

These read files; none needs a running systemd, docker or janitor itself. `systemd-analyze
verify` runs where the binary exists and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml
from attacker import Attacker

REPO = Path(__file__).resolve().parents[1]
SYSTEMD = REPO / "packaging" / "systemd"
SERVICE = SYSTEMD / "janitor.service"
TIMER = SYSTEMD / "janitor.timer"
GUARD_DROPIN = SYSTEMD / "guard-dropin.conf"
CRON = REPO / "packaging" / "cron.d" / "janitor"
DOCKERFILE = REPO / "packaging" / "Dockerfile"
SAMPLE_CONFIG = REPO / "packaging" / "etc-janitor" / "janitor.yaml"
POLICY_FILES = sorted((REPO / "policies").glob("*.y*ml"))
JANITOR_BIN = "/usr/local/bin/janitor"

UnitFile = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> UnitFile:
    """Section -> key -> every value in file order (systemd keys may repeat)."""
    unit: UnitFile = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{path.name}:{number}: setting outside a section"
        assert "=" in line, f"{path.name}:{number}: not KEY=value: {raw!r}"
        assert not line.endswith("\\"), f"{path.name}:{number}: continuation lines not expected"
        key, value = line.split("=", 1)
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def last(unit: UnitFile, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= is missing"
    return values[-1]


def load_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: top level is not a mapping"
    return data


# ---- janitor.service ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("Type", "oneshot"),
        ("ExecStart", f"{JANITOR_BIN} run -c /etc/janitor/"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "no"),
        ("ProtectHome", "read-only"),
        ("NoNewPrivileges", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "no"),  # truncate's SCHED_FIFO step (docs/truncate.md)
        ("SystemCallArchitectures", "native"),
        ("StateDirectory", "janitor"),
        ("Nice", "10"),
        ("IOSchedulingClass", "idle"),
        ("SuccessExitStatus", "3"),
    ],
)
def test_service_setting(key: str, expected: str) -> None:
    assert last(parse_unit(SERVICE), "Service", key) == expected


def test_service_capabilities_are_exactly_the_justified_set() -> None:
    caps = set(last(parse_unit(SERVICE), "Service", "CapabilityBoundingSet").split())
    assert caps == {
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_SYS_PTRACE",
        "CAP_SYS_NICE",
        "CAP_SETUID",
        "CAP_SETGID",
    }


def test_service_leaves_proc_visible() -> None:
    # janitor reads /proc/PID/fd of other processes to skip files open for writing.
    service = parse_unit(SERVICE)["Service"]
    assert "ProtectProc" not in service
    assert "ProcSubset" not in service


def test_service_loads_credentials_from_env_file_only() -> None:
    service = parse_unit(SERVICE)["Service"]
    assert service["EnvironmentFile"] == ["-/etc/janitor/credentials.env"]
    assert not any("AWS_" in value for value in service.get("Environment", []))


def _read_write_paths() -> list[PurePosixPath]:
    values = parse_unit(SERVICE)["Service"].get("ReadWritePaths", [])
    return [PurePosixPath(p.lstrip("-")) for value in values for p in value.split()]


def _covering_entry(path: str) -> PurePosixPath | None:
    target = PurePosixPath(path)
    for entry in _read_write_paths():
        if target == entry or entry in target.parents:
            return entry
    return None


def _example_policies() -> list[tuple[str, dict]]:
    return [(f.name, p) for f in POLICY_FILES for p in load_yaml(f).get("policies", [])]


@pytest.mark.parametrize(
    ("file_name", "policy"),
    _example_policies(),
    ids=lambda value: value["name"] if isinstance(value, dict) else value,
)
def test_service_can_write_every_example_policy_path(file_name: str, policy: dict) -> None:
    entry = _covering_entry(policy["path"])
    assert entry is not None, f"{file_name}: {policy['path']} is not in ReadWritePaths="
    if "trash_dir" in policy:
        # Each ReadWritePaths= entry is its own bind mount: trash and data must share one
        # entry, or moving into the trash crosses mounts (EXDEV) and stops being a rename.
        assert _covering_entry(policy["trash_dir"]) == entry, (
            f"{file_name}: trash_dir {policy['trash_dir']} and path {policy['path']} "
            "are not under the same ReadWritePaths= entry"
        )


# ---- janitor.timer and the guard drop-in ------------------------------------------------


def test_timer_schedule() -> None:
    timer = parse_unit(TIMER)
    assert last(timer, "Timer", "Persistent") == "true"
    assert last(timer, "Timer", "OnCalendar")
    assert last(timer, "Timer", "RandomizedDelaySec")
    assert last(timer, "Timer", "AccuracySec")
    assert last(timer, "Install", "WantedBy") == "timers.target"


def test_guard_dropin_blocks_start_when_over_threshold() -> None:
    (command,) = parse_unit(GUARD_DROPIN)["Service"]["ExecStartPre"]
    parsed = re.fullmatch(r"([-+@:!]*)(.*)", command)
    assert parsed is not None
    prefix, argv = parsed.groups()
    # Without "-" a non-zero guard exit fails the start: that is the point of the guard.
    assert "-" not in prefix
    assert argv.split() == [
        JANITOR_BIN,
        "guard",
        "--path",
        "/srv/heygem/outputs",
        "--max-used",
        "80%",
        "--clean",
        "-c",
        "/etc/janitor/",
    ]


# ---- systemd-analyze verify -------------------------------------------------------------


def _verify(units: list[Path], unit_dir: Path) -> subprocess.CompletedProcess[str]:
    # A trailing ":" keeps the default unit directories after ours, for network-online.target
    # and timers.target.
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{unit_dir}:", SYSTEMD_LOG_COLOR="0")
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _assert_verified(result: subprocess.CompletedProcess[str], names: tuple[str, ...]) -> None:
    output = (result.stdout + result.stderr).strip()
    # Other units installed on the machine may draw warnings; ours may not.
    about_ours = [line for line in output.splitlines() if any(n in line for n in names)]
    assert result.returncode == 0 and not about_ours, output


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """A unit directory where the janitor path in ExecStart*= names an existing executable.

    `verify` fails on an ExecStart= binary that does not exist, and janitor is not installed
    at /usr/local/bin on a build machine.
    """
    stub = tmp_path / "bin" / "janitor"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for source, dest in [
        (SERVICE, units / "janitor.service"),
        (TIMER, units / "janitor.timer"),
        (GUARD_DROPIN, units / "heygem.service.d" / "janitor-guard.conf"),
    ]:
        dest.parent.mkdir(exist_ok=True)
        dest.write_text(source.read_text().replace(JANITOR_BIN, str(stub)))
    (units / "heygem.service").write_text("[Service]\nExecStart=/bin/sleep infinity\n")
    return units


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (apt-get install systemd); unit syntax "
    "is still checked by the pure-Python tests",
)


@needs_systemd_analyze
def test_systemd_analyze_verify_units(unit_dir: Path) -> None:
    result = _verify([unit_dir / "janitor.service", unit_dir / "janitor.timer"], unit_dir)
    _assert_verified(result, ("janitor.service", "janitor.timer"))


@needs_systemd_analyze
def test_systemd_analyze_verify_guard_dropin(unit_dir: Path) -> None:
    # The drop-in is only read through the unit it extends: verify a stand-in heygem.service.
    result = _verify([unit_dir / "heygem.service"], unit_dir)
    _assert_verified(result, ("heygem.service", "janitor-guard.conf"))


# ---- cron and Docker --------------------------------------------------------------------


def test_cron_file() -> None:
    text = CRON.read_text()
    assert text.endswith("\n"), "cron ignores a last line without a newline"
    assert "." not in CRON.name, "cron skips /etc/cron.d files whose name has a dot"
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    path_line = next(ln for ln in lines if ln.startswith("PATH="))
    assert "/usr/local/bin" in path_line.split("=", 1)[1].split(":")
    jobs = [ln for ln in lines if not re.match(r"[A-Z_]+=", ln)]
    assert len(jobs) == 1
    fields = jobs[0].split(None, 6)
    assert fields[5] == "root"
    assert "janitor run -c /etc/janitor/" in fields[6]
    assert "%" not in fields[6], "an unescaped % ends the command in crontab syntax"


def test_dockerfile_entrypoint() -> None:
    instructions: dict[str, list[str]] = {}
    for line in DOCKERFILE.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            word, _, rest = line.partition(" ")
            instructions.setdefault(word, []).append(rest)
    assert instructions["FROM"] == ["python:3.11-slim"]
    assert json.loads(instructions["ENTRYPOINT"][-1]) == ["janitor"]
    assert json.loads(instructions["CMD"][-1]) == ["run", "-c", "/etc/janitor/"]
    assert instructions["HEALTHCHECK"] == ["NONE"]


# ---- example policies -------------------------------------------------------------------
# The full check, janitor's own loader run over policies/ (`janitor validate -c policies/`),
# belongs in a test the integrator adds once the loader exists. The tests below only check
# what holds whatever the loader turns out to be.


def test_policy_files_exist() -> None:
    names = {f.name for f in POLICY_FILES}
    assert {"heygem-digital-human.yaml", "id-photo.yaml", "tts-service.yaml"} <= names


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_policy_file_is_version_1_with_named_policies(path: Path) -> None:
    data = load_yaml(path)
    assert data.get("version") == 1
    policies = data.get("policies")
    assert isinstance(policies, list) and policies
    for policy in policies:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", policy["name"])
        assert policy["path"].startswith("/")
        assert policy["action"] in {"delete", "soft-delete", "archive", "truncate", "quota"}


def test_policy_names_unique_across_files() -> None:
    seen: dict[str, str] = {}
    for file_name, policy in _example_policies():
        assert policy["name"] not in seen, (
            f"{policy['name']}: {seen.get(policy['name'])} and {file_name}"
        )
        seen[policy["name"]] = file_name


def test_settings_and_targets_agree_across_files() -> None:
    # Everything here may end up merged in one /etc/janitor/: a settings key or a target
    # defined in two files must be defined the same way.
    settings: dict[str, tuple[object, str]] = {}
    targets: dict[str, tuple[object, str]] = {}
    for path in [*POLICY_FILES, SAMPLE_CONFIG]:
        data = load_yaml(path)
        for section, seen in (("settings", settings), ("targets", targets)):
            for key, value in (data.get(section) or {}).items():
                first = seen.setdefault(key, (value, path.name))
                assert first[0] == value, f"{section}.{key}: {first[1]} and {path.name} differ"
    assert settings["state_dir"][0] == "/var/lib/janitor"


def test_archive_policies_name_a_defined_target() -> None:
    targets = {
        name
        for path in [*POLICY_FILES, SAMPLE_CONFIG]
        for name in load_yaml(path).get("targets") or {}
    }
    for file_name, policy in _example_policies():
        if policy["action"] == "archive" or policy.get("then") == "archive":
            assert policy.get("target") in targets, f"{file_name}: {policy['name']}"


# ---- the unit, the container and the docs agree (issue 12, defect 7) --------------------


def _docker_run_flags() -> list[str]:
    """The words of the `docker run` command documented at the top of the Dockerfile."""
    words: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        text = line.lstrip("# ").rstrip("\\ ")
        if text.startswith(("docker run", "--", "-v ", "janitor")) and (words or text.startswith("docker run")):
            words.extend(text.split())
            if text == "janitor":
                break
    return words


def test_truncate_sched_fifo_step_is_allowed_by_the_unit_and_the_container() -> None:
    truncate_doc = (REPO / "docs" / "truncate.md").read_text()
    assert "SCHED_FIFO" in truncate_doc and "CAP_SYS_NICE" in truncate_doc
    service = parse_unit(SERVICE)
    assert last(service, "Service", "RestrictRealtime") == "no"
    assert "CAP_SYS_NICE" in last(service, "Service", "CapabilityBoundingSet").split()
    assert "AmbientCapabilities" not in service["Service"]  # root: the bounding set is what counts
    assert "--cap-add=SYS_NICE" in _docker_run_flags()
    # what the docs promise, the unit does: every capability and setting the doc names
    assert "`RestrictRealtime=no`" in truncate_doc
    for word in re.findall(r"`(CAP_[A-Z_]+|--cap-add=[A-Z_]+)`", truncate_doc):
        if word.startswith("CAP_"):
            assert word in last(service, "Service", "CapabilityBoundingSet").split()
        else:
            assert word in _docker_run_flags()


def test_textfile_directory_is_one_directory_everywhere() -> None:
    sample = load_yaml(SAMPLE_CONFIG)
    directory = PurePosixPath(sample["settings"]["metrics_file"]).parent
    assert directory in _read_write_paths()
    metrics_doc = (REPO / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"(/var/lib/[\w/.-]+?)/janitor\.prom", metrics_doc))
    assert documented == {str(directory)}
    assert f"--collector.textfile.directory={directory}" in metrics_doc
    flags = _docker_run_flags()
    mounts = [flags[i + 1] for i, flag in enumerate(flags) if flag == "-v"]
    assert f"{directory}:{directory}" in mounts
    assert "0644" in metrics_doc and last(parse_unit(SERVICE), "Service", "UMask") == "0077"


def test_docker_caps_equal_the_units() -> None:
    caps = {"CAP_" + f.split("=", 1)[1] for f in _docker_run_flags() if f.startswith("--cap-add=")}
    assert caps == set(last(parse_unit(SERVICE), "Service", "CapabilityBoundingSet").split())


def test_the_units_capabilities_let_janitor_act_as_a_directorys_owner(attacker: Attacker, hostile_root: Path) -> None:
    """Run janitor under exactly the unit's CapabilityBoundingSet and NoNewPrivileges (setpriv
    gives a root exec the bounding set as its permitted set, as systemd does): rotating the
    log of a service account's own `logs/` is done as that account (docs/security.md), which
    needs setuid/setgid; without them every such policy would fail E_SU_FAILED."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    caps = last(parse_unit(SERVICE), "Service", "CapabilityBoundingSet").split()
    bounding = "-all," + ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    logs = hostile_root / "logs"
    attacker.mkdir(logs, 0o755)
    log = logs / "app.log"
    lines = b"".join(b"%09d\n" % i for i in range(1000))
    log.write_bytes(lines)
    attacker.give(log, 0o640)
    config = hostile_root / "janitor.yaml"
    config.write_text(f"version: 1\nsettings:\n  state_dir: {hostile_root / 'state'}\n"
                      f"policies:\n  - name: applogs\n    path: {logs}\n    match: ['*.log']\n"
                      f"    action: truncate\n    rotate: 2\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JANITOR_")}
    done = subprocess.run(["setpriv", "--no-new-privs", "--bounding-set", bounding, "--",
                           sys.executable, "-m", "janitor", "run", "-c", str(config)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    copy = logs / "app.log.1"
    assert copy.stat().st_uid == attacker.uid and copy.stat().st_size > 0
    assert copy.read_bytes() + log.read_bytes() == lines


def test_the_container_adds_exactly_the_units_capabilities() -> None:
    unit = {c.removeprefix("CAP_") for c in last(parse_unit(SERVICE), "Service", "CapabilityBoundingSet").split()}
    flags = _docker_run_flags()
    assert "--cap-drop=ALL" in flags
    assert {f.removeprefix("--cap-add=") for f in flags if f.startswith("--cap-add=")} == unit
