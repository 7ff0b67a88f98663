"""Policy files -> typed, frozen objects, at one boundary.

Every problem found is collected and reported at once, each as
`FILE:LINE: FIELD: MESSAGE`, e.g.
`policies/app.yaml:14: policies[2].older_than: '7 dayz' is not a duration (examples: 7d, 12h, 30m)`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from .actions.base import ActionOptions, action_class
from .asowner import Credentials, parse_su
from .errors import ConfigError
from .globs import compile_globs, prunable_dir_regex
from .policyfiles import config_path, policy_files
from .units import parse_duration, parse_percent, parse_size
from .yamlsource import LineDict, YamlProblems, line_of, load_yaml_with_lines

SUPPORTED_VERSIONS = (1,)
# The name is a directory in the trash and in archive keys: "." and ".." would collapse it.
NAME_RE = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9._-]+")

# Refused as policy paths unless `allow_system_path: true`: pointing a janitor at these is
# almost always a typo (an empty variable, a missing prefix), and the damage is total.
SYSTEM_PATHS = ("/etc", "/usr", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys", "/var/lib")
SYSTEM_PATH_PREFIXES = ("/lib",)  # /lib, /lib64, /libx32 ...


def _duration(v: object) -> float:
    return parse_duration(v)


def _size(v: object) -> int:
    return parse_size(v)


def _percent(v: object) -> float:
    return parse_percent(v)


ROTATE_WORDS = ("hourly", "daily", "weekly", "monthly", "yearly")


def _rotate_every(v: object) -> str:
    """logrotate's period words, or a duration (kept as written; janitor.actions.truncate reads it)."""
    if isinstance(v, str) and v.strip().lower() in ROTATE_WORDS:
        return v.strip().lower()
    try:
        parse_duration(v)
    except ValueError:
        raise ValueError(f"{v!r} is not a rotation period (examples: daily, weekly, monthly, 12h)") from None
    return str(v)


def _su(v: object) -> Credentials:
    if isinstance(v, Credentials):
        return v
    if not isinstance(v, str | int) or isinstance(v, bool):
        raise ValueError(f"{v!r} is not USER or USER:GROUP (example: su: www-data:www-data)")
    try:
        return parse_su(str(v))
    except ValueError as exc:
        raise ValueError(f"{str(v)!r}: {exc} (su: USER or USER:GROUP, as logrotate's su)") from None


def _parse_version(v: object) -> int:
    # `version: "1"` is the same version as `version: 1` (quoting a number is a common YAML
    # habit); anything else, 1.0 and true included, is not a version janitor knows.
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    raise ValueError(f"{v!r} is not a version (supported: 1)")


def _str_list(v: object) -> object:
    # `match: "*.log"` is as natural as a one-item list
    return [v] if isinstance(v, str) else v


Duration = Annotated[float, BeforeValidator(_duration)]
Size = Annotated[int, BeforeValidator(_size)]
Percent = Annotated[float, BeforeValidator(_percent)]
StrList = Annotated[tuple[str, ...], BeforeValidator(_str_list)]


# --- archive: verification and bandwidth (sec-archive) ---
def _rate(v: object) -> int:
    from .targets.base import parse_rate

    return parse_rate(v)


