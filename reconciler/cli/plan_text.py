"""``reconciler plan``'s text: one line per action, a symbol for its kind.

Apart from ``deploy.py`` so that ``sync`` asked of the daemon does not load
the actions' model only to print lines the daemon already wrote.
"""

from __future__ import annotations

from reconciler.decide.actions import (
    Action,
    CreateNetwork,
    CreateService,
    CreateSwarmObject,
    CreateSwarmService,
    CreateVolume,
    Plan,
    RecreateService,
    RemoveContainer,
    RemoveNetwork,
    RemoveSwarmObject,
    RemoveSwarmService,
    StartService,
    UpdateSwarmService,
    describe,
)

_SYMBOLS: dict[type, str] = {
    CreateNetwork: "+",
    CreateVolume: "+",
    CreateService: "+",
    RecreateService: "~",
    StartService: ">",
    RemoveContainer: "-",
    RemoveNetwork: "-",
    CreateSwarmObject: "+",
    CreateSwarmService: "+",
    UpdateSwarmService: "~",
    RemoveSwarmObject: "-",
    RemoveSwarmService: "-",
}


def print_plan(plan: Plan, *, commit: str) -> None:
    if plan.empty:
        print(f"commit {commit}: nothing to do")
        return
    print(f"commit {commit}: {len(plan.actions)} change(s)")
    action: Action
    for action in plan.actions:
        print(f"  {_SYMBOLS[type(action)]} {describe(action)}")
    for conflict in plan.conflicts:
        print(f"  ! conflict: {conflict}")
