"""The contract every metadata store backend honours.

Subclass :class:`MetadataStoreContract` and provide the fixture
``store_url``: a URL string of an empty database that only this test uses::

    class TestSQLite(MetadataStoreContract):
        @pytest.fixture
        def store_url(self, tmp_path):
            return f"sqlite:///{tmp_path}/conveyor.db"

The tests open stores themselves, the way programs do
(``MetadataStore.from_url`` or ``conveyor.backends.STORE.open``), and prove
behaviour with real concurrent writers: nothing here is mocked.

:func:`write_runs` is importable by spawned processes, for multi-process tests.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
import sqlalchemy as sa

from conveyor.backends import STORE, BackendURL
from conveyor.checks.persist import get_report, list_reports, save_report
from conveyor.checks.result import CheckResult, Report
from conveyor.errors import (
    AlreadyExistsError,
    ClosedError,
    ConcurrentUpdateError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from conveyor.store.database import MetadataStore
from conveyor.store.migrate import store_chains
from conveyor.store.models import RunRecord
from conveyor.store.paging import encode_cursor
from conveyor.store.runs import Run

__all__ = ["MetadataStoreContract", "write_runs"]


def write_runs(store_url: str, count: int, kind: str = "load", barrier: Any = None) -> list[str]:
    """Open the store (migrating if needed), start and finish ``count`` runs; their ids.

    With a ``barrier`` (a ``multiprocessing`` Barrier or a manager's proxy)
    every writer opens the store at the same moment and starts writing at
    the same moment, so migrations and writes really race.
    """
    ids = []
    if barrier is not None:
        barrier.wait()
    with MetadataStore.from_url(BackendURL.parse(store_url)) as store:
        if barrier is not None:
            barrier.wait()
        for i in range(count):
            run = store.runs.start(kind, f"{kind}-{i}", params={"i": i})
            ids.append(store.runs.finish(run.id).id)
    return ids


def _add_run(session: sa.orm.Session, run_id: str) -> None:
    now = datetime.now(UTC)
    session.add(
        RunRecord(
            id=run_id,
            kind="demo",
            name="raw",
            status="running",
            params={},
            metrics={},
            tags={},
            artifacts={},
            started_at=now,
        )
    )
    session.flush()


class MetadataStoreContract:
    """Behaviour every ``MetadataStore`` backend must show; needs fixture ``store_url``."""

    @pytest.fixture
    def store(self, store_url: str) -> Iterator[MetadataStore]:
        with MetadataStore.from_url(BackendURL.parse(store_url)) as store:
            yield store

    # -- opening, migrations, lifecycle ---------------------------------------

    def test_opening_twice_migrates_once_and_reaches_head(self, store_url: str) -> None:
        heads = MetadataStore.head_revisions()
        # The store's own chain, then one per capability with tables.
        assert heads["core"] is not None and {"registry", "serving", "governance"} <= set(heads)
        with STORE.open(store_url) as first:
            assert isinstance(first, MetadataStore)
            assert first.revisions() == heads
            run = first.runs.start("demo", "survives a second open")
        with STORE.open(store_url) as second:
            assert second.revisions() == heads
            assert second.health()["migrated"] is True
            assert second.runs.get(run.id).name == "survives a second open"
            with second.read() as session:
                for chain in store_chains():
                    table = chain.version_table
                    rows = session.execute(sa.text(f"SELECT version_num FROM {table}")).all()
                    assert [r[0] for r in rows] == [heads[chain.name]], chain

    def test_health_describes_backend_without_password(self, store: MetadataStore) -> None:
        facts = store.health()
        assert facts["backend"] == store.url.scheme
        assert facts["revisions"] == facts["heads"] == MetadataStore.head_revisions()
        assert facts["migrated"] is True and facts["behind"] == []
        store.ping()
        secret = store.url.password
        if secret:
            assert secret not in facts["url"]
            assert secret not in repr(store)

    def test_schema_matches_models(self, store: MetadataStore) -> None:
        assert store.schema_diff() == []
        # The comparison can fail: a column the models do not know is a difference.
        with store.session() as session:
            session.execute(sa.text("ALTER TABLE runs ADD COLUMN stray INTEGER"))
        diff = store.schema_diff()
        assert any("stray" in str(d) for d in diff), diff

    def test_unmigrated_store_says_so_until_migrated(self, store_url: str) -> None:
        with MetadataStore.from_url(BackendURL.parse(store_url), migrate=False) as store:
            facts = store.health()
            assert set(facts["revisions"].values()) == {None} and facts["migrated"] is False
            assert facts["behind"] == sorted(facts["heads"])
            assert store.migrate() == facts["heads"]
            assert store.health()["migrated"] is True
            assert store.runs.start("demo", "after migrate").version == 1

    def test_closed_store_refuses_use(self, store_url: str) -> None:
        store = MetadataStore.from_url(BackendURL.parse(store_url))
        run = store.runs.start("demo", "before close")
        store.close()
        store.close()  # idempotent
        assert store.closed
        assert "closed" in repr(store)
        with pytest.raises(ClosedError):
            store.runs.get(run.id)
        with pytest.raises(ClosedError):
            _ = store.runs
        with pytest.raises(ClosedError), store.session():
            pass
        with pytest.raises(ClosedError), store.read():
            pass
        with pytest.raises(ClosedError):
            store.ping()
        with pytest.raises(ClosedError), store:
            pass

    # -- runs -------------------------------------------------------------------

    def test_run_lifecycle(self, store: MetadataStore) -> None:
        runs = store.runs
        run = runs.start("train", "fraud", params={"lr": 0.1, "depth": 6}, tags={"team": "risk"})
        assert run.status == "running" and not run.finished
        assert run.version == 1
        assert len(run.id) == 32
        assert run.started_at.tzinfo == UTC
        assert abs(run.started_at - datetime.now(UTC)) < timedelta(minutes=5)
        assert run.ended_at is None
        assert runs.get(run.id) == run

        run = runs.log_params(run.id, {"depth": 8, "seed": 7})
        assert run.params == {"lr": 0.1, "depth": 8, "seed": 7}
        run = runs.log_metrics(run.id, {"auc": 0.91, "loss": 1e20})
        run = runs.log_metrics(run.id, {"auc": 0.93})
        assert run.metrics == {"auc": 0.93, "loss": 1e20}
        assert all(type(v) is float for v in run.metrics.values())
        run = runs.add_artifact(run.id, "model", "sha256:" + "a" * 64, 1234)
        assert run.artifacts == {"model": {"digest": "sha256:" + "a" * 64, "size": 1234}}
        assert run.version == 5

        done = runs.finish(run.id, "failed", error="gates failed")
        assert (done.status, done.error, done.finished) == ("failed", "gates failed", True)
        assert done.ended_at is not None and done.ended_at >= done.started_at
        assert done.updated_at >= run.updated_at
        assert runs.get(run.id) == done
        with pytest.raises(ConflictError, match="already finished"):
            runs.finish(run.id)
        assert runs.get(run.id).status == "failed"
        data = done.to_dict()
        assert data["id"] == run.id and isinstance(data["started_at"], str)

    def test_update_changes_fields_and_checks_them(self, store: MetadataStore) -> None:
        run = store.runs.start("pipeline", "nightly")
        run = store.runs.update(
            run.id, expected_version=run.version, name="nightly-2", status="cancelled"
        )
        assert (run.name, run.status, run.version) == ("nightly-2", "cancelled", 2)
        assert run.ended_at is not None  # a finished status is stamped
        at = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
        run = store.runs.update(run.id, expected_version=run.version, ended_at=at)
        assert run.ended_at == at and run.ended_at.tzinfo == UTC
        assert store.runs.get(run.id).ended_at == datetime(2026, 5, 1, 10, 0, 0, 123456, UTC)
        with pytest.raises(InvalidInputError, match="started_at"):
            store.runs.update(run.id, expected_version=run.version, started_at=datetime.now(UTC))
        with pytest.raises(InvalidInputError, match="bogus"):
            store.runs.update(run.id, expected_version=run.version, bogus=1)
        with pytest.raises(InvalidInputError, match="status"):
            store.runs.update(run.id, expected_version=run.version, status="exploded")
        with pytest.raises(InvalidInputError, match="aware"):
            store.runs.update(run.id, expected_version=run.version, ended_at=datetime.now())
        assert store.runs.get(run.id) == run

    def test_invalid_run_input_is_refused_with_its_name(self, store: MetadataStore) -> None:
        run = store.runs.start("train", "m")
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(InvalidInputError, match="'auc'") as info:
                store.runs.log_metrics(run.id, {"ok": 1.0, "auc": bad})
            assert info.value.context["metric"] == "auc"
        with pytest.raises(InvalidInputError, match="'auc'"):
            store.runs.log_metrics(run.id, {"auc": "high"})  # type: ignore[dict-item]
        with pytest.raises(InvalidInputError, match=r"params\.alpha"):
            store.runs.log_params(run.id, {"alpha": math.nan})
        with pytest.raises(InvalidInputError, match="name"):
            store.runs.start("train", "x" * 201)
        with pytest.raises(InvalidInputError, match="kind"):
            store.runs.start("", "m")
        with pytest.raises(InvalidInputError, match="size"):
            store.runs.add_artifact(run.id, "model", "sha256:00", -1)
        with pytest.raises(InvalidInputError, match="status"):
            store.runs.finish(run.id, "running")
        with pytest.raises(InvalidInputError, match="status"):
            store.runs.list(status="done")  # type: ignore[arg-type]
        assert store.runs.get(run.id) == run  # nothing was written

    def test_not_found_names_the_id(self, store: MetadataStore) -> None:
        missing = "f" * 32
        for call in (
            lambda: store.runs.get(missing),
            lambda: store.runs.update(missing, expected_version=1, name="x"),
            lambda: store.runs.log_metrics(missing, {"a": 1.0}),
            lambda: store.runs.log_params(missing, {"a": 1}),
            lambda: store.runs.add_artifact(missing, "m", "sha256:00", 1),
            lambda: store.runs.finish(missing),
            lambda: get_report(store, missing),
        ):
            with pytest.raises(NotFoundError, match=missing):
                call()

    # -- concurrency --------------------------------------------------------------

    def test_concurrent_update_is_detected(self, store: MetadataStore) -> None:
        run = store.runs.start("train", "contended")
        first, second = store.runs.get(run.id), store.runs.get(run.id)
        assert first.version == second.version == run.version
        won = store.runs.update(first.id, expected_version=first.version, name="first")
        assert won.version == run.version + 1
        with pytest.raises(ConcurrentUpdateError) as info:
            store.runs.update(
                second.id, expected_version=second.version, name="second", tags={"x": 1}
            )
        assert info.value.code == "concurrent_update"
        with pytest.raises(ConcurrentUpdateError):
            store.runs.log_metrics(second.id, {"auc": 0.5}, expected_version=second.version)
        assert store.runs.get(run.id) == won

    def test_stale_flush_inside_a_session_rolls_back(self, store: MetadataStore) -> None:
        run = store.runs.start("train", "stale")
        table = cast(sa.Table, RunRecord.__table__)

        def stale_write() -> None:
            with store.session() as session:
                record = session.get(RunRecord, run.id)
                assert record is not None
                # Another writer's committed change, as the ORM sees it: the version moved.
                bump = sa.update(table).where(table.c.id == run.id)
                session.execute(bump.values(version=run.version + 1))
                record.name = "lost"
                session.flush()

        with pytest.raises(ConcurrentUpdateError):
            stale_write()
        assert store.runs.get(run.id) == run

    def test_no_lost_updates_under_concurrent_writers(self, store: MetadataStore) -> None:
        run = store.runs.start("train", "counter", params={})
        threads, per_thread = 4, 25
        errors: list[BaseException] = []
        conflicts = [0] * threads

        def work(slot: int) -> None:
            try:
                for _ in range(per_thread):
                    while True:
                        current = store.runs.get(run.id)
                        count = current.metrics.get("count", 0.0)
                        try:
                            store.runs.log_metrics(
                                run.id, {"count": count + 1}, expected_version=current.version
                            )
                            break
                        except ConcurrentUpdateError:
                            conflicts[slot] += 1
            except BaseException as exc:  # surfaced below, not lost in the thread
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        final = store.runs.get(run.id)
        assert final.metrics["count"] == threads * per_thread
        assert final.version == 1 + threads * per_thread

    def test_blind_merges_from_threads_keep_every_key(self, store: MetadataStore) -> None:
        run = store.runs.start("train", "merge")
        errors: list[BaseException] = []

        def work(slot: int) -> None:
            try:
                for i in range(10):
                    store.runs.log_metrics(run.id, {f"t{slot}_{i}": float(i)})
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        assert len(store.runs.get(run.id).metrics) == 40

    # -- transactions -------------------------------------------------------------

    def test_failed_transaction_writes_nothing(self, store: MetadataStore) -> None:
        kept = store.runs.start("demo", "kept")

        def half_done() -> None:
            with store.session() as session:
                _add_run(session, "a" * 32)
                record = session.get(RunRecord, kept.id)
                assert record is not None
                record.name = "changed"
                session.flush()
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            half_done()
        with pytest.raises(NotFoundError):
            store.runs.get("a" * 32)
        assert store.runs.get(kept.id) == kept

    def test_duplicate_key_is_already_exists(self, store: MetadataStore) -> None:
        with store.session() as session:
            _add_run(session, "b" * 32)

        def duplicate() -> None:
            with store.session() as session:
                _add_run(session, "c" * 32)
                _add_run(session, "b" * 32)

        with pytest.raises(AlreadyExistsError):
            duplicate()
        with pytest.raises(NotFoundError):
            store.runs.get("c" * 32)

    def test_a_value_the_database_cannot_hold_is_invalid_input(self, store: MetadataStore) -> None:
        """Text with a NUL byte: PostgreSQL refuses it (the driver's DataError, once a 500
        on the server), SQLite keeps it. Either way no driver error escapes the store."""

        def write() -> None:
            with store.session() as session:
                session.execute(
                    sa.update(RunRecord).where(RunRecord.id == "e" * 32).values(name="a\x00b")
                )

        if store.url.scheme == "postgresql":
            with pytest.raises(InvalidInputError, match="refused a value"):
                write()
        else:
            write()
        store.runs.start("demo", "after")  # the store is still usable

    def test_read_session_never_writes(self, store: MetadataStore) -> None:
        refused = False
        try:
            with store.read() as session:
                _add_run(session, "d" * 32)
        except sa.exc.DBAPIError:
            refused = True
        # PostgreSQL refuses the write in a READ ONLY transaction; SQLite rolls it back.
        assert refused == (store.url.scheme == "postgresql")
        with pytest.raises(NotFoundError):
            store.runs.get("d" * 32)

    # -- listing ------------------------------------------------------------------

    def test_paging_returns_each_run_once_newest_first(self, store: MetadataStore) -> None:
        created = [store.runs.start("train" if i % 3 else "demo", f"r{i}") for i in range(250)]
        seen: list[Run] = []
        cursor = None
        pages = 0
        while True:
            page = store.runs.list(limit=40, cursor=cursor)
            pages += 1
            assert len(page) <= 40
            seen.extend(page)
            if pages == 2:
                store.runs.start("train", "late")  # newer than the cursor: not in later pages
            cursor = page.next_cursor
            if cursor is None:
                break
        assert pages == 7
        assert [r.id for r in seen] == [
            r.id for r in sorted(created, key=lambda r: (r.started_at, r.id), reverse=True)
        ]
        keys = [(r.started_at, r.id) for r in seen]
        assert keys == sorted(keys, reverse=True) and len(set(keys)) == 250

        demos = store.runs.list(kind="demo", limit=200)
        assert {r.id for r in demos} == {r.id for r in created if r.kind == "demo"}
        assert demos.next_cursor is None
        store.runs.finish(created[0].id, "cancelled")
        assert [r.id for r in store.runs.list(status="cancelled")] == [created[0].id]

    def test_malformed_cursor_is_invalid_input(self, store: MetadataStore) -> None:
        store.runs.start("demo", "one")
        for cursor in (
            "not a cursor!",
            "",
            encode_cursor("only-one-part"),
            encode_cursor("yesterday", "abc"),
            encode_cursor(1, 2),
            encode_cursor("2026-01-01T00:00:00", "abc"),  # naive: not one this store wrote
        ):
            with pytest.raises(InvalidInputError, match="cursor"):
                store.runs.list(cursor=cursor)
            with pytest.raises(InvalidInputError, match="cursor"):
                list_reports(store, cursor=cursor)
        with pytest.raises(InvalidInputError, match="limit"):
            store.runs.list(limit=0)

    # -- reports ------------------------------------------------------------------

    def test_report_round_trip(self, store: MetadataStore) -> None:
        run = store.runs.start("train", "fraud")
        values: list[object] = [
            0.1,
            3,
            1e20,
            -0.0,
            2**62,
            "text",
            [1, 2.5, "x", None],
            {"nested": {"a": [1.5, None]}, "b": True},
            None,
        ]
        checks = [
            CheckResult(f"check-{i}", True, observed=v, threshold=v, detail=f"d{i}")
            for i, v in enumerate(values)
        ]
        checks.append(
            CheckResult(
                "latency", False, observed=41.5, threshold=40, severity="warning", detail="slow"
            )
        )
        report = Report.of(
            "model:fraud", checks, kind="gate", subject_version="3", created_at=datetime.now(UTC)
        )
        assert report.verdict == "passed with warnings"
        assert save_report(store, report, run_id=run.id) == report.id

        loaded = get_report(store, report.id)
        assert loaded.to_dict() == report.to_dict()
        assert loaded.checks == report.checks
        for got, want in zip(loaded.checks, report.checks, strict=True):
            assert type(got.observed) is type(want.observed), got.name
            assert type(got.threshold) is type(want.threshold), got.name
        assert math.copysign(1.0, loaded.checks[3].observed) == -1.0
        assert loaded.created_at == report.created_at and loaded.created_at.tzinfo == UTC
        assert (loaded.passed, loaded.verdict) == (True, "passed with warnings")
        assert [c.name for c in loaded.warnings] == ["latency"]

        failed = Report.of("model:fraud", [CheckResult("auc", False, 0.6, 0.8)], kind="gate")
        save_report(store, failed)
        other = Report.of("dataset:tx", [], kind="data")
        save_report(store, other)

        newest = list_reports(store)
        assert [r.id for r in newest] == [other.id, failed.id, report.id]
        assert [r.id for r in list_reports(store, subject="model:fraud")] == [
            failed.id,
            report.id,
        ]
        assert [r.id for r in list_reports(store, kind="data")] == [other.id]
        assert [r.id for r in list_reports(store, run_id=run.id)] == [report.id]
        first = list_reports(store, limit=2)
        assert [r.id for r in first] == [other.id, failed.id]
        assert first.next_cursor is not None
        rest = list_reports(store, limit=2, cursor=first.next_cursor)
        assert [r.id for r in rest] == [report.id] and rest.next_cursor is None
        assert rest.items[0].checks == report.checks
        assert list_reports(store, subject="nobody").items == []

    def test_non_finite_observations_are_stored_as_null(self, store: MetadataStore) -> None:
        report = Report.of("model:m", [CheckResult("p95", False, math.inf, [math.nan, 1.0])])
        save_report(store, report)
        check = get_report(store, report.id).checks[0]
        assert (check.observed, check.threshold) == (None, [None, 1.0])

    def test_duplicate_report_is_refused_and_keeps_the_original(self, store: MetadataStore) -> None:
        report = Report.of("model:m", [CheckResult("a", True, 1, 1)])
        save_report(store, report)
        again = Report.of("model:m", [CheckResult("b", False, 0, 1)] * 3, id=report.id)
        with pytest.raises(AlreadyExistsError, match=report.id):
            save_report(store, again)
        assert get_report(store, report.id).checks == report.checks

    def test_report_for_a_missing_run_writes_nothing(self, store: MetadataStore) -> None:
        report = Report.of("model:m", [CheckResult("a", True)])
        with pytest.raises(NotFoundError, match="no run"):
            save_report(store, report, run_id="e" * 32)
        with pytest.raises(NotFoundError):
            get_report(store, report.id)
        naive = Report.of("model:m", [], created_at=datetime(2026, 1, 1))
        with pytest.raises(InvalidInputError, match="created_at"):
            save_report(store, naive)
