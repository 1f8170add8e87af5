"""The gateway's complexity classifier (routing rules ``when: {complexity: ...}``): quality
on the held-out families of its labelled set, and its cost per request.

    .venv/bin/python benchmarks/gateway_complexity.py

- **Quality**: ``src/conveyor/gateway/data/complexity_prompts.jsonl`` (built by
  ``scripts/gateway_complexity_data.py``: template prompts, simple or complex), the
  committed model (fitted by ``scripts/gateway_complexity_fit.py`` on the train families)
  scored on the held-out families, which no template of the fit comes from: accuracy,
  precision and recall of ``complex``, the confusion matrix, accuracy per family. The
  labels are the templates', written by the same hands as the features: it says how well
  the features separate these kinds of prompt, not how a real workload splits.
- **Latency**: :meth:`Complexity.classify` on each held-out prompt (median and p99 over
  every call, in microseconds), and on prompts of about 100, 1,000 and 10,000 tokens
  (only ``SCAN_CHARS`` characters are scanned, the first 1,500 and the last 500, so the
  cost levels off).

Writes ``benchmarks/results/gateway_complexity.json``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

from conveyor.gateway.complexity import SCAN_CHARS, Complexity

DATA = harness.ROOT / "src/conveyor/gateway/data/complexity_prompts.jsonl"
REPEATS = 200


def quality(model: Complexity, records: list[dict[str, Any]]) -> dict[str, Any]:
    tp = fp = fn = tn = 0
    families: dict[str, list[bool]] = {}
    for record in records:
        predicted = model.label(model.score(record["text"]))
        truth = record["label"]
        families.setdefault(f"{truth}/{record['family']}", []).append(predicted == truth)
        if predicted == "complex":
            tp, fp = (tp + 1, fp) if truth == "complex" else (tp, fp + 1)
        else:
            fn, tn = (fn + 1, tn) if truth == "complex" else (fn, tn + 1)
    return {
        "prompts": len(records),
        "complex": tp + fn,
        "simple": tn + fp,
        "accuracy": round((tp + tn) / len(records), 4),
        "complex_precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "complex_recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "accuracy_by_family": {
            name: round(sum(hits) / len(hits), 4) for name, hits in sorted(families.items())
        },
    }


def _timed(model: Complexity, messages: list[dict[str, Any]], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.classify(messages)
        times.append((time.perf_counter() - started) * 1e6)
    return times


def latency(model: Complexity, records: list[dict[str, Any]]) -> dict[str, Any]:
    times: list[float] = []
    for record in records:
        messages = [{"role": "user", "content": record["text"]}]
        model.classify(messages)  # warm
        times.extend(_timed(model, messages, 20))
    times.sort()
    by_size = {}
    paragraph = next(r["text"] for r in records if len(r["text"]) > 300)
    for tokens in (100, 1000, 10000):
        text = (paragraph + " ") * (tokens * 4 // len(paragraph) + 1)
        text = text[: tokens * 4]
        found = sorted(_timed(model, [{"role": "user", "content": text}], REPEATS))
        by_size[f"{tokens}_tokens"] = {
            "chars": len(text),
            "median_us": round(statistics.median(found), 2),
        }
    return {
        "calls": len(times),
        "median_us": round(statistics.median(times), 2),
        "p99_us": round(times[int(len(times) * 0.99)], 2),
        "by_prompt_size": by_size,
        "scan_chars": SCAN_CHARS,
    }


def main() -> None:
    records = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    held = [r for r in records if r["split"] == "held_out"]
    train = [r for r in records if r["split"] == "train"]
    model = Complexity.default()
    results = {
        "machine": harness.machine(),
        "timestamp": harness.timestamp(),
        "data": {
            "prompts": len(records),
            "train": len(train),
            "held_out": len(held),
            "held_out_families": sorted({r["family"] for r in held}),
        },
        "held_out": quality(model, held),
        "train": {k: v for k, v in quality(model, train).items() if k != "accuracy_by_family"},
        "latency": latency(model, held),
    }
    path = harness.write_result("gateway_complexity", results)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
