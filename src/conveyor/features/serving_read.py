"""The online read path: a feature service's values for entity keys, as fast as the round trip.

:func:`online_features` is what ``POST /v1/features/get``, the model server's
enricher and ``conveyor features get`` call. Everything that does not depend
on the entity keys is worked out once per project and kept: the service's
references resolved against the definitions, the :class:`FeatureRef` list, the
online store's read plan (the keys' fixed parts, who reads which record), the
on-demand features to compute. A call then builds one key per view, makes one
``MGET`` (:meth:`conveyor.kv.redis.RedisKV.get_many`), decodes each record
once and fills the answer.

Measured on a 2-core machine, one entity across 10 views (30 features) from
the local Redis (``benchmarks/features_online.py``): see the README's feature
store figures. The cache is keyed by the project and checked against the
project's spec and online backend, so a project opened anew reads its own
definitions; an unknown service is refused on every call (nothing is kept).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.features.online import FeatureRef, OnlineStore
    from conveyor.features.settings import FeaturesSpec
    from conveyor.project import Project

__all__ = ["online_features"]

#: Services (or reference lists) kept per project; past this the cache starts over.
_SERVICES = 256


@dataclass(frozen=True, slots=True)
class _Service:
    """What one service, or one list of references, reads and computes."""

    refs: tuple[FeatureRef, ...]
    demands: tuple[str, ...]  #: on-demand features, computed after the read


class _Reader:
    """One project's online store and the plans of the services read so far."""

    def __init__(self, spec: FeaturesSpec, store: OnlineStore) -> None:
        self.spec = spec
        self.store = store
        self.services: dict[Any, _Service] = {}

    def service(self, wanted: str | Sequence[str]) -> _Service:
        key: Any = wanted if isinstance(wanted, str) else tuple(wanted)
        found = self.services.get(key)
        if found is None:
            found = _plan(self.spec, wanted)
            if len(self.services) >= _SERVICES:
                self.services.clear()
            self.services[key] = found
        return found


_READERS: weakref.WeakKeyDictionary[Project, _Reader] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _reader(project: Project) -> _Reader:
    from conveyor.features.settings import features_of

    spec = features_of(project.spec)
    kv = project.backend("online")
    found = _READERS.get(project)
    if found is None or found.spec is not spec or found.store.kv is not kv:
        from conveyor.features.online import OnlineStore

        with _LOCK:
            found = _READERS[project] = _Reader(spec, OnlineStore(kv))
    return found


def _plan(spec: FeaturesSpec, wanted: str | Sequence[str]) -> _Service:
    from conveyor.features.materialize import AGGREGATES_SUFFIX
    from conveyor.features.online import FeatureRef
    from conveyor.features.retrieval import requested_features

    pairs = requested_features(spec, wanted)  # NotFoundError naming an unknown name
    refs = []
    for owner, feature in pairs:
        view = spec.views.get(owner)
        if view is None:
            continue  # on-demand: computed after the read
        plain = {f.name for f in view.features}
        target = owner if feature in plain else owner + AGGREGATES_SUFFIX
        keys = tuple(dict.fromkeys(k for e in view.entities for k in spec.entities[e].join_keys))
        refs.append(FeatureRef(target, feature, keys, view.ttl))
    demands = tuple(dict.fromkeys(o for o, _ in pairs if o in spec.on_demand))
    return _Service(tuple(refs), demands)


def online_features(
    project: Project,
    entities: Sequence[Mapping[str, Any]],
    service_or_features: str | Sequence[str],
    *,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """For each entity row (join keys, plus the request fields on-demand features read):
    ``{"features": {...}, "status": {...}, "event_time": {...}}`` of the service's
    features, read in one round trip; on-demand features computed as offline.

    A backend that does not answer raises
    :class:`~conveyor.errors.BackendUnavailableError`: never an empty vector."""
    reader = _reader(project)
    service = reader.service(service_or_features)
    rows = entities if isinstance(entities, list) else list(entities)
    if service.refs:
        out: list[dict[str, Any]] = reader.store.read_dicts(rows, service.refs, now=now)
    else:
        out = [{"features": {}, "status": {}, "event_time": {}} for _ in rows]
    if service.demands and out:
        _on_demand(project, reader.spec, service.demands, rows, out)
    return out


def _on_demand(
    project: Project,
    spec: FeaturesSpec,
    demands: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    out: list[dict[str, Any]],
) -> None:
    """Add each on-demand feature to ``out``, computed by its function from the request
    rows and the values read, as the training frame computes it."""
    import pyarrow as pa

    from conveyor.features.retrieval import compute_on_demand

    frame = pa.Table.from_pylist(
        [{**row, **r["features"]} for row, r in zip(rows, out, strict=True)]
    )
    for name in demands:
        frame = compute_on_demand(project, name, frame)
        for output in spec.on_demand[name].outputs:
            column = frame.column(output).to_pylist()
            for i, r in enumerate(out):
                r["features"][output] = column[i]
                r["status"][output] = "computed"
                r["event_time"][output] = None