Rate = Annotated[int, BeforeValidator(_rate)]  # `bwlimit: 20MiB/s`, bytes per second
VerifyMode = Literal["server", "readback"]
RotateEvery = Annotated[str, BeforeValidator(_rotate_every)]
# what becomes of a file once archived (archive) or evicted (quota); each action narrows it
Then = Literal["delete", "soft-delete", "keep", "archive"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Settings(_Model):
    state_dir: str = "/var/lib/janitor"
    settle: Duration = 60.0
    one_filesystem: bool = True
    trash_dir: str | None = None
    max_actions: int = Field(10_000, ge=1)
    guard_max_used: Percent | None = None
    log_format: Literal["text", "json"] | None = None
    log_file: str | None = None
    log_file_mode: str = "0640"  # of a log file janitor creates (ops-cli: docs/events.md)
    metrics_file: str | None = None
    archive_workers: int = Field(8, ge=1, le=256)
    # threads a delete re-checks and unlinks with, each on its own directories (janitor/execute.py)
    delete_workers: int = Field(1, ge=1, le=64)
    # a delete's re-checks and unlinks in a second process while this one journals (both cores)
    acting_process: bool = True
    # engine (issue 13): journal rows of runs started longer ago are pruned at each run
    history_retain: Duration = 90 * 86400.0
    # engine (issue 12.4): how long `restore` holds a restored file by default
    restore_hold: Duration = 30 * 86400.0

    @field_validator("log_file_mode", mode="before")
    @classmethod
    def _octal_mode(cls, v: object) -> str:
        if not isinstance(v, str) or not re.fullmatch(r"0?[0-7]{3}", v.strip()) or int(v, 8) & ~0o666:
            raise ValueError(f"{v!r} is not a file mode: write it quoted, in octal, without execute bits "
                             "(examples: '0640', '0600', '0644')")
        return v.strip()

    @field_validator("state_dir", "trash_dir", "log_file", "metrics_file")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        return None if v is None else _expand_absolute(v)


class TargetConfig(_Model):
    url: str
    endpoint_url: str | None = None
    region: str | None = None
    storage_class: str | None = None
    sse: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] | None = None
    profile: str | None = None
    max_attempts: int = Field(5, ge=1, le=20)
    connect_timeout: Duration = 5.0
    read_timeout: Duration = 60.0
    multipart_threshold: Size = Field(100 * 1024 * 1024, ge=5 * 1024 * 1024)
    multipart_chunksize: Size = Field(16 * 1024 * 1024, ge=5 * 1024 * 1024)  # S3's minimum part size
    verify: VerifyMode = "server"  # how an upload is proven before `then:` (docs/archive.md)
    bwlimit: Rate | None = None  # uploads, read-backs and restores of this target, all workers together

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not (v.startswith("s3://") and len(v) > 5) and not v.startswith("file:///"):
            raise ValueError(f"{v!r} is not a target url (examples: s3://bucket/prefix, file:///mnt/nas)")
        return v


class Reopen(_Model):
    signal: str = "HUP"
    pidfile: str

    @field_validator("signal")
    @classmethod
    def _signal(cls, v: str) -> str:
        import signal

        name = v.upper().removeprefix("SIG")
        if not hasattr(signal, "SIG" + name):
            raise ValueError(f"{v!r} is not a signal name (examples: HUP, USR1)")
        return name


@dataclass(frozen=True)
class KeepTail:
    lines: int | None = None
    bytes: int | None = None


_LINES_RE = re.compile(r"(\d+)\s*lines?", re.IGNORECASE)


def _keep_tail(v: object) -> KeepTail:
    if isinstance(v, KeepTail):
        return v
    if isinstance(v, str) and (m := _LINES_RE.fullmatch(v.strip())):
        return KeepTail(lines=int(m.group(1)))
    try:
        return KeepTail(bytes=parse_size(v))
    except ValueError:
        raise ValueError(f"{v!r} is not a keep_tail (examples: 1000 lines, 1MiB)") from None


KeepTailValue = Annotated[KeepTail, BeforeValidator(_keep_tail)]


