"""Rebuff's side of benchmarks/guardrails.py (injection): its heuristic check, the one
part of Rebuff that runs offline (the others call OpenAI and Pinecone):
``detect_prompt_injection_using_heuristic_on_input``, a fuzzy match of the text's word
windows against 1,760 generated "ignore previous instructions" phrasings, flagged above
the SDK's default ``max_heuristic_score`` (0.75). On the texts of a JSON file
(``sys.argv[1]``). It compares every window with every phrasing through difflib, seconds
a short text, so the caller gives it a sample. Prints JSON: scores, flags, median
microseconds a text.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rebuff.detect_pi_heuristics import detect_prompt_injection_using_heuristic_on_input
from workload import emit_result

THRESHOLD = 0.75  # RebuffSdk.detect_injection(max_heuristic_score=0.75)


def main() -> None:
    texts = json.loads(Path(sys.argv[1]).read_text())
    scores, times = [], []
    for i, text in enumerate(texts):
        started = time.perf_counter()
        scores.append(detect_prompt_injection_using_heuristic_on_input(text))
        times.append((time.perf_counter() - started) * 1e6)
        print(f"rebuff: {i + 1}/{len(texts)}", file=sys.stderr, flush=True)
    emit_result(
        {
            "version": metadata.version("rebuff"),
            "scores": scores,
            "flagged": [s > THRESHOLD for s in scores],
            "median_us": statistics.median(times),
        }
    )


if __name__ == "__main__":
    main()
