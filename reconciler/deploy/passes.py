"""One pass of the reconciler: fetch, validate, observe, plan, apply; status at the end.

Each step is small and may stop the pass; the class of the error decides the
result (house style 7):

- git or Docker unreachable: ``unavailable``; nothing is changed, the daemon
  backs off and tries again;
- the commit's desired state is invalid, or (with ``RECONCILER_VERIFY``) it is
  not signed by an allowed key: ``stalled``; what runs stays as it is (the
  last applied commit is still enforced against drift), no restore request
  of it runs; only a new commit, or a fixed env file or key list, moves on;
- something we do not own is in the way, an image cannot be had, or an apply
  fails part way: ``failed``, with what was done.

A pass that succeeded ends by removing images the reconciler built for the
project and no longer needs (deploy/collecting.py).

Every pass re-reads Docker, even when the commit has not changed, so a
container removed or stopped by hand is put back (level-based).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from reconciler.decide.actions import Action, Plan, RecreateService, describe
from reconciler.decide.planning import plan as make_plan
from reconciler.decide.swarm_planning import plan_swarm
from reconciler.deploy.applying import ChangeSet, OnEvent, OnPulled, apply
from reconciler.deploy.collecting import collect_images, record_pulled
from reconciler.deploy.progress import ProgressFile
from reconciler.deploy.self_update import hand_over, own_container_id, split_own_actions
from reconciler.deploy.swarm_applying import apply_swarm
from reconciler.errors import (
    AfterApplyFailed,
    ApplyError,
    Conflict,
    EngineUnavailable,
    ImageUnavailable,
    InvalidDesiredState,
    SourceUnavailable,
    StateError,
    Unavailable,
    UnverifiedCommit,
)
from reconciler.logs import event
from reconciler.model.desired import DesiredState
from reconciler.model.engine_mode import EngineMode
from reconciler.model.loading import load_desired_state
from reconciler.model.observed import Observed, ObservedSwarm
from reconciler.ports import Checkout, Engine, Source, SwarmEngine, Verifier
from reconciler.redaction import redact_text, redact_url
from reconciler.secret_keys import load_secrets
from reconciler.settings import Settings
from reconciler.state import names
from reconciler.state.files import exclusive_lock
from reconciler.state.status import HistoryEntry, PassResult, Reason, Status, StatusStore, now

# Extra checks of a commit beyond compose.yaml (backup.yaml, restore.yaml), and
# work after a converged apply (due restore requests). Kept as hooks so the
# pass does not import every feature.
Validator = Callable[[Checkout, DesiredState], None]
AfterApply = Callable[[Checkout, DesiredState, Status], list[str]]
# Told of every finished pass (notifications, metrics), after its status is
# saved: what happened and how long it took in seconds. A listener's failure is
# logged and never changes the pass.
PassListener = Callable[["PassOutcome", float], None]
# Told as a pass starts applying a commit: the commit, the one applied before
# it (None on the first) and the plan about to be applied. The commit status
# "pending", with the plan's summary. Like a listener, its failure is logged
# and never changes the pass.
BeforeApply = Callable[[str, str | None, Plan], None]
# Work a killed job left half done (services a backup had stopped), finished
# under the pass lock before the pass looks at the engine; each returns a line
# per change and raises ``Unavailable`` when the engine cannot be reached.
Recovery = Callable[[], list[str]]

PASS_LOCK_WAIT_S = names.PASS_LOCK_WAIT_S


@dataclass
class PassOutcome:
    result: PassResult
    reason: Reason
    message: str = ""
    commit: str | None = None
    changes: list[str] = field(default_factory=list)
    plan: Plan | None = None

    @property
    def ok(self) -> bool:
        return self.result == "succeeded"


@dataclass
class Prepared:
    """A commit fetched and validated, with what runs now and the plan between them."""

    checkout: Checkout
    desired: DesiredState
    observed: Observed | ObservedSwarm
    plan: Plan
    # Set in swarm mode: the Swarm the plan is for.
    swarm: SwarmEngine | None = None


class Reconciler:
    """The steps of a pass over injected seams (a ``Source`` and an ``Engine``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: Source,
        engine: Engine,
        store: StatusStore | None = None,
        validators: list[Validator] | None = None,
        after_apply: list[AfterApply] | None = None,
        own_container: str | Literal["detect"] | None = "detect",
        listeners: list[PassListener] | None = None,
        before_apply: list[BeforeApply] | None = None,
        verifier: Verifier | None = None,
        recoveries: list[Recovery] | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.engine = engine
        self.store = store or StatusStore(settings.state_dir)
        self.progress = ProgressFile(settings.state_dir)
        self.validators = validators or []
        self.after_apply = after_apply or []
        self.listeners = listeners or []
        self.before_apply = before_apply or []
        self.recoveries = recoveries or []
        # Set when RECONCILER_VERIFY is on: the head must be signed by an allowed key.
        self.verifier = verifier
        # The container this process runs in, if any: a pass never stops or
        # removes it, it hands its replacement over (deploy/self_update.py).
        self.own_container = own_container_id() if own_container == "detect" else own_container

    # -- steps -----------------------------------------------------------

    def load(self, checkout: Checkout, *, engine_mode: EngineMode = "engine") -> DesiredState:
        desired = load_desired_state(
            checkout.root,
            directory=self.settings.directory,
            project=self.settings.project,
            environ=self.settings.environ,
            secrets=load_secrets(checkout.root, self.settings),
            engine_mode=engine_mode,
        )
        for validate in self.validators:
            validate(checkout, desired)
        return desired

    def verify(self, commit: str) -> None:
        """Raise ``UnverifiedCommit`` unless verification is off or the commit passes.

        Only the commit about to be applied (the head) is verified, before
        anything of it is loaded: its signer vouches for its whole tree.
        """
        if self.verifier is None:
            return
        try:
            verdict = self.verifier.verify(commit)
        except Unavailable as exc:
            raise SourceUnavailable(str(exc)) from exc
        if not verdict.ok:
            raise UnverifiedCommit(verdict.describe())

    def prepare(self, commit: str) -> Prepared:
        try:
            checkout = self.source.checkout(commit)
        except Unavailable as exc:
            raise SourceUnavailable(str(exc)) from exc
        swarm = self.swarm()
        desired = self.load(checkout, engine_mode="swarm" if swarm is not None else "engine")
        try:
            if swarm is not None:
                observed_swarm = swarm.observe_swarm(desired.project)
                plan = plan_swarm(desired, observed_swarm)
                return Prepared(checkout, desired, observed_swarm, plan, swarm=swarm)
            observed = self.engine.observe(desired.project)
        except Unavailable as exc:
            raise EngineUnavailable(str(exc)) from exc
        return Prepared(checkout, desired, observed, make_plan(desired, observed))

    def swarm(self) -> SwarmEngine | None:
        """The Swarm to deploy to, or None on a plain engine (RECONCILER_ENGINE)."""
        wanted = self.settings.engine
        if wanted == "engine":
            return None
        engine = self.engine if isinstance(self.engine, SwarmEngine) else None
        try:
            role = engine.swarm_role() if engine is not None else "none"
        except Unavailable as exc:
            raise EngineUnavailable(str(exc)) from exc
        if role == "manager":
            return engine
        if wanted == "swarm":
            raise EngineUnavailable(
                "RECONCILER_ENGINE=swarm, but the engine is not a Swarm manager: make it one "
                '(docker swarm init, docs/operations.md "Growing past one VM"), or set '
                "RECONCILER_ENGINE=auto"
            )
        if role == "worker":
            # A plain stack here would run beside the Swarm's tasks, and the
            # managers would never know of it.
            raise EngineUnavailable(
                "the engine is a member of a Swarm but not a manager (a worker, or a node "
                "joining or locked): run the reconciler on a manager (docs/operations.md "
                '"Growing past one VM"), or set RECONCILER_ENGINE=engine to run the stack on '
                "this engine alone"
            )
        return None

    def apply_prepared(
        self, prepared: Prepared, plan: Plan, *, commit: str, on_event: OnEvent
    ) -> ChangeSet:
        if prepared.swarm is not None:
            return apply_swarm(
                plan, prepared.swarm, project=prepared.desired.project, commit=commit,
                on_event=on_event,
                volumes={v.name: v for v in prepared.desired.volumes.values()},
            )  # fmt: skip
        return apply(
            plan,
            self.engine,
            project=prepared.desired.project,
            commit=commit,
            on_event=on_event,
            on_pulled=self._pulled_for(prepared.desired.project),
        )

    def remote_head(self) -> str:
        try:
            return self.source.remote_head()
        except Unavailable as exc:
            raise SourceUnavailable(str(exc)) from exc

    # -- commands --------------------------------------------------------

    def plan_only(self) -> PassOutcome:
        """What a sync would do now; changes nothing (``reconciler plan``)."""
        commit: str | None = None
        try:
            commit = self.remote_head()
            self.verify(commit)
            prepared = self.prepare(commit)
        except (Unavailable, InvalidDesiredState, UnverifiedCommit) as exc:
            return _redacted(self._outcome_of_error(exc, commit))
        reason: Reason = "Conflict" if prepared.plan.conflicts else "ReconciliationSucceeded"
        return _redacted(
            PassOutcome(
                result="failed" if prepared.plan.conflicts else "succeeded",
                reason=reason,
                message="\n".join(prepared.plan.conflicts),
                commit=commit,
                plan=prepared.plan,
            )
        )

    def sync(self) -> PassOutcome:
        """One full pass under the pass lock; status is written once, at the end."""
        started = time.monotonic()
        try:
            with exclusive_lock(
                self.settings.state_dir / names.PASS_LOCK, wait_s=PASS_LOCK_WAIT_S, what="pass"
            ):
                status = self.store.load()
                try:
                    recovered = [line for recover in self.recoveries for line in recover()]
                except Unavailable as exc:
                    outcome = PassOutcome("unavailable", "EngineUnavailable", str(exc))
                else:
                    try:
                        outcome = self._sync(status)
                    finally:
                        self.progress.end()
                    outcome.changes[:0] = recovered
                # Before status, history, logs and listeners see it: an error
                # may quote a value decrypted from the commit.
                outcome = _redacted(outcome)
                self._record(status, outcome, duration_s=time.monotonic() - started)
        except StateError as exc:
            outcome = PassOutcome("unavailable", "StateUnavailable", str(exc))
        event(
            "sync.done" if outcome.ok else "sync.failed",
            level=20 if outcome.ok else 40,
            result=outcome.result,
            reason=outcome.reason,
            commit=outcome.commit,
            changes=len(outcome.changes),
            message=outcome.message or None,
            duration_s=round(time.monotonic() - started, 3),
        )
        self.tell_listeners(outcome, time.monotonic() - started)
        return outcome

    def tell_listeners(self, outcome: PassOutcome, duration_s: float) -> None:
        for listener in self.listeners:
            try:
                listener(outcome, duration_s)
            except Exception as exc:  # a failing notifier must not fail a deploy
                event(
                    "listener.crashed",
                    level=40,
                    listener=getattr(listener, "__name__", repr(listener)),
                    error=repr(exc),
                    exc_info=True,
                )

    def _tell_before_apply(self, commit: str, applied: str | None, plan: Plan) -> None:
        for hook in self.before_apply:
            try:
                hook(commit, applied, plan)
            except Exception as exc:  # a failing notifier must not fail a deploy
                event(
                    "before_apply.crashed",
                    level=40,
                    hook=getattr(hook, "__name__", repr(hook)),
                    error=repr(exc),
                    exc_info=True,
                )

    def _sync(self, status: Status) -> PassOutcome:
        """The pass's steps; the outcome carries the plan, once there is one."""
        planned: list[Plan] = []
        outcome = self._sync_steps(status, planned)
        outcome.plan = outcome.plan or (planned[0] if planned else None)
        return outcome

    def _sync_steps(self, status: Status, planned: list[Plan]) -> PassOutcome:
        commit: str | None = None
        try:
            commit = self.remote_head()
            event("sync.start", commit=commit, applied=status.applied_commit)
            try:
                self.verify(commit)
                prepared = self.prepare(commit)
            except (InvalidDesiredState, UnverifiedCommit) as exc:
                return self._stalled(status, commit, exc)
            planned.append(prepared.plan)
            if prepared.plan.conflicts:
                return PassOutcome("failed", "Conflict", "\n".join(prepared.plan.conflicts), commit)
            for action in prepared.plan.actions:
                event("plan.action", commit=commit, action=describe(action), **_why(action))
            plan, own = split_own_actions(prepared.plan, self.own_container)
            for line in own.dropped:
                event("self_update.skipped", level=30, commit=commit, message=line)
            self._tell_before_apply(commit, status.applied_commit, plan)
            if plan.actions:
                self.progress.begin(commit, actions=len(plan.actions))
            change_set = self.apply_prepared(
                prepared, plan, commit=commit, on_event=self.progress.listening(_log_apply_event)
            )
            changes = list(change_set.done)
            previous = status.applied_commit
            status.project = prepared.desired.project
            status.applied_commit = commit
            status.applied_at = now()
            status.applied_engine = "swarm" if prepared.swarm is not None else "engine"
            hook_failures: list[str] = []
            self.progress.step("after the apply: restore requests")
            for hook in self.after_apply:
                try:
                    changes += hook(prepared.checkout, prepared.desired, status)
                except AfterApplyFailed as exc:
                    changes += exc.done
                    hook_failures.append(str(exc))
            if own.replace is not None:
                # Last, so this pass's own work and status are complete before
                # the helper's pass (which waits for the pass lock) replaces us.
                changes.append(
                    hand_over(
                        self.engine, own.replace, project=prepared.desired.project, done=changes
                    )
                )
            # A container bind-mounts files of the commit that created it, so
            # that commit's folder stays as long as the container does.
            in_use = (
                {c.commit for c in prepared.observed.containers if c.project == status.project}
                if isinstance(prepared.observed, Observed)
                else set()
            )
            self._prune_checkouts(keep={c for c in (commit, previous, *in_use) if c})
            if hook_failures:
                # A restore request failed: the sync fails; the apply stands.
                return PassOutcome(
                    "failed", "ApplyFailed", "\n".join(hook_failures), commit, changes
                )
            # Only now, the deploy having succeeded: a rolled-back one removes nothing.
            # (In swarm mode images come from a registry: none is built here.)
            if isinstance(prepared.observed, Observed):
                changes += collect_images(
                    self.engine,
                    desired=prepared.desired,
                    state_dir=self.settings.state_dir,
                    observed=None if changes else prepared.observed,
                )
            message = "; ".join(change_set.failures)
            return PassOutcome("succeeded", "ReconciliationSucceeded", message, commit, changes)
        except Unavailable as exc:
            return self._outcome_of_error(exc, commit)
        except ApplyError as exc:
            if isinstance(exc.__cause__, Unavailable):
                return PassOutcome(
                    "unavailable", "EngineUnavailable", str(exc), commit, list(exc.done)
                )
            reason: Reason = (
                "ImageUnavailable" if isinstance(exc.__cause__, ImageUnavailable) else "ApplyFailed"
            )
            return PassOutcome("failed", reason, str(exc), commit, list(exc.done))
        except Conflict as exc:
            return PassOutcome("failed", "Conflict", str(exc), commit)

    def _stalled(
        self, status: Status, commit: str, exc: InvalidDesiredState | UnverifiedCommit
    ) -> PassOutcome:
        """The head is invalid or unverified: keep enforcing the last applied commit."""
        outcome = self._outcome_of_error(exc, commit)
        if isinstance(exc, InvalidDesiredState):
            for issue in exc.issues:
                event("validate.error", level=40, commit=commit, error=str(issue))
        applied = status.applied_commit
        if applied is None or applied == commit:
            return outcome
        try:
            previous = self.prepare(applied)
        except (InvalidDesiredState, Unavailable) as previous_exc:
            event("drift.skipped", level=30, commit=applied, error=str(previous_exc))
            return outcome
        # Never its own container: a hand-over belongs to a good commit only.
        previous_plan, _own = split_own_actions(previous.plan, self.own_container)
        if previous_plan.actions and not previous_plan.conflicts:
            try:
                change_set = self.apply_prepared(
                    previous, previous_plan, commit=applied, on_event=_log_apply_event
                )
                outcome.changes = list(change_set.done)
            except (ApplyError, Conflict) as apply_exc:
                outcome.message += f"\nrepairing drift of {applied[:12]} failed: {apply_exc}"
        return outcome

    def _pulled_for(self, project: str) -> OnPulled:
        """The apply's ``on_pulled``: image GC owns what a pull brought."""
        state_dir = self.settings.state_dir
        return lambda service, image: record_pulled(state_dir, project, service, image)

    def _outcome_of_error(self, exc: Exception, commit: str | None) -> PassOutcome:
        if isinstance(exc, InvalidDesiredState):
            return PassOutcome("stalled", "ValidationFailed", str(exc), commit)
        if isinstance(exc, UnverifiedCommit):
            return PassOutcome("stalled", "VerificationFailed", str(exc), commit)
        reason: Reason = (
            "SourceUnavailable" if isinstance(exc, SourceUnavailable) else "EngineUnavailable"
        )
        return PassOutcome("unavailable", reason, str(exc), commit)

    def _prune_checkouts(self, keep: set[str]) -> None:
        prune = getattr(self.source, "prune_checkouts", None)
        if prune is None:
            return
        try:
            prune(keep)
        except OSError as exc:  # a left-over folder costs disk, not correctness
            event("checkouts.prune_failed", level=30, error=str(exc))

    def _record(self, status: Status, outcome: PassOutcome, *, duration_s: float) -> None:
        status.repo = redact_url(self.settings.repo)
        status.branch = self.settings.branch
        if self.settings.project:
            status.project = self.settings.project
        status.attempted_commit = outcome.commit or status.attempted_commit
        status.last_sync = now()
        status.last_result = outcome.result
        status.last_duration_s = round(duration_s, 3)
        status.ready = outcome.ok
        status.reason = outcome.reason
        status.last_error = None if outcome.ok else outcome.message
        status.stalled_commit = outcome.commit if outcome.result == "stalled" else None
        status.consecutive_failures = 0 if outcome.ok else status.consecutive_failures + 1
        status.record(
            HistoryEntry(
                time=status.last_sync,
                commit=outcome.commit,
                result=outcome.result,
                reason=outcome.reason,
                message=outcome.message[:2000],
                changes=outcome.changes,
                duration_s=round(duration_s, 3),
            )
        )
        self.store.save(status)


def _redacted(outcome: PassOutcome) -> PassOutcome:
    outcome.message = redact_text(outcome.message)
    outcome.changes = [redact_text(change) for change in outcome.changes]
    return outcome


def _why(action: Action) -> dict[str, Any]:
    """A recreate's changes for its log event, as data: ``[{"kind": "file", "name": ...}]``."""
    if isinstance(action, RecreateService) and action.changes:
        return {"changes": [{"kind": c.kind, "name": c.name} for c in action.changes]}
    return {}


def _log_apply_event(name: str, fields: dict[str, Any]) -> None:
    level = 40 if name.endswith("failed") else 20
    event(name, level=level, **fields)
