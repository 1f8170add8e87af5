"""Who may do an action: one rule for the CLI and every server, one actor name in the logs.

::

    access = Access(keys, open_until_first_key=False)   # a server with auth: required
    caller = access.authorize(token, "serving.route")    # or: await access.authorize_async(...)
    caller.actor                                         # "key:ci-deployer", recorded everywhere

The rule:

- a ``token`` is given: it must verify (known, not revoked, not expired) and
  its role must allow the action; the caller is that key, recorded as
  ``key:NAME`` by the CLI and over HTTP alike;
- no token: allowed only while the project is *open*, that is while no key
  was ever created (revoked ones count) **and** the entry point allows
  bootstrap: the CLI always does (that is how the first admin key is made),
  a server only with ``serving.auth: disabled``. The caller is then the
  local user (``cli:alice``) or ``anonymous``. Creating the first key closes
  the project for good; revoking every key does not reopen it.
- otherwise: AuthenticationError saying how to send a key.

A server calls :meth:`Access.authorize_async` on its event loop: the key is
checked from the in-process cache, and the store is read in a thread only on
a miss, so a slow database never stalls the loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from conveyor.errors import (
    AuthenticationError,
    BackendUnavailableError,
    InvalidInputError,
    PermissionDeniedError,
)
from conveyor.governance.roles import needed_role

if TYPE_CHECKING:
    from conveyor.governance.keys import ApiKey, ApiKeys

__all__ = ["AUTH_MODES", "Access", "AuthMode", "Caller", "actor_of", "describe_auth"]

AuthMode = Literal["required", "disabled"]
AUTH_MODES: tuple[AuthMode, ...] = get_args(AuthMode)


def describe_auth(mode: str, has_keys: bool) -> str:
    """One line for a server starting: its auth mode, what it means for a caller now,
    and the next step (which key to create, how to send it)."""
    send = "clients send 'Authorization: Bearer cvy_...'"
    client = "a client's key: `conveyor keys create NAME --role predictor` (with an admin key)"
    if mode == "disabled" and not has_keys:
        return (
            "auth: disabled: anyone may call this server without a key until the project's "
            "first key is created (`conveyor keys create admin --role admin`); for local "
            "use only"
        )
    if mode == "disabled":
        return (
            f"auth: disabled, but this project has API keys, so every request needs one "
            f"all the same; {send}; {client}"
        )
    if not has_keys:
        return (
            "auth: required, and this project has no API key yet: every request but the "
            "health probes is refused (401). Create the admin key first "
            "(`conveyor keys create admin --role admin`), then one per client "
            "(`conveyor keys create NAME --role predictor`), or set serving.auth: disabled "
            "for local use"
        )
    return f"auth: required: every request needs a key; {send}; {client}"


def actor_of(key: ApiKey) -> str:
    """The name an action by ``key`` is recorded under, everywhere."""
    return f"key:{key.name}"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is acting: their verified key (None while the project is open) and the
    name recorded as the actor of what they do."""

    key: ApiKey | None
    actor: str


