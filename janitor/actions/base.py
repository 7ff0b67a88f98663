"""The action contract: the interface every action provides, and the registry of actions.

This module sits below the engine (planner, executor, runner): it imports no engine module
at run time (the engine's types appear in annotations only), and the engine finds actions
here by name, never by importing an action module. Each action module registers its class
with `@register`; the front ends load the built-in actions once (janitor/plugins.py).

An action declares the policy keys it accepts and validates them, chooses among the
eligible files when planning (most take them all), and applies itself to one file whose
parent directory is already open, so every change is made relative to a verified
directory descriptor. The executor does the rest: re-checks, journal, batching, events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from ..catalog import JournalEntry
    from ..config import Config, Policy
    from ..execute import ExecContext, PolicyOutcome
    from ..facttable import FactRows
    from ..plan import LazyReason, PlannedAction, PolicyPlan, Skip
    from ..planner import PlanContext
    from ..scan import FileFact

# Keys that only some actions accept; a policy setting one its action does not declare in
# `Options` is an error naming the actions it belongs to. Kept as written (not derived from
# the actions' Options): a few keys (verify, bwlimit, rotate_every...) have always been
# accepted, and ignored, on the other actions, and every valid policy file stays valid.
ACTION_SPECIFIC_KEYS = frozenset(
    {
        "trash_dir", "retain", "target", "then",
        "rotate", "compress", "delay_compress", "keep_tail", "olddir", "mode", "reopen",
        "postrotate", "allow_non_append_writers",
        "max_size", "max_files", "evict", "low_watermark",
        "when_size_above", "block_guard",
    }
)  # fmt: skip


# What becomes of a file at its path once acted on: removed, moved into the trash, or left
# in place (archive's then: keep). None for actions that leave no file to dispose of
# (truncate cuts a log in place, warn only watches).
Disposal = Literal["delete", "trash", "keep"]
# the `then` keys (archive, quota) as dispositions; quota's then: archive archives and deletes
DISPOSAL_OF_THEN: dict[str, Disposal] = {"delete": "delete", "soft-delete": "trash", "keep": "keep",
                                         "archive": "delete"}


@dataclass(frozen=True, slots=True)
class Done:
    """What `Action.apply` did to one file: the executor journals it and emits the done event."""

    # bytes really processed, when not the file's size (truncate cuts only a prefix)
    bytes: int | None = None
    # journal columns known only after acting (catalog.JOURNAL_COLUMNS: object_key, sha256,
    # version_id, detail...); they are in the done event too, except `detail`
    columns: Mapping[str, Any] = field(default_factory=dict)
    # fields of the done event only, not journaled (e.g. truncate's method)
    event: Mapping[str, str | int | float] = field(default_factory=dict)


# done as planned, nothing more to record (one shared object: delete runs per file by the million)
DONE = Done()


class ActionOptions(BaseModel):
    """An action's own policy keys, typed: each action declares `Options`, a subclass.

    The policy file stays flat (the keys sit next to `action:`), and config.py validates
    every key there, so messages keep naming the file, line and key. `Policy.options` is
    then this model, built from those validated values for the policy's action; an action
    reads its keys as `MyOptions.of(policy).key`. Each field's type must be the flat
    `Policy` field's (tests/test_config.py checks it), so both mean the same.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def of(cls, policy: Policy) -> Self:
        """This action's options of `policy`: its own `options`, or (for a policy of another
        action that delegates here, as quota's `then: archive`) the same keys read from it."""
        options = policy.options
        if isinstance(options, cls):
            return options
        return cls.from_values(policy)

    @classmethod
    def from_values(cls, policy: Policy) -> Self:
        """Built from the policy's flat, already validated attributes (no second validation)."""
        names = cls.model_fields.keys()
        return cls.model_construct(_fields_set=policy.model_fields_set & names,
                                   **{name: getattr(policy, name) for name in names})


@dataclass(frozen=True)
class RowSelection:
    """A selection made by arithmetic over the walk's columns (quota): the chosen rows of
    the table `select` was given, in the order to act on them, all for one reason and
    detail. The plan keeps it as those row numbers, not as an object per file."""

    rows: FactRows
    reason: str | LazyReason
    detail: dict[str, Any] | None = None


