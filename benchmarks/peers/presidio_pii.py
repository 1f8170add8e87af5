"""Presidio's side of benchmarks/guardrails.py: its ``AnalyzerEngine`` with the pattern
recognizers of the labels planted (credit card with its Luhn check, IBAN with its
checksum, US SSN, email, phone via ``phonenumbers`` for the US, GB, FR and DE regions,
IP address, UK NINO, Spanish NIF and NIE) and spaCy's blank English pipeline as its NLP
engine: no model can be downloaded here, and the blank pipeline tokenizes (context words
still raise scores) without NER, so every finding comes from a pattern recognizer.

Prints JSON: the predicted spans per text of the labelled set, the median microseconds a
text, and the median microseconds a text of about 1,000 tokens.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spacy
from guardrails_pii_workload import dataset, long_texts
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    EsNieRecognizer,
    EsNifRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UkNinoRecognizer,
    UsSsnRecognizer,
)
from workload import emit_result

LABELS = {
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "IP_ADDRESS": "IP_ADDRESS",
    "UK_NINO": "UK_NINO",
    "ES_NIF": "ES_DNI",
    "ES_NIE": "ES_DNI",
}


class BlankEnglish(SpacyNlpEngine):
    """spaCy's blank English pipeline (a tokenizer, no trained components)."""

    def load(self) -> None:
        self.nlp = {"en": spacy.blank("en")}


def analyzer() -> AnalyzerEngine:
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (
        CreditCardRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
        EmailRecognizer(),
        PhoneRecognizer(supported_regions=("US", "GB", "FR", "DE")),
        IpRecognizer(),
        UkNinoRecognizer(),
        EsNifRecognizer(supported_language="en"),
        EsNieRecognizer(supported_language="en"),
    ):
        registry.add_recognizer(recognizer)
    engine = BlankEnglish(models=[{"lang_code": "en", "model_name": "blank"}])
    return AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])


def main() -> None:
    engine = analyzer()
    entities = list(LABELS)

    def scan(text: str) -> list[list[Any]]:
        results = engine.analyze(text, language="en", entities=entities)
        return [[r.start, r.end, LABELS[r.entity_type]] for r in results if r.score > 0]

    scan("warm up 4111 1111 1111 1111")
    predictions = []
    times = []
    for item in dataset():
        started = time.perf_counter()
        found = scan(item["text"])
        times.append((time.perf_counter() - started) * 1e6)
        predictions.append(found)
    long_times = []
    for text in long_texts():
        started = time.perf_counter()
        scan(text)
        long_times.append((time.perf_counter() - started) * 1e6)
    import importlib.metadata as metadata

    emit_result(
        {
            "version": metadata.version("presidio-analyzer"),
            "spacy": metadata.version("spacy"),
            "predictions": predictions,
            "median_us": statistics.median(times),
            "median_us_1000_tokens": statistics.median(long_times),
        }
    )


if __name__ == "__main__":
    main()
