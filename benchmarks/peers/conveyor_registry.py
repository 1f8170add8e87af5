"""Conveyor's side of the registry benchmark; runs in Conveyor's virtualenv, prints JSON.

    python conveyor_registry.py --store-url sqlite:////tmp/x/c.db --workdir /tmp/x --sizes '{...}'

Each version is a small PythonModel, pickled and stored content-addressed
(sha256) in a file:// artifact store: registration writes the artifact's
bytes as well as the metadata. No event log (MLflow has none to write).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

START = time.perf_counter()

from registry_workload import ALIAS, MODEL, Sizes, median_ms, peak_rss_mib, tags  # noqa: E402
from workload import emit_result  # noqa: E402

import conveyor  # noqa: E402
from conveyor.artifacts.store import ArtifactStore  # noqa: E402
from conveyor.registry import PythonModel, Registry  # noqa: E402
from conveyor.store.database import MetadataStore  # noqa: E402

IMPORTED = time.perf_counter() - START


class Offset(PythonModel):
    """A model of a few bytes: adds its offset (distinct per version, so no artifact is shared)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def predict(self, frame: Any) -> Any:
        return frame["x"] + self.offset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store-url", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--sizes", required=True)
    args = parser.parse_args(argv)
    s = Sizes.from_json(args.sizes)
    with (
        MetadataStore.from_url(args.store_url) as store,  # migrates: outside the timed region
        ArtifactStore.from_url((args.workdir / "artifacts").as_uri()) as artifacts,
    ):
        registry = Registry(store, artifacts)
        print("conveyor: registering", file=sys.stderr, flush=True)
        start = time.perf_counter()
        for i in range(s.versions):
            registry.register(MODEL, Offset(i), tags=tags(i))
        register_s = time.perf_counter() - start
        registry.set_alias(MODEL, ALIAS, s.versions // 2, actor="bench")

        def alias() -> None:
            assert registry.resolve(f"{MODEL}@{ALIAS}").number == s.versions // 2

        def first_page() -> None:
            assert len(registry.list(MODEL, limit=s.page)) == min(s.page, s.versions)

        def tagged_page() -> None:
            page = registry.search(name=MODEL, tag="parity=odd", limit=s.page)
            assert all(v.tags["parity"] == "odd" for v in page)

        def every_version() -> None:
            seen, cursor = 0, None
            while True:
                page = registry.list(MODEL, limit=s.all_page, cursor=cursor)
                seen += len(page)
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert seen == s.versions, seen

        results = {
            "register": {
                "per_s": s.versions / register_s,
                "seconds": register_s,
                "api": "Registry.register(name, PythonModel, tags=...): pickle + sha256 "
                "artifact + version row",
            },
            "alias": {**median_ms(alias, s.lookups), "api": "Registry.resolve('name@alias')"},
            "first_page": {
                **median_ms(first_page, s.searches),
                "api": "Registry.list(name, limit=100)",
            },
            "tagged_page": {
                **median_ms(tagged_page, s.searches),
                "api": "Registry.search(name=..., tag='parity=odd', limit=100)",
            },
            "all_versions": {
                **median_ms(every_version, max(1, s.searches // 10)),
                "api": "Registry.list, keyset pages of 1,000",
            },
            "import_s": IMPORTED,
            "peak_rss_mib": peak_rss_mib(),
        }
    emit_result({"tool": "conveyor", "version": conveyor.__version__, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
