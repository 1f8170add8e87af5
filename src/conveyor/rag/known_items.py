"""The built-in known-item evaluation set, made from library docstrings.

Every public function and class of scikit-learn, NumPy and SciPy (the modules in
:data:`MODULES`) with a docstring of the usual shape gives one query and one document:

- the query is the docstring's summary line ("Compute the arithmetic mean along the
  specified axis.");
- the relevant document, the only one, is the rest of the docstring (the extended summary,
  parameters, returns, notes, examples), without the summary line.

Each document is the known item of its own query, and all the documents together are the
corpus, so a query competes against every other body. Docstrings repeated under several
names (``numpy.mean`` and ``numpy.ma.mean`` sharing text, re-exports) are kept once; so are
queries whose summary line appears twice (the relevant document would be ambiguous).

The selection is fixed and deterministic: candidates are sorted by the SHA-256 of their
qualified name and the first ``size`` are taken (:data:`DEFAULT_SIZE` = 2,000), so the
same library versions give the same set on every machine; the versions are recorded in
:attr:`KnownItemSet.versions`. Walking the modules takes a few seconds (importing SciPy's
and scikit-learn's submodules is most of it).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from conveyor.errors import InvalidInputError, MissingDependencyError

if TYPE_CHECKING:
    from conveyor.rag.evaluation import LabelledQuery

__all__ = ["DEFAULT_SIZE", "MODULES", "KnownItem", "KnownItemSet", "docstring_set"]

#: Documents (and queries) in the built-in set unless asked otherwise.
DEFAULT_SIZE = 2000

#: The public modules walked, in this order (a name's first public home wins).
MODULES: tuple[str, ...] = (
    "numpy",
    "numpy.linalg",
    "numpy.fft",
    "numpy.random",
    "numpy.ma",
    "numpy.polynomial",
    "scipy.cluster.hierarchy",
    "scipy.fft",
    "scipy.integrate",
    "scipy.interpolate",
    "scipy.io",
    "scipy.linalg",
    "scipy.ndimage",
    "scipy.optimize",
    "scipy.signal",
    "scipy.sparse",
    "scipy.sparse.csgraph",
    "scipy.sparse.linalg",
    "scipy.spatial",
    "scipy.spatial.distance",
    "scipy.special",
    "scipy.stats",
    "sklearn.base",
    "sklearn.calibration",
    "sklearn.cluster",
    "sklearn.compose",
    "sklearn.covariance",
    "sklearn.cross_decomposition",
    "sklearn.datasets",
    "sklearn.decomposition",
    "sklearn.discriminant_analysis",
    "sklearn.dummy",
    "sklearn.ensemble",
    "sklearn.feature_extraction",
    "sklearn.feature_extraction.text",
    "sklearn.feature_selection",
    "sklearn.gaussian_process",
    "sklearn.impute",
    "sklearn.inspection",
    "sklearn.isotonic",
    "sklearn.kernel_approximation",
    "sklearn.kernel_ridge",
    "sklearn.linear_model",
    "sklearn.manifold",
    "sklearn.metrics",
    "sklearn.metrics.pairwise",
    "sklearn.mixture",
    "sklearn.model_selection",
    "sklearn.multiclass",
    "sklearn.multioutput",
    "sklearn.naive_bayes",
    "sklearn.neighbors",
    "sklearn.neural_network",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.random_projection",
    "sklearn.semi_supervised",
    "sklearn.svm",
    "sklearn.tree",
    "sklearn.utils",
)

_MIN_QUERY_WORDS = 3
_MIN_BODY_WORDS = 20
#: A first line that is a call signature (ufuncs, C functions): ``add(x1, x2, /, ...)``.
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)\s*(->.*)?$")


@dataclass(frozen=True, slots=True)
class KnownItem:
    """One docstring: ``query`` (its summary line) and ``document`` (the rest)."""

    id: int
    """The document's row id (0-based, in selection order): the chunk id to index it by."""
    name: str
    """Qualified name (``numpy.mean``): the document id."""
    query: str
    document: str


