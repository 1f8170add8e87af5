"""Presidio's side of benchmarks/guardrails.py: its pattern recognizers (credit card with
its Luhn check, IBAN with its checksum, US SSN, email, phone via phonenumbers) called
directly, without a spaCy model (none can be downloaded here), on the shared labelled set.
Prints JSON: the predicted spans per text and the median microseconds per text."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guardrails_pii_workload import dataset
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)
from workload import emit_result

LABELS = {
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
}


def main() -> None:
    recognizers = [
        CreditCardRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
        EmailRecognizer(),
        PhoneRecognizer(supported_regions=("US", "GB", "FR", "DE")),
    ]
    predictions = []
    times = []
    for item in dataset():
        started = time.perf_counter()
        found = []
        for recognizer in recognizers:
            entities = recognizer.supported_entities
            for result in recognizer.analyze(item["text"], entities, None):
                if result.score > 0:
                    found.append([result.start, result.end, LABELS[result.entity_type]])
        times.append((time.perf_counter() - started) * 1e6)
        predictions.append(found)
    import importlib.metadata as metadata

    emit_result(
        {
            "version": metadata.version("presidio-analyzer"),
            "predictions": predictions,
            "median_us": statistics.median(times),
        }
    )


if __name__ == "__main__":
    main()