class Policy(_Model):
    """One policy as written; action-specific keys are checked by the action itself.

    The file format is flat: every action's keys are validated here, with the file, line
    and key in each message. The code of an action reads its own keys, typed, from
    `options` (the action's `Options` model, janitor/actions/base.py).
    """

    name: str
    path: str
    description: str | None = None
    enabled: bool = True
    action: str
    match: StrList = ("**/*",)
    exclude: StrList = ()
    older_than: Duration | None = None
    age_by: Literal["mtime", "atime", "ctime"] = "mtime"
    larger_than: Size | None = None
    smaller_than: Size | None = None
    keep_newest: int | None = Field(None, ge=0)
    when_disk_above: Percent | None = None
    settle: Duration | None = None
    one_filesystem: bool | None = None
    max_actions: int | None = Field(None, ge=1)
    max_percent: Percent | None = None
    allow_system_path: bool = False
    # A file some other process holds open only for reading (a download in progress, a
    # player) is "in use" too: skipped with the reader named. Off by default, as in
    # tmpreaper and systemd-tmpfiles (unlinking a file does not disturb its readers on
    # Linux); download bundles turn it on, so a download in progress keeps its file.
    skip_open_readers: bool = False
    # Act in directories other accounts can write as this account (logrotate's `su`);
    # janitor.asowner reads it as Credentials.
    su: Annotated[Credentials, PlainValidator(_su)] | None = None
    # remove directories this run emptied (never the policy path itself); janitor/execute.py
    remove_empty_dirs: bool = False
    # soft-delete (also `then: soft-delete` of archive and quota)
    trash_dir: str | None = None
    retain: Duration | None = None
    # archive (also quota's `then: archive`)
    target: str | None = None
    then: Then | None = None
    verify: VerifyMode | None = None  # overrides the target's for this policy
    bwlimit: Rate | None = None  # overrides the target's for this policy
    # truncate
    rotate: int | None = Field(None, ge=0, le=1000)
    compress: Literal["none", "gzip", "zstd"] | None = None
    delay_compress: bool | None = None
    keep_tail: KeepTailValue | None = None
    olddir: str | None = None
    mode: Literal["copytruncate", "rename"] | None = None
    reopen: Reopen | None = None
    postrotate: tuple[str, ...] | None = None
    allow_non_append_writers: bool | None = None
    # truncate, time-based rotation (logrotate's daily/weekly/monthly, dateext, minsize,
    # notifempty, missingok; see docs/truncate.md). Added by sec-logs, kept in one group.
    rotate_every: RotateEvery | None = None
    dateext: bool | None = None
    min_size: Size | None = None
    notifempty: bool | None = None
    missingok: bool | None = None
    # quota
    max_size: Size | None = None
    max_files: int | None = Field(None, ge=0)
    evict: Literal["oldest", "largest"] | None = None
    low_watermark: Percent | None = None
    # warn (watch-only thresholds; janitor/actions/warn.py)
    when_size_above: Size | None = None
    block_guard: bool | None = None

    _globs: CompiledGlobs = PrivateAttr()  # set in model_post_init
    _options: ActionOptions | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a policy name (letters, digits, '.', '_', '-'; not '.' or '..')")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _expand_absolute(v)

    @field_validator("trash_dir", "olddir")
    @classmethod
    def _abs_or_none(cls, v: str | None) -> str | None:
        return None if v is None else _expand_absolute(v)

    @field_validator("match", "exclude")
    @classmethod
    def _check_globs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in v:
            compile_globs([pattern])  # raises ValueError with the pattern named
        return v

    def model_post_init(self, __context: Any) -> None:
        self._globs = CompiledGlobs.build(self.match, self.exclude)

    @property
    def options(self) -> ActionOptions:
        """This policy's action keys as its action's typed `Options` (built once, on first use)."""
        if self._options is None:
            self._options = action_class(self.action).Options.from_values(self)
        return self._options

    @property
    def globs(self) -> CompiledGlobs:
        """The compiled globs; hot loops bind its methods once (pydantic attribute access is slow)."""
        return self._globs

    def selects(self, relpath: str) -> bool:
        return self.globs.selects(relpath)

    def selector(self) -> Callable[[str], bool]:
        return self.globs.selector()

    def prunes_dir(self, reldir: str) -> bool:
        return self.globs.prunes_dir(reldir)