class Access:
    """The rule of the module docstring over one project's keys.

    ``open_until_first_key`` is the bootstrap switch (the CLI: True; a server:
    its ``auth: disabled`` setting). ``anonymous`` is the actor recorded for a
    caller without a key while the project is open. ``missing_hint`` ends the
    error a caller without a key gets once keys exist.
    """

    def __init__(
        self,
        keys: ApiKeys,
        *,
        open_until_first_key: bool,
        anonymous: str = "anonymous",
        missing_hint: str = "send one as 'Authorization: Bearer cvy_...'",
    ) -> None:
        self.keys = keys
        self.open_until_first_key = open_until_first_key
        self.anonymous = anonymous
        self.missing_hint = missing_hint
        self._checked_at = -math.inf

    @classmethod
    def for_server(cls, keys: ApiKeys, mode: str) -> Access:
        """A server's rule from its ``auth: required | disabled`` setting."""
        if mode not in AUTH_MODES:
            raise InvalidInputError(
                f"auth: {mode!r}: expected one of {', '.join(AUTH_MODES)}", field="auth"
            )
        return cls(keys, open_until_first_key=mode == "disabled")

    # -- the bootstrap state -------------------------------------------------------

    def _open_known(self) -> bool | None:
        """Whether the project is open, from memory; None when the store must be asked."""
        if not self.open_until_first_key or self.keys.known_to_exist:
            return False
        if time.monotonic() - self._checked_at < self.keys.cache_ttl:
            return True
        return None

    def _ask_store(self) -> bool:
        self._checked_at = time.monotonic()
        return not self.keys.any()

    @property
    def open(self) -> bool:
        """Whether a caller may act without a key now (re-checked every ``cache_ttl``)."""
        known = self._open_known()
        return self._ask_store() if known is None else known

    # -- deciding -----------------------------------------------------------------

    def authorize(self, token: str | None, action: str, *, what: str | None = None) -> Caller:
        """The caller allowed to do ``action`` (may read the store).

        ``what`` names what the caller is doing in the caller's words (``conveyor train``):
        a refusal starts with it, so it names the real action, not only a role.
        """
        needed = needed_role(action)
        if token:
            return self._checked(self.keys.verify(token), action, what)
        if self.open:
            return Caller(None, self.anonymous)
        raise self._missing(action, needed, what)

    def identify(self, token: str | None) -> Caller:
        """The caller, whatever their role: for an action no capability restricts to a role.

        The same rule as :meth:`authorize` otherwise: a given token must verify,
        and once the project has keys, a caller needs one.
        """
        if token:
            key = self.keys.verify(token)
            return Caller(key, actor_of(key))
        if self.open:
            return Caller(None, self.anonymous)
        raise AuthenticationError(
            f"no API key: this project has keys, so acting on it needs one; {self.missing_hint}",
            reason="missing",
        )

    async def authorize_async(
        self,
        token: str | None,
        action: str,
        *,
        run: Callable[..., Awaitable[Any]] | None = None,
        stale_s: float = 0.0,
    ) -> Caller:
        """:meth:`authorize` for an event loop: the store is read in a thread, on a miss.

        ``run(fn, *args)`` runs a store read (default: :func:`asyncio.to_thread`; a
        server passes its breaker and timeout). When the store does not answer
        (BackendUnavailableError), a key this process read within ``stale_s``
        seconds is used as it was then: revoked and expired keys stay refused.
        """
        if run is None:
            import asyncio  # not at import time: the CLI uses this module too

            run = asyncio.to_thread
        if token:
            key = self.keys.verify_cached(token)
            if key is None:
                try:
                    key = await run(self.keys.verify, token)
                except BackendUnavailableError:
                    stale = self.keys.verify_stale(token, stale_s) if stale_s > 0 else None
                    if stale is None:
                        raise
                    key = stale
            return self._checked(key, action)
        known = self._open_known()
        if known is None:
            known = await run(self._ask_store)
        if known:
            return Caller(None, self.anonymous)
        raise self._missing(action, needed_role(action))

    @staticmethod
    def _checked(key: ApiKey, action: str, what: str | None = None) -> Caller:
        try:
            key.require(action)
        except PermissionDeniedError as exc:
            if what is None:
                raise
            raise PermissionDeniedError(f"{what}: {exc.message}", **exc.context) from None
        return Caller(key, actor_of(key))

    def _missing(self, action: str, needed: str, what: str | None = None) -> AuthenticationError:
        doing = f"{what} ({action!r})" if what else repr(action)
        return AuthenticationError(
            f"no API key: {doing} needs a key with the role {needed!r} or higher; "
            f"{self.missing_hint}; an admin creates one with "
            f"`conveyor keys create NAME --role {needed}`",
            reason="missing",
            action=action,
            required_role=needed,
        )