@dataclass(frozen=True, slots=True)
class KnownItemSet:
    """The corpus and its queries (one per document, relevant = that document)."""

    items: tuple[KnownItem, ...]
    versions: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> list[int]:
        return [item.id for item in self.items]

    @property
    def texts(self) -> list[str]:
        return [item.document for item in self.items]

    def queries(self) -> list[LabelledQuery]:
        """Each summary line, with its document's id as the one relevant id."""
        from conveyor.rag.evaluation import LabelledQuery

        return [LabelledQuery(item.query, (item.id,)) for item in self.items]

    def split(self, dev_fraction: float = 0.3) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
        """Queries split into a tuning (dev) part and a reporting (test) part, fixed by
        each name's hash (so a query's side does not depend on the set's size)."""
        if not 0.0 < dev_fraction < 1.0:
            raise InvalidInputError(
                f"dev_fraction must be in (0, 1), got {dev_fraction}", field="dev_fraction"
            )
        dev: list[LabelledQuery] = []
        test: list[LabelledQuery] = []
        for item, query in zip(self.items, self.queries(), strict=True):
            bucket = int(hashlib.sha256(b"split:" + item.name.encode()).hexdigest()[:8], 16)
            (dev if bucket / 0xFFFFFFFF < dev_fraction else test).append(query)
        return dev, test


def docstring_set(size: int = DEFAULT_SIZE, modules: tuple[str, ...] = MODULES) -> KnownItemSet:
    """The built-in known-item set: ``size`` docstrings of the public API of ``modules``.

    Raises :class:`MissingDependencyError` when a library is not installed, and
    :class:`InvalidInputError` when fewer than ``size`` docstrings qualify.
    """
    if size < 1:
        raise InvalidInputError(f"size must be positive, got {size}", field="size")
    candidates: dict[str, tuple[str, str]] = {}
    seen_objects: set[int] = set()
    seen_docs: set[str] = set()
    summaries: dict[str, int] = {}
    versions: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in modules:
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise MissingDependencyError(
                    f"the docstring set walks {module_name}, which does not import: {exc}",
                    module=module_name,
                ) from exc
            top = module_name.split(".")[0]
            versions.setdefault(top, str(getattr(importlib.import_module(top), "__version__", "")))
            for attr in sorted(getattr(module, "__all__", None) or dir(module)):
                if attr.startswith("_"):
                    continue
                try:
                    obj = getattr(module, attr)
                except (AttributeError, ImportError):  # experimental or lazy names
                    continue
                if not (inspect.isclass(obj) or callable(obj)) or inspect.ismodule(obj):
                    continue
                if id(obj) in seen_objects:
                    continue
                seen_objects.add(id(obj))
                split = _split_docstring(obj)
                if split is None:
                    continue
                summary, body = split
                if body in seen_docs:
                    continue
                seen_docs.add(body)
                summaries[summary] = summaries.get(summary, 0) + 1
                candidates[f"{module_name}.{attr}"] = (summary, body)
    unique = [
        (name, summary, body)
        for name, (summary, body) in candidates.items()
        if summaries[summary] == 1
    ]
    if len(unique) < size:
        raise InvalidInputError(
            f"only {len(unique)} docstrings qualify in these modules, fewer than the {size} "
            "asked for",
            size=size,
            available=len(unique),
        )
    unique.sort(key=lambda t: hashlib.sha256(t[0].encode()).hexdigest())
    chosen = unique[:size]
    items = tuple(
        KnownItem(id=i, name=name, query=summary, document=body)
        for i, (name, summary, body) in enumerate(chosen)
    )
    return KnownItemSet(items=items, versions=versions)


def _split_docstring(obj: object) -> tuple[str, str] | None:
    """``(summary line, body)`` of a numpydoc-style docstring, or None when it has no
    usable summary or too short a body."""
    try:
        doc = inspect.getdoc(obj)
    except Exception:  # some C objects raise on attribute access
        return None
    if not doc:
        return None
    lines = doc.strip().splitlines()
    if lines and _SIGNATURE.match(lines[0].strip()):
        # ufunc-style: the signature, a blank line, then the real summary
        lines = lines[1:]
        while lines and not lines[0].strip():
            lines = lines[1:]
    if not lines:
        return None
    # the summary is the first paragraph; numpydoc keeps it to one line, a few wrap it
    end = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    if end > 2:
        return None
    summary = " ".join(line.strip() for line in lines[:end])
    body = "\n".join(lines[end:]).strip()
    if len(summary.split()) < _MIN_QUERY_WORDS or len(body.split()) < _MIN_BODY_WORDS:
        return None
    if summary.endswith(":") or summary.startswith(("..", "Parameters", ">>>")):
        return None
    return summary, body
