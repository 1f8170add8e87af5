"""The data layer's sections of ``conveyor.yaml``: ``datasets:`` and ``encryption:``.

::

    datasets:
      loans:
        source: {kind: csv, path: data/loans.csv}
        key: [id]                 # unique and not null in every version
        mode: upsert              # append (default) | replace | upsert (by key)
        expectations: [{kind: not_null, column: id}]
        sensitive: [email]
        drift: {important: [income, debt_ratio]}   # each fails a drift report alone
    encryption:
      key_env: CONVEYOR_DATA_KEY

Every field can be set from the environment, ``CONVEYOR_DATASETS__LOANS__ON_FAILURE=warn``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.config import named_in
from conveyor.errors import NotFoundError

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = [
    "MODES",
    "SECTIONS",
    "DatasetDriftSpec",
    "DatasetSpec",
    "EncryptionSpec",
    "closest_hint",
    "dataset_spec",
    "datasets_of",
    "encryption_of",
]


#: How a batch becomes the next version: added to the rows of the latest one, instead
#: of them, or replacing the rows that share its key and adding the others.
MODES = ("append", "replace", "upsert")
Mode = Literal["append", "replace", "upsert"]


#: An expectation as the spec writes it: its kind is checked when the spec loads (an unknown
#: one is an error with its file and line); the rest when the data layer parses it.
_ExpectationEntry = Annotated[
    dict[str, Any], named_in("conveyor.data.validation.expectations:EXPECTATION_KINDS")
]


class DatasetDriftSpec(BaseModel):
    """How ``conveyor data drift`` judges this data set (see docs/data.md, Drift)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    important: list[str] = Field(
        default_factory=list,
        description="Columns whose drift alone fails a drift report (and emits "
        "drift.detected); a comparison made for a model uses its most important features.",
    )


class DatasetSpec(BaseModel):
    """A data set: where it comes from, what it must satisfy, what is sensitive.

    ``source`` and ``expectations`` are checked by the data layer when used
    (:func:`conveyor.data.sources.source_from_spec`,
    :func:`conveyor.data.validation.parse_expectations`), with errors naming
    ``datasets.<name>.source...``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", description="What the data set holds.")
    source: dict[str, Any] | None = Field(
        None, description="Where batches come from: {kind: csv|parquet|sql|http, ...}."
    )
    expectations: list[_ExpectationEntry] = Field(
        default_factory=list, description="Checks every batch must pass: [{kind: ..., ...}]."
    )
    key: list[str] = Field(
        default_factory=list,
        description="Columns identifying a row: unique and not null across the whole "
        "version (not only the batch); what upsert matches on.",
    )
    mode: Mode = Field(
        "append",
        description="append: a version holds the previous rows plus the batch; replace: "
        "only the batch; upsert: the batch replaces the rows sharing its key.",
    )
    on_failure: Literal["fail", "quarantine", "warn"] = Field(
        "quarantine",
        description="fail: reject the batch; quarantine: set failing rows aside and go on; "
        "warn: keep everything and report.",
    )
    sensitive: list[str] = Field(
        default_factory=list,
        description="Columns encrypted at rest (snapshots, quarantine, events) and masked.",
    )
    subject_keys: list[str] = Field(
        default_factory=list,
        description="Columns identifying a data subject, for `conveyor data forget`.",
    )
    drift: DatasetDriftSpec = Field(
        default_factory=DatasetDriftSpec, description="How drift reports judge this data set."
    )

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _upsert_needs_a_key(self) -> DatasetSpec:
        if len(set(self.key)) != len(self.key):
            raise ValueError(f"key lists a column twice: {self.key}")
        if self.mode == "upsert" and not self.key:
            raise ValueError("mode upsert needs a key: the columns a row is matched on")
        return self


class EncryptionSpec(BaseModel):
    """Where the key for sensitive columns comes from (never the key itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_env: str = Field(
        "CONVEYOR_DATA_KEY",
        description="Environment variable holding the keyring (see docs/data.md).",
    )
    key_file: str | None = Field(
        None, description="A file holding the keyring, relative to the project folder."
    )


SECTIONS: dict[str, Any] = {
    "datasets": (
        dict[str, DatasetSpec],
        Field(default_factory=dict, description="Data sets by name: source, checks, privacy."),
    ),
    "encryption": (
        EncryptionSpec,
        Field(default_factory=EncryptionSpec, description="Where the data key comes from."),
    ),
}


def datasets_of(spec: ProjectSpec) -> dict[str, DatasetSpec]:
    """The ``datasets:`` section."""
    datasets: dict[str, DatasetSpec] = spec.section("datasets")
    return datasets


def encryption_of(spec: ProjectSpec) -> EncryptionSpec:
    """The ``encryption:`` section."""
    encryption: EncryptionSpec = spec.section("encryption")
    return encryption


def dataset_spec(spec: ProjectSpec, name: str) -> DatasetSpec:
    """The named data set's spec; NotFoundError naming the closest declared one."""
    datasets = datasets_of(spec)
    try:
        return datasets[name]
    except KeyError:
        raise NotFoundError(
            f"no data set {name!r} in {spec.spec_file}{closest_hint(name, datasets)}",
            dataset=name,
        ) from None


def closest_hint(name: str, known: Any) -> str:
    """``"; did you mean 'houses'? (declared: houses, loans)"``, or the declared names."""
    import difflib

    names = sorted(known)
    if not names:
        return " (none is declared)"
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    suggestion = f"; did you mean {close[0]!r}?" if close else ""
    return f"{suggestion} (declared: {', '.join(names)})"