@dataclass(frozen=True)
class CompiledGlobs:
    match_re: re.Pattern[str] | None
    exclude_re: re.Pattern[str] | None
    prune_re: re.Pattern[str] | None

    @classmethod
    def build(cls, match: tuple[str, ...], exclude: tuple[str, ...]) -> CompiledGlobs:
        return cls(compile_globs(match), compile_globs(exclude), prunable_dir_regex(exclude))

    def selects(self, relpath: str) -> bool:
        """Whether the globs (match, then exclude) select this relative path."""
        if self.match_re is None or not self.match_re.match(relpath):
            return False
        return not (self.exclude_re is not None and self.exclude_re.match(relpath))

    def selector(self) -> Callable[[str], bool]:
        """`selects` as a closure over the compiled globs, for the walk's per-file loop:
        pydantic's private-attribute lookup costs more than the match itself."""
        match = self.match_re.match if self.match_re is not None else None
        exclude = self.exclude_re.match if self.exclude_re is not None else None
        if match is None:
            return lambda relpath: False
        if exclude is None:
            return lambda relpath: match(relpath) is not None
        return lambda relpath: match(relpath) is not None and exclude(relpath) is None

    def prunes_dir(self, reldir: str) -> bool:
        """Whether an exclude removes this whole directory, so the walk can skip it."""
        return self.prune_re is not None and bool(self.prune_re.match(reldir))


class _FileModel(_Model):
    version: Annotated[int, BeforeValidator(_parse_version)]
    settings: Settings | None = None
    targets: dict[str, TargetConfig] = {}
    # validated one by one (below) so that one bad policy does not hide the others' problems
    policies: list[dict[str, Any]] = []

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v not in SUPPORTED_VERSIONS:
            raise ValueError(f"version {v} is not supported (supported: 1)")
        return v


@dataclass(frozen=True)
class Config:
    """Everything janitor needs from the policy files, merged and validated."""

    settings: Settings
    targets: dict[str, TargetConfig]
    policies: tuple[Policy, ...]
    sources: tuple[str, ...] = ()
    policy_source: dict[str, str] = field(default_factory=dict)
    # FILE:LINE: FIELD: MESSAGE for what is allowed but probably a mistake (a policy path
    # that does not exist, a delete with no age or size filter); errors under --strict
    warnings: tuple[str, ...] = ()

    def policy(self, name: str) -> Policy:
        for p in self.policies:
            if p.name == name:
                return p
        raise KeyError(name)

    def effective_settle(self, policy: Policy) -> float:
        return self.settings.settle if policy.settle is None else policy.settle

    def effective_one_filesystem(self, policy: Policy) -> bool:
        return self.settings.one_filesystem if policy.one_filesystem is None else policy.one_filesystem

    def effective_max_actions(self, policy: Policy) -> int:
        return self.settings.max_actions if policy.max_actions is None else policy.max_actions

    def trash_dir(self, policy: Policy | None = None) -> str:
        if policy is not None and policy.trash_dir:
            return policy.trash_dir
        return self.settings.trash_dir or os.path.join(self.settings.state_dir, "trash")

    def select(self, names: Iterable[str] | None) -> tuple[Policy, ...]:
        """The enabled policies, or the named ones (named disabled ones too)."""
        wanted = list(names or [])
        if not wanted:
            return tuple(p for p in self.policies if p.enabled)
        known = {p.name for p in self.policies}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            from .errors import UsageError

            hint = _did_you_mean(unknown[0], known)
            raise UsageError(f"no policy named {unknown[0]!r}{hint}; known: {', '.join(sorted(known))}")
        return tuple(p for p in self.policies if p.name in wanted)


def _expand_absolute(v: str) -> str:
    if "\0" in v:
        raise ValueError(NUL_MESSAGE)
    expanded = os.path.expandvars(os.path.expanduser(v))
    if "$" in expanded:
        raise ValueError(f"{v!r}: an environment variable in it is not set")
    if not os.path.isabs(expanded):
        raise ValueError(f"{v!r} is not an absolute path")
    return canonical_path(expanded)


NUL_MESSAGE = "contains a NUL byte (\\0); no path or setting may"


