"""Roles and actions: who may do what, the same rule for the CLI and every server.

Roles are ordered, ``viewer < predictor < deployer < admin``: each may do what
the ones before it may. An *action* is something a caller does (``models.promote``,
``serving.predict``, ``keys.manage``); each capability declares its own actions
and the lowest role allowed (:attr:`conveyor.capability.Capability.actions`),
so this module knows no capability's vocabulary::

    require("deployer", "serving.route")     # passes
    require("viewer", "keys.manage")         # PermissionDeniedError naming the role needed
    actions()                                # every declared action -> its lowest role
"""

from __future__ import annotations

from typing import Literal

from conveyor.errors import InvalidInputError, PermissionDeniedError

__all__ = ["ROLES", "Role", "actions", "allows", "check_role", "needed_role", "require"]

Role = Literal["viewer", "predictor", "deployer", "admin"]
#: Lowest to highest: each role may do everything the ones before it may.
ROLES: tuple[Role, ...] = ("viewer", "predictor", "deployer", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}

_actions: tuple[int, dict[str, Role]] | None = None
_declared_by: dict[str, str] = {}


def check_role(role: str) -> Role:
    """``role`` if it is one of :data:`ROLES`, else InvalidInputError listing them."""
    if role not in _RANK:
        raise InvalidInputError(
            f"role {role!r}: expected one of {', '.join(ROLES)}", field="role", allowed=ROLES
        )
    return role


def actions() -> dict[str, Role]:
    """Every action the installed capabilities declare, with the lowest role allowed."""
    global _actions
    from conveyor.capability import capabilities, generation

    if _actions is None or _actions[0] != generation():
        found: dict[str, Role] = {}
        _declared_by.clear()
        for declared in capabilities():
            for action, role in declared.actions.items():
                if action in found:
                    raise InvalidInputError(
                        f"the action {action!r} is declared by both {_declared_by[action]!r} "
                        f"and {declared.name!r}",
                        field="action",
                    )
                found[action] = check_role(role)
                _declared_by[action] = declared.name
        _actions = (generation(), found)
    return _actions[1]


def needed_role(action: str) -> Role:
    """The lowest role allowed to do ``action`` (InvalidInputError for an unknown one)."""
    known = actions()
    needed = known.get(action)
    if needed is None:
        raise InvalidInputError(
            f"action {action!r} is not declared by any capability; known: "
            f"{', '.join(sorted(known))}",
            field="action",
        )
    return needed


def allows(role: str, action: str) -> bool:
    """Whether ``role`` may do ``action`` (InvalidInputError for an unknown one of either)."""
    needed = needed_role(action)
    return _RANK[check_role(role)] >= _RANK[needed]


def require(role: str, action: str) -> None:
    """Raise PermissionDeniedError unless ``role`` may do ``action``."""
    if not allows(role, action):
        needed = needed_role(action)
        raise PermissionDeniedError(
            f"{action!r} needs the role {needed!r} or higher; this key's role is {role!r}",
            action=action,
            required_role=needed,
            role=role,
        )
