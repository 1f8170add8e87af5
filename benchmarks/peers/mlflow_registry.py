"""MLflow's side of the registry benchmark; runs in .bench-venvs/mlflow, prints JSON.

    python mlflow_registry.py --uri sqlite:////tmp/x/mlflow.db --workdir /tmp/x --sizes '{...}'

Imports nothing from Conveyor. MLflow's model versions point at a ``source``
URI and store no bytes, so registration here writes metadata only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

START = time.perf_counter()

import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from registry_workload import ALIAS, MODEL, Sizes, median_ms, peak_rss_mib, tags  # noqa: E402
from workload import emit_result  # noqa: E402

IMPORTED = time.perf_counter() - START


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--sizes", required=True)
    args = parser.parse_args(argv)
    s = Sizes.from_json(args.sizes)
    client = MlflowClient(tracking_uri=args.uri, registry_uri=args.uri)
    client.create_registered_model(MODEL)  # creates the schema: outside the timed region
    print("mlflow: registering", file=sys.stderr, flush=True)

    start = time.perf_counter()
    for i in range(s.versions):
        client.create_model_version(MODEL, source=f"{args.workdir}/models/{i}", tags=tags(i))
    register_s = time.perf_counter() - start
    client.set_registered_model_alias(MODEL, ALIAS, str(s.versions // 2))

    def alias() -> None:
        found = client.get_model_version_by_alias(MODEL, ALIAS)
        assert int(found.version) == s.versions // 2

    def first_page() -> None:
        page = client.search_model_versions(f"name='{MODEL}'", max_results=s.page)
        assert len(page) == min(s.page, s.versions)

    def tagged_page() -> None:
        page = client.search_model_versions(
            f"name='{MODEL}' and tags.parity='odd'", max_results=s.page
        )
        assert all(v.tags["parity"] == "odd" for v in page)

    def every_version() -> None:
        seen, token = 0, None
        while True:
            page = client.search_model_versions(
                f"name='{MODEL}'", max_results=s.all_page, page_token=token
            )
            seen += len(page)
            token = page.token
            if not token:
                break
        assert seen == s.versions, seen

    results = {
        "register": {
            "per_s": s.versions / register_s,
            "seconds": register_s,
            "api": "MlflowClient.create_model_version(name, source=uri, tags=...)",
        },
        "alias": {**median_ms(alias, s.lookups), "api": "get_model_version_by_alias"},
        "first_page": {
            **median_ms(first_page, s.searches),
            "api": "search_model_versions(name=..., max_results=100)",
        },
        "tagged_page": {
            **median_ms(tagged_page, s.searches),
            "api": "search_model_versions(name=... and tags.parity='odd', max_results=100)",
        },
        "all_versions": {
            **median_ms(every_version, max(1, s.searches // 10)),
            "api": "search_model_versions, pages of 1,000 with page_token",
        },
        "import_s": IMPORTED,
        "peak_rss_mib": peak_rss_mib(),
    }
    emit_result({"tool": "mlflow", "version": mlflow.__version__, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