def canonical_path(path: str) -> str:
    """The one lexical spelling of an absolute path: `//etc`, `/./etc/`, `/usr/../etc` -> `/etc`.

    POSIX lets `normpath` keep exactly two leading slashes; Linux gives them no meaning, and
    a check that compares spellings must never see two names for one directory.
    """
    return "/" + os.path.normpath(path).lstrip("/")


def is_system_path(path: str) -> bool:
    """A system directory, anything below one, or anything above one (`/var` holds `/var/lib`)."""
    path = canonical_path(path)
    if path == "/":
        return True
    for sys_path in SYSTEM_PATHS:
        if path == sys_path or path.startswith(sys_path + "/") or sys_path.startswith(path + "/"):
            return True
    first = "/" + path.split("/")[1]
    return any(first.startswith(p) for p in SYSTEM_PATH_PREFIXES)


def _dir_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _chain_ids(path: str) -> list[tuple[int, int]]:
    """(dev, ino) of `path` and of each of its ancestors that exists, `/` last.

    What the kernel says, not the spelling: a symlink or a bind mount of /etc somewhere
    else has the (dev, ino) of /etc.
    """
    ids = []
    path = canonical_path(path)
    while True:
        dir_id = _dir_id(path)
        if dir_id is not None:
            ids.append(dir_id)
        if path == "/":
            return ids
        path = os.path.dirname(path)


def _system_ids() -> tuple[dict[tuple[int, int], str], dict[tuple[int, int], str]]:
    """(dev, ino) of the system directories, and of the directories that hold one (`/`, `/var`)."""
    inside: dict[tuple[int, int], str] = {}
    above: dict[tuple[int, int], str] = {}
    names = list(SYSTEM_PATHS)
    try:
        names += ["/" + n for n in os.listdir("/") if any(n.startswith(p[1:]) for p in SYSTEM_PATH_PREFIXES)]
    except OSError:
        pass
    for name in names:
        dir_id = _dir_id(name)
        if dir_id is not None:
            inside.setdefault(dir_id, name)
        parent = os.path.dirname(name)
        while True:
            dir_id = _dir_id(parent)
            if dir_id is not None:
                above.setdefault(dir_id, parent)
            if parent == "/":
                break
            parent = os.path.dirname(parent)
    return inside, above


def system_path_alias(path: str) -> str | None:
    """The system directory that `path` really is, lies in or holds, whatever it is called.

    `is_system_path` judges the spelling; this asks the filesystem, so a symlink
    (`/srv/conf -> /etc`), a bind mount of /etc or of / elsewhere, or `/lib` being
    `/usr/lib` on a merged-/usr system are refused like the directory they stand for.
    None when the path does not exist (yet) or is none of these.
    """
    own = _dir_id(path)
    if own is None:
        return None
    inside, above = _system_ids()
    for dir_id in _chain_ids(path):
        if dir_id in inside:
            return inside[dir_id]
    if own in above:
        return above[own]
    real = os.path.realpath(path)
    return real if is_system_path(real) else None


def overlap(a: str, b: str) -> str | None:
    """How directory `a` and directory `b` overlap: "is", "lies inside", "contains", or None.

    By spelling, and, where they exist, by (dev, ino) up their ancestor chains, so that a
    symlink or a bind mount does not hide that one is the other or inside it.
    """
    a, b = canonical_path(a), canonical_path(b)
    if a == b:
        return "is"
    if a.startswith(b.rstrip("/") + "/"):
        return "lies inside"
    if b.startswith(a.rstrip("/") + "/"):
        return "contains"
    a_ids, b_ids = _chain_ids(a), _chain_ids(b)
    a_id, b_id = _dir_id(a), _dir_id(b)
    if a_id is not None and a_id == b_id:
        return "is"
    if b_id is not None and b_id in a_ids:
        return "lies inside"
    if a_id is not None and a_id in b_ids:
        return "contains"
    return None


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


