"""last_layer's side of benchmarks/guardrails.py (injection): its offline scanner (a
closed-source shared library shipped in the wheel: heuristics and an "ExploitClassifier")
on the texts of a JSON file (``sys.argv[1]``: a list of strings).

A text counts as flagged two ways: ``any``: any of its threat markers except those of
other checks (PII, secrets, profanity, code), as its ``passed`` says with those ignored;
``exploit``: its ExploitClassifier marker alone. Prints JSON: both flags per text, the
median microseconds a text, and the median for the texts of ``sys.argv[2]`` (about 1,000
tokens each).
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from last_layer import Threat, scan_prompt
from workload import emit_result

OTHER_CHECKS = [Threat.PiiMarker, Threat.SecretsMarker, Threat.ProfanityDetector, Threat.CodeFilter]


def main() -> None:
    texts = json.loads(Path(sys.argv[1]).read_text())
    long_texts = json.loads(Path(sys.argv[2]).read_text())
    scan_prompt("warm up")
    flagged_any, flagged_exploit, times = [], [], []
    for text in texts:
        started = time.perf_counter()
        risk = scan_prompt(text, ignore=OTHER_CHECKS)
        times.append((time.perf_counter() - started) * 1e6)
        flagged_any.append(not risk.passed)
        flagged_exploit.append(risk.has(Threat.ExploitClassifier))
    long_times = []
    for text in long_texts:
        started = time.perf_counter()
        scan_prompt(text, ignore=OTHER_CHECKS)
        long_times.append((time.perf_counter() - started) * 1e6)
    emit_result(
        {
            "version": metadata.version("last-layer"),
            "any": flagged_any,
            "exploit": flagged_exploit,
            "median_us": statistics.median(times),
            "median_us_1000_tokens": statistics.median(long_times),
        }
    )


if __name__ == "__main__":
    main()
