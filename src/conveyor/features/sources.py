"""A feature view's rows: its source (a data set's latest version, a Parquet or CSV file,
or DuckDB SQL over the project's data sets), then its transform (DuckDB SQL over the
table ``source``, or ``module:function`` over Arrow), then the rows pushed to it. The
same code feeds ``apply``'s checks (on a sample), the training frame, materialization
and parity."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.features.settings import ViewSpec
    from conveyor.project import Project

__all__ = ["FeatureDefinitionError", "view_table"]


class FeatureDefinitionError(ConfigError):
    """A feature definition that does not fit its source: the view and column named."""

    code = "feature_definition_invalid"


def view_table(
    project: Project,
    name: str,
    view: ViewSpec,
    *,
    sample: int | None = None,
    actor: str = "features",
) -> pa.Table:
    """The rows of view ``name`` after its transform, and the rows pushed to it
    (:mod:`conveyor.features.push`; already in the view's output columns, so not
    transformed). With ``sample``, the first ``sample`` source rows after the transform,
    without pushed rows: what ``apply`` checks a definition against."""
    table = _transformed(project, name, view, sample, actor)
    if sample is not None:
        return table
    from conveyor.features.push import with_pushed

    return with_pushed(project, name, table)


def _transformed(
    project: Project, name: str, view: ViewSpec, sample: int | None, actor: str
) -> Any:
    table = _source(project, name, view, sample, actor)
    if view.transform is None:
        return table
    if view.transform_is_python:
        from conveyor.user_code import load_entry_point

        function = load_entry_point(view.transform.strip(), project.root, field="transform")
        try:
            out = function(table)
        except Exception as exc:
            raise FeatureDefinitionError(
                f"views.{name}.transform {view.transform}: {type(exc).__name__}: {exc}",
                view=name,
            ) from exc
        import pyarrow as pa

        if not isinstance(out, pa.Table):
            from conveyor.data.frames import to_arrow

            out = to_arrow(out)
        return out
    return _sql(f"views.{name}.transform", view.transform, {"source": table}, name)


def _source(project: Project, name: str, view: ViewSpec, sample: int | None, actor: str) -> Any:
    source = view.source
    if source.dataset is not None:
        return _dataset(project, source.dataset, name, sample, actor)
    if source.path is not None:
        return _file(project, source.path, name, sample)
    assert source.sql is not None
    tables = {
        dataset: _dataset(project, dataset, name, None, actor)
        for dataset in _datasets_named(project, source.sql)
    }
    table = _sql(f"views.{name}.source.sql", source.sql, tables, name)
    return table.slice(0, sample) if sample is not None else table


def _dataset(project: Project, dataset: str, view: str, sample: int | None, actor: str) -> Any:
    latest = project.data.versions.latest(dataset)
    if latest is None:
        raise FeatureDefinitionError(
            f"views.{view}.source: the data set {dataset!r} has no version yet; ingest it "
            f"first (conveyor data ingest {dataset})",
            view=view,
            dataset=dataset,
        )
    table = project.data.versions.read(latest, actor=actor, purpose="features")
    return table.slice(0, sample) if sample is not None else table


def _file(project: Project, path: str, view: str, sample: int | None) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    full = project.root / path
    if not full.exists():
        raise FeatureDefinitionError(
            f"views.{view}.source.path: no file at {path}", view=view, field="path"
        )
    try:
        table = pcsv.read_csv(full) if full.suffix.lower() == ".csv" else pq.read_table(full)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FeatureDefinitionError(
            f"views.{view}.source.path {path}: cannot be read: {exc}", view=view, field="path"
        ) from exc
    return table.slice(0, sample) if sample is not None else table


def _datasets_named(project: Project, sql: str) -> list[str]:
    from conveyor.data.settings import datasets_of

    words = set(re.findall(r"[A-Za-z_]\w*", sql))
    known = set(datasets_of(project.spec)) | {
        str(d["name"]) for d in project.data.versions.datasets()
    }
    return sorted(words & known)


def _sql(where: str, query: str, tables: dict[str, Any], view: str) -> Any:
    import duckdb

    connection = duckdb.connect()
    try:
        for table_name, table in tables.items():
            connection.register(table_name, table)
        try:
            return connection.execute(query).to_arrow_table()
        except duckdb.Error as exc:
            raise FeatureDefinitionError(f"{where}: {exc}", view=view) from exc
    finally:
        connection.close()