_FRIENDLY = {
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected text",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "float_parsing": "expected a number",
}


def _pydantic_problems(
    exc: ValidationError, data: Any, fname: str, prefix: tuple[str | int, ...] = ()
) -> list[tuple[int, str]]:
    problems: list[tuple[int, str]] = []
    for err in exc.errors():
        if err["loc"] and err["loc"][0] == "policies" and not prefix:
            continue  # policies are validated one by one
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        etype = err["type"]
        line = line_of(data, loc)
        where = _format_loc(loc)
        if etype == "extra_forbidden":
            known = _known_fields(loc[:-1])
            msg = f"unknown key{_did_you_mean(str(loc[-1]), known)}"
        elif etype == "missing":
            msg = "is required"
        elif etype == "value_error":
            msg = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
        elif etype in _FRIENDLY:
            msg = f"{_FRIENDLY[etype]}, got {err['input']!r}"
        elif etype == "literal_error":
            msg = f"{err['input']!r} is not one of {err['ctx']['expected']}"
        else:
            msg = err["msg"]
            if "input" in err and not isinstance(err["input"], dict | list):
                msg += f", got {err['input']!r}"
        problems.append((line, f"{where}: {msg}" if where else msg))
    return problems


def _known_fields(parent_loc: tuple[str | int, ...]) -> list[str]:
    model: type[BaseModel] = _FileModel
    for part in parent_loc:
        if isinstance(part, int):
            continue
        if model is _FileModel and part == "targets":
            return list(TargetConfig.model_fields)
        fld = model.model_fields.get(part)
        if fld is None:
            break
        ann = fld.annotation
        inner = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if part == "policies":
            model = Policy
        elif inner:
            model = inner[0]
    return list(model.model_fields)


def _problem_order(problem: str) -> tuple[str, int]:
    fname, _, rest = problem.partition(":")
    line = rest.split(":", 1)[0]
    return fname, int(line) if line.isdigit() else 0


def _policy_files(path: Path) -> list[Path]:
    # one definition with guard's cache (janitor/guardcache.py), whose key is these files
    try:
        files = [Path(f) for f in policy_files(str(path))]
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file or directory"]) from None
    if not files:
        raise ConfigError([f"{path}: no *.yaml or *.yml policy files in this directory"])
    return files


def load_config(path: str | os.PathLike[str] | None = None, *, strict: bool = False) -> Config:
    """Load one file or a directory of files; raise ConfigError listing every problem.

    `strict`: warnings (Config.warnings) are problems too, as `validate --strict` wants.
    """
    files = _policy_files(Path(config_path(path)))
    problems: list[str] = []
    parsed: list[_Parsed] = []
    for f in files:
        fname = str(f)
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{fname}: cannot read: {exc}")
            continue
        try:
            data, yaml_problems = load_yaml_with_lines(text)
        except YamlProblems as exc:
            problems.extend(f"{fname}:{p.line}: {p.message}" for p in exc.problems)
            continue
        problems.extend(f"{fname}:{p.line}: {p.message}" for p in yaml_problems)
        problems.extend(_nul_problems(data, fname))
        if not isinstance(data, LineDict):
            problems.append(f"{fname}:1: expected a mapping with version, settings, targets, policies")
            continue
        try:
            model = _FileModel.model_validate(data)
        except ValidationError as exc:
            problems.extend(f"{fname}:{line}: {msg}" for line, msg in _pydantic_problems(exc, data, fname))
            model = None
        policies, partial, policy_problems = _validate_policies(data, fname)
        problems.extend(policy_problems)
        parsed.append((fname, data, model or _FileModel(version=1), policies, partial))
    return _merge_and_check(parsed, problems, strict)


