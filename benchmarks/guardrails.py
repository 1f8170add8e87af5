"""Guardrail detectors: quality on labelled sets and speed, beside peers in one run.

    .venv/bin/python benchmarks/guardrails.py [--rebuff-sample 60]

- **PII** (``peers/guardrails_pii_workload.py``, 400 texts, seeded): planted card numbers,
  IBANs, US SSNs, UK NINOs, Spanish DNIs and IPv4 addresses, valid and not (40% fail
  their checksum or were never issued: those must not be reported), emails and phones
  (international, North American, French, British). Conveyor's ``PiiDetector`` beside
  Microsoft Presidio's ``AnalyzerEngine`` with the matching pattern recognizers and spaCy's
  blank English pipeline as its NLP engine (``peers/presidio_pii.py``: no spaCy model can
  be downloaded here; every result with a score above 0 counts, the engine's default
  threshold). Precision and recall per label (a prediction counts when its label matches
  and its span overlaps a planted one), the median time a text, and the median time a
  text of about 1,000 tokens.
- **Injection**: the held-out part of ``conveyor/guardrails/data/injection.jsonl.gz``
  (split by template group; see docs/guardrails.md): recall and false-positive rate,
  overall and by source, of Conveyor's heuristics, classifier and both; beside
  last_layer 0.1.33 (offline: a shared library with heuristics and an exploit
  classifier) on every text, and Rebuff 0.1.1's heuristic check (its only offline part)
  on a seeded sample of short texts (it takes seconds a text), with Conveyor scored on the
  same sample. LLM Guard's and NeMo Guardrails' injection checks need models from the
  Hugging Face hub and cannot run here.
- **Latency**: each detector, and heuristics + PII (the issue's target: at most 2 ms), on
  1,000-token prompts: the PII workload's texts joined, and the earlier repetitive prompt.

Writes ``benchmarks/results/guardrails.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import harness
from guardrails_pii_workload import LABELS, dataset, long_texts

from conveyor.guardrails.classifier import dataset as injection_set
from conveyor.guardrails.injection import InjectionDetector
from conveyor.guardrails.pii import PiiDetector
from conveyor.guardrails.secrets import SecretsDetector
from conveyor.guardrails.types import Detector

harness.PEERS["presidio"] = ("presidio-analyzer",)
harness.PEERS["last_layer"] = ("last-layer==0.1.33", "setuptools<81")  # it imports pkg_resources
harness.PEERS["rebuff"] = ("rebuff==0.1.1",)


def _median_us(scan: Callable[[str], Any], texts: list[str], rounds: int = 1) -> float:
    times = []
    for _ in range(rounds):
        for text in texts:
            started = time.perf_counter()
            scan(text)
            times.append((time.perf_counter() - started) * 1e6)
    return round(statistics.median(times), 1)


# ------------------------------------------------------------------------------- PII
def score(items: list[dict[str, Any]], predictions: list[list[list[Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label in LABELS:
        tp = fp = fn = 0
        for item, predicted in zip(items, predictions, strict=True):
            truth = [s for s in item["spans"] if s[2] == label]
            mine = [p for p in predicted if p[2] == label]
            matched = set()
            for p in mine:
                hit = next(
                    (
                        i
                        for i, t in enumerate(truth)
                        if i not in matched and p[0] < t[1] and t[0] < p[1]
                    ),
                    None,
                )
                if hit is None:
                    fp += 1
                else:
                    matched.add(hit)
                    tp += 1
            fn += len(truth) - len(matched)
        out[label] = {
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }
    return out


def pii() -> dict[str, Any]:
    items = dataset()
    detector = PiiDetector(list(LABELS))
    predictions = [[[f.start, f.end, f.label] for f in detector.scan(i["text"])] for i in items]
    ours = {
        "median_us": _median_us(detector.scan, [i["text"] for i in items], rounds=3),
        "median_us_1000_tokens": _median_us(detector.scan, long_texts(), rounds=5),
        **score(items, predictions),
    }
    python = harness.ensure_venv("presidio")
    theirs = harness.run_side(
        python, harness.PEER_SCRIPTS / "presidio_pii.py", [], label="presidio"
    )
    return {
        "texts": len(items),
        "planted": sum(len(i["spans"]) for i in items),
        "conveyor": ours,
        "presidio": {
            "version": theirs["version"],
            "nlp_engine": f"spacy.blank('en') (spaCy {theirs['spacy']}), pattern recognizers",
            "median_us": round(theirs["median_us"], 1),
            "median_us_1000_tokens": round(theirs["median_us_1000_tokens"], 1),
            **score(items, theirs["predictions"]),
        },
    }


# ------------------------------------------------------------------------- injection
def binary(records: list[dict[str, Any]], flagged: list[bool]) -> dict[str, Any]:
    """Recall and false-positive rate, overall and by source."""

    def rates(pairs: list[tuple[dict[str, Any], bool]]) -> dict[str, Any]:
        inj = [f for r, f in pairs if r["label"]]
        ben = [f for r, f in pairs if not r["label"]]
        return {
            "injections": len(inj),
            "benign": len(ben),
            "recall": round(sum(inj) / len(inj), 4) if inj else None,
            "false_positive_rate": round(sum(ben) / len(ben), 4) if ben else None,
        }

    pairs = list(zip(records, flagged, strict=True))
    by_source = {
        source: rates([(r, f) for r, f in pairs if r["source"] == source])
        for source in sorted({r["source"] for r in records})
    }
    return {**rates(pairs), "by_source": by_source}


def _write(texts: list[str]) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(texts, handle)
    return handle.name


def injection(rebuff_sample: int) -> dict[str, Any]:
    held_out = [r for r in injection_set() if r["split"] == "held_out"]
    texts = [r["text"] for r in held_out]
    long = long_texts(20)
    out: dict[str, Any] = {"held_out": len(held_out)}
    detectors = {mode: InjectionDetector(mode) for mode in ("heuristics", "classifier", "both")}
    for mode, detector in detectors.items():
        flagged = [bool(detector.scan(t)) for t in texts]
        out[f"conveyor_{mode}"] = {
            **binary(held_out, flagged),
            "median_us": _median_us(detector.scan, texts),
            "median_us_1000_tokens": _median_us(detector.scan, long, rounds=3),
        }
    python = harness.ensure_venv("last_layer")
    theirs = harness.run_side(
        python,
        harness.PEER_SCRIPTS / "last_layer_injection.py",
        [_write(texts), _write(long)],
        label="last_layer",
    )
    for variant in ("any", "exploit"):
        out[f"last_layer_{variant}"] = {
            "version": theirs["version"],
            **binary(held_out, theirs[variant]),
            "median_us": round(theirs["median_us"], 1),
            "median_us_1000_tokens": round(theirs["median_us_1000_tokens"], 1),
        }
    if rebuff_sample:
        rng = random.Random(3)
        short = [r for r in held_out if len(r["text"].split()) <= 25]
        sample = rng.sample([r for r in short if r["label"]], rebuff_sample // 2)
        sample += rng.sample([r for r in short if not r["label"]], rebuff_sample // 2)
        python = harness.ensure_venv("rebuff")
        rebuff = harness.run_side(
            python,
            harness.PEER_SCRIPTS / "rebuff_injection.py",
            [_write([r["text"] for r in sample])],
            label="rebuff",
        )
        out["sample"] = {
            "texts": len(sample),
            "how": "held-out texts of at most 25 words, half injections, seeded",
            "rebuff_heuristic": {
                "version": rebuff["version"],
                **binary(sample, rebuff["flagged"]),
                "median_us": round(rebuff["median_us"], 1),
            },
            **{
                f"conveyor_{mode}": binary(sample, [bool(d.scan(r["text"])) for r in sample])
                for mode, d in detectors.items()
            },
        }
    return out


# --------------------------------------------------------------------------- latency
def latency() -> dict[str, Any]:
    realistic = long_texts(40)
    sentence = "My order 12345 arrived damaged and I would like a refund to my card please. "
    repetitive = [sentence * 60]  # about 1,000 tokens (15 words a sentence)
    heuristics = InjectionDetector("heuristics")
    classifier = InjectionDetector("classifier")
    pii_detector = PiiDetector()
    secrets = SecretsDetector()

    def chain(*detectors: Detector) -> Callable[[str], None]:
        def run(text: str) -> None:
            for detector in detectors:
                detector.scan(text)

        return run

    out: dict[str, Any] = {}
    for name, texts in (("mixed_pii_texts", realistic), ("repetitive_prompt", repetitive)):
        rounds = 5 if len(texts) > 1 else 200
        row = {
            "chars": round(statistics.mean(len(t) for t in texts)),
            "words": round(statistics.mean(len(t.split()) for t in texts)),
        }
        for label, run in (
            ("injection_heuristics", heuristics.scan),
            ("injection_classifier", classifier.scan),
            ("pii", pii_detector.scan),
            ("secrets", secrets.scan),
            ("heuristics_plus_pii", chain(heuristics, pii_detector)),
            ("heuristics_pii_secrets", chain(heuristics, pii_detector, secrets)),
            ("all_with_classifier", chain(InjectionDetector("both"), pii_detector, secrets)),
        ):
            row[f"{label}_ms"] = round(_median_us(run, texts, rounds) / 1000, 3)
        out[name] = row
    out["target_ms"] = 2.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rebuff-sample", type=int, default=60)
    args = parser.parse_args()
    results = {
        "machine": harness.machine(),
        "timestamp": harness.timestamp(),
        "pii": pii(),
        "injection": injection(args.rebuff_sample),
        "latency_1000_tokens": latency(),
    }
    path = harness.write_result("guardrails", results)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