class Action:
    """One action, by the name policy files give it; subclasses register with `@register`."""

    name: ClassVar[str]
    # the action's own policy keys and their types
    Options: ClassVar[type[ActionOptions]] = ActionOptions
    # the names of those keys (set from Options for each action class)
    options: ClassVar[frozenset[str]] = frozenset()
    # Files still being written are never acted on; truncate is the exception by design.
    skips_busy: ClassVar[bool] = True
    # Whether select() needs every glob-matched file (quota counts them all), not only
    # those that pass the age and size filters.
    needs_all_matched: ClassVar[bool] = False
    # the event emitted for each file done (docs/events.md)
    done_event: ClassVar[str] = "file_processed"
    # True when `select` returns files in the order they should go (quota's eviction order):
    # when_disk_above then trims that order instead of re-sorting oldest first.
    orders_selection: ClassVar[bool] = False
    # True when `apply` is safe in worker threads, on different directories at once: it uses
    # only the directory descriptor and name it is given, and touches no shared state (delete).
    parallel_apply: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.options = frozenset(cls.Options.model_fields)

    @classmethod
    def check_policy(cls, policy: Policy, target_names: set[str]) -> list[tuple[str, str]]:
        """(key, message) for each problem with the policy's action-specific keys."""
        problems = []
        for key in sorted((policy.model_fields_set & ACTION_SPECIFIC_KEYS) - cls.options):
            owners = [a.name for a in _registry().values() if key in a.options]
            problems.append((key, f"is not an option of action {cls.name!r} (it belongs to {', '.join(owners)})"))
        return problems

    @classmethod
    def disposal(cls, policy: Policy) -> Disposal | None:
        """What becomes of each file this policy acts on (the plan says it: `plan --json`)."""
        return None

    def select(
        self, policy: Policy, matched: list[FileFact], eligible: list[FileFact], ctx: PlanContext
    ) -> Iterable[tuple[FileFact, str | LazyReason, dict[str, Any] | None] | Skip] | RowSelection:
        """Choose files to act on: (fact, reason, detail). Default: every eligible file, for
        the planner's own reason (`ctx.own_reason`: formatted only if the plan is shown).

        An action may also yield a `Skip` for an eligible file it must leave alone (e.g.
        truncate and a writer without O_APPEND); the plan lists it with its reason. Or it
        may return a `RowSelection` of the walk's rows (`matched` is then a FactTable and
        `eligible` its FactRows).
        """
        reason = ctx.own_reason(policy)
        return ((fact, reason, None) for fact in eligible)

    def per_file(self, ctx: ExecContext) -> Action:
        """The action each file goes through (its journal fields, batch preparation, apply,
        done event): this one, or the one it hands its files to (quota: its `then`). The
        executor runs the policy-wide steps (before_run, after_run) on this one."""
        return self

    def journal_fields(self, item: PlannedAction, ctx: ExecContext) -> dict[str, Any]:
        """Extra journal columns known before acting (e.g. the trash location)."""
        return {}

    def prepare_batch(self, items: list[PlannedAction], fields: list[dict[str, Any]], ctx: ExecContext) -> None:
        """Called once per batch after the intents are journaled and before any `apply`.

        Actions with slow, independent work (archive uploads) do it here concurrently and
        keep the results for `apply`, which then only verifies and finishes each file.
        """

    def apply(self, item: PlannedAction, dir_fd: int, name: str, fields: dict[str, Any], ctx: ExecContext) -> Done:
        """Do it, and say what was done; raise to fail this file (FileSkipped to skip it)."""
        raise NotImplementedError

    def before_run(self, policy: Policy, config: Config, ctx: ExecContext) -> None:
        """Housekeeping before a policy's items run (e.g. purging expired trash)."""

    def before_actions(self, items: list[PlannedAction], ctx: ExecContext) -> None:
        """Called once, only when the policy has files to act on, before anything is journaled.

        Raise a JanitorError to fail the whole policy without touching a file (e.g. an
        archive target that cannot be reached).
        """

    def after_actions(self, ctx: ExecContext) -> None:
        """Called once after the last batch (also when one failed), if before_actions ran."""

    def after_run(self, pp: PolicyPlan, outcome: PolicyOutcome, ctx: ExecContext) -> None:
        """Called once after a policy's planned items ran (e.g. to report totals)."""

    def done_event_for(self, item: PlannedAction) -> str:
        """The event for one file done; actions whose effect differs per file override it."""
        return self.done_event

    @classmethod
    def reconcile(cls, entry: JournalEntry) -> tuple[str, str | None]:
        """Settle a journal row a killed run left `planned`: (state, note)."""
        from ..reconcile import reconcile_by_presence

        return reconcile_by_presence(entry)

    @classmethod
    def reconcile_with(cls, entry: JournalEntry, config: Config | None) -> tuple[str, str | None]:
        """`reconcile`, for actions that need the configuration (archive asks its target)."""
        return cls.reconcile(entry)


# name -> action class, in the order registered (the order `valid: ...` lists them)
ACTIONS: dict[str, type[Action]] = {}


def register(cls: type[Action]) -> type[Action]:
    """Class decorator: make an action known by its `name` in policy files."""
    if ACTIONS.get(cls.name, cls) is not cls:
        raise ValueError(f"action {cls.name!r} is registered twice")
    ACTIONS[cls.name] = cls
    return cls


def _registry() -> dict[str, type[Action]]:
    if not ACTIONS:
        # a library caller that skipped the front ends: say what is missing, not "unknown action"
        raise RuntimeError("no actions are registered: load them first with janitor.plugins.load()")
    return ACTIONS


def action_names() -> list[str]:
    """Every registered action name, in registration order."""
    return list(_registry())


def registered_action(name: str) -> type[Action] | None:
    """The action class for `name`, or None when no such action is registered."""
    return _registry().get(name)


def action_class(name: str) -> type[Action]:
    """The action class for `name` (KeyError when unknown: config validation rejects those)."""
    return _registry()[name]


def get_action(name: str) -> Action:
    """A fresh action object for one policy's plan or run."""
    return action_class(name)()