def _nul_problems(node: Any, fname: str, loc: tuple[str | int, ...] = (), root: Any = None) -> list[str]:
    """Every string (key or value) holding a NUL byte, by file, line and field.

    YAML lets `"\\0"` through, and a NUL would reach a system call as a truncated path.
    """
    root = node if root is None else root
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if "\0" in str(key):
                out.append(f"{fname}:{line_of(root, loc + (key,))}: {_format_loc(loc + (str(key),))}: "
                           f"key {NUL_MESSAGE}")
                continue
            out.extend(_nul_problems(value, fname, loc + (key,), root))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_nul_problems(value, fname, loc + (i,), root))
    elif isinstance(node, str) and "\0" in node:
        out.append(f"{fname}:{line_of(root, loc)}: {_format_loc(loc) or 'document'}: {NUL_MESSAGE}")
    return out


def _validate_policies(
    data: LineDict, fname: str
) -> tuple[list[tuple[int, Policy]], list[tuple[int, Policy]], list[str]]:
    """Each policy on its own, so every bad one is reported.

    Returns (index, policy) for the good ones, the same for bad ones that validate without
    their bad keys (checked further, never used), and the problems.
    """
    if "policies" not in data or data["policies"] is None:
        return [], [], []
    raw = data["policies"]
    if not isinstance(raw, list):
        # one policy written as a mapping instead of a list item is an easy slip: it must
        # not validate as "0 policies" and leave the timer doing nothing
        line = line_of(data, ("policies",))
        return [], [], [f"{fname}:{line}: policies: expected a list of policies (each item starts with '- ')"]
    good: list[tuple[int, Policy]] = []
    problems: list[str] = []
    partial: list[tuple[int, Policy]] = []
    for i, item in enumerate(raw):
        try:
            good.append((i, Policy.model_validate(item)))
        except ValidationError as exc:
            for line, msg in _pydantic_problems(exc, data, fname, prefix=("policies", i)):
                problems.append(f"{fname}:{line}: {msg}")
            # Without the bad keys the rest may still validate: check it too, so an
            # operator sees every problem of the policy in one go.
            bad_keys = {e["loc"][0] for e in exc.errors() if e["loc"]}
            if isinstance(item, dict):
                try:
                    partial.append((i, Policy.model_validate({k: v for k, v in item.items() if k not in bad_keys})))
                except ValidationError:
                    pass
    return good, partial, problems


_Parsed = tuple[str, Any, _FileModel, list[tuple[int, Policy]], list[tuple[int, Policy]]]


