"""warn: a watch-only policy. It measures thresholds and reports them; it never selects,
opens or changes a file (janitor/watch.py does the measuring)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..config import Size
from .base import Action, ActionOptions, Done, register

if TYPE_CHECKING:
    from ..config import Config, Policy
    from ..execute import ExecContext
    from ..plan import PlannedAction, Skip
    from ..planner import PlanContext
    from ..scan import FileFact


class WarnOptions(ActionOptions):
    when_size_above: Size | None = None  # warn when the files under the path pass this total
    block_guard: bool | None = None  # let `janitor guard` refuse on this policy's when_disk_above


@register
class WarnAction(Action):
    name = "warn"
    Options = WarnOptions
    # nothing is ever acted on, so nothing is "busy": no settle/open-file skips in the plan
    skips_busy = False

    @classmethod
    def check_policy(cls, policy: Policy, target_names: set[str]) -> list[tuple[str, str]]:
        problems = super().check_policy(policy, target_names)
        if policy.when_disk_above is None and WarnOptions.of(policy).when_size_above is None:
            problems.append(("action", "warn needs when_disk_above and/or when_size_above (e.g. 90%, 10GiB)"))
        return problems

    def select(
        self, policy: Policy, matched: list[FileFact], eligible: list[FileFact], ctx: PlanContext
    ) -> Iterable[tuple[FileFact, str, dict[str, Any] | None] | Skip]:
        return ()

    def before_run(self, policy: Policy, config: Config, ctx: ExecContext) -> None:
        # Runs for every warn policy that is not in error, also when the plan says
        # "inactive" (the disk is under when_disk_above but the size limit may be passed).
        from ..watch import check_policy, emit_exceeded

        emit_exceeded(check_policy(config, policy), ctx.events)

    def apply(self, item: PlannedAction, dir_fd: int, name: str, fields: dict[str, Any], ctx: ExecContext) -> Done:
        raise AssertionError("warn never acts on a file")