def _merge_and_check(parsed: list[_Parsed], problems: list[str], strict: bool = False) -> Config:
    """Merge the files' settings, targets and policies, check across them, raise all problems."""
    settings_values: dict[str, tuple[Any, str]] = {}
    settings_raw: dict[str, Any] = {}  # as written: the merged Settings is validated from these
    targets: dict[str, TargetConfig] = {}
    target_where: dict[str, str] = {}
    policies: list[Policy] = []
    policy_where: dict[str, str] = {}

    for fname, data, model, file_policies, _ in parsed:
        if model.settings is not None:
            for key in model.settings.model_fields_set:
                value = getattr(model.settings, key)
                where = f"{fname}:{line_of(data, ('settings', key))}"
                if key in settings_values and settings_values[key][0] != value:
                    problems.append(
                        f"{where}: settings.{key}: {value!r} conflicts with "
                        f"{settings_values[key][0]!r} at {settings_values[key][1]}"
                    )
                settings_values.setdefault(key, (value, where))
                settings_raw.setdefault(key, data["settings"][key])
        for tname, tcfg in model.targets.items():
            where = f"{fname}:{line_of(data, ('targets', tname))}"
            if tname in targets and targets[tname] != tcfg:
                problems.append(
                    f"{where}: targets.{tname}: defined differently at {target_where[tname]}"
                )
            targets.setdefault(tname, tcfg)
            target_where.setdefault(tname, where)
        for i, pol in file_policies:
            where = f"{fname}:{line_of(data, ('policies', i))}"
            if pol.name in policy_where:
                problems.append(
                    f"{where}: policies[{i}].name: duplicate policy name {pol.name!r} "
                    f"(first at {policy_where[pol.name]})"
                )
                continue
            policy_where[pol.name] = where
            policies.append(pol)

    settings = Settings.model_validate(settings_raw)
    warnings: list[str] = []

    def warner(i: int, data: Any, fname: str) -> Callable[[str, str], None]:
        def warn(key: str, message: str) -> None:
            warnings.append(f"{fname}:{line_of(data, ('policies', i, key))}: policies[{i}].{key}: {message}")
        return warn

    from .actions.base import action_names, registered_action
    from .trash import MOUNT_TRASH_NAME

    # janitor's own directories: a policy must neither be one, lie in one nor hold one
    own_dirs = [("the state_dir", settings.state_dir),
                ("the trash_dir", settings.trash_dir or os.path.join(settings.state_dir, "trash"))]
    for _, _, _, file_policies, partial in parsed:
        for _, pol in file_policies + partial:
            if pol.trash_dir and all(pol.trash_dir != d for _, d in own_dirs):
                own_dirs.append((f"the trash_dir of policy {pol.name!r}", pol.trash_dir))

    for fname, data, _, file_policies, partial in parsed:
        for i, pol in sorted(file_policies + partial, key=lambda ip: ip[0]):
            def report(key: str, message: str, i: int = i, data: Any = data, fname: str = fname) -> None:
                line = line_of(data, ("policies", i, key))
                problems.append(f"{fname}:{line}: policies[{i}].{key}: {message}")

            if not pol.allow_system_path:
                alias = None if is_system_path(pol.path) else system_path_alias(pol.path)
                if is_system_path(pol.path):
                    report(
                        "path",
                        f"{pol.path!r} is a system directory; refusing it unless the policy "
                        "says allow_system_path: true",
                    )
                elif alias is not None:
                    report(
                        "path",
                        f"{pol.path!r} is, lies in or holds the system directory {alias} (through a "
                        "symlink or a bind mount); refusing it unless the policy says allow_system_path: true",
                    )
            for what, forbidden in own_dirs:
                how = overlap(pol.path, forbidden)
                if how is not None:
                    report("path", f"{pol.path!r} {how} {what} ({forbidden}); janitor never cleans its own state")
            if MOUNT_TRASH_NAME in pol.path.split("/"):
                report("path", f"{pol.path!r} lies inside a {MOUNT_TRASH_NAME} directory (janitor's trash on that "
                       "filesystem); janitor never cleans its own state")
            warn = warner(i, data, fname)
            if not os.path.lexists(pol.path):
                warn("path", f"{pol.path!r} does not exist: the policy does nothing until it does (a typo?)")
            if pol.action == "delete" and pol.older_than is None and pol.larger_than is None \
                    and pol.smaller_than is None:
                warn("action", "delete with no older_than, larger_than or smaller_than removes every matching "
                     "file once it has settled; add a filter if that is not the intent")
            action_cls = registered_action(pol.action)
            if action_cls is None:
                report(
                    "action",
                    f"unknown action {pol.action!r}{_did_you_mean(pol.action, action_names())}; "
                    f"valid: {', '.join(action_names())}",
                )
                continue
            for key, message in action_cls.check_policy(pol, set(targets)):
                report(key, message)
            if pol.skip_open_readers and not action_cls.skips_busy:
                report("skip_open_readers", f"does not apply to action {pol.action!r}, which acts on files in use "
                       "by design")
            if pol.larger_than is not None and pol.smaller_than is not None and pol.larger_than >= pol.smaller_than:
                report("smaller_than", "must be greater than larger_than, or nothing can match")

    if strict:
        problems.extend(warnings)
        warnings = []
    if problems:
        raise ConfigError(sorted(dict.fromkeys(problems), key=_problem_order))
    return Config(
        settings=settings,
        targets=targets,
        policies=tuple(policies),
        sources=tuple(p[0] for p in parsed),
        policy_source=policy_where,
        warnings=tuple(sorted(warnings, key=_problem_order)),
    )
