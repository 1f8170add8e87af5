"""The detectors a guardrail policy's check can name, by name: ``DETECTORS[name](settings)``
builds one from the check's settings (the check's keys other than its own), and a bad
setting raises ``ValueError`` naming it.

=============  ==========================================================================
``pii``        :class:`~conveyor.guardrails.pii.PiiDetector`. ``entities``: the labels to
               find (default: all of ``CREDIT_CARD``, ``IBAN``, ``EMAIL``, ``PHONE``,
               ``US_SSN``, ``UK_NINO``, ``FR_NIR``, ``ES_DNI``, ``NL_BSN``,
               ``IP_ADDRESS``).
``secrets``    :class:`~conveyor.guardrails.secrets.SecretsDetector`. ``labels``: which of
               ``API_KEY``, ``PRIVATE_KEY``, ``JWT``, ``SECRET`` (default: all).
``injection``  :class:`~conveyor.guardrails.injection.InjectionDetector`. ``mode``:
               ``heuristics``, ``classifier`` or ``both`` (the default: either one
               finding it is enough); ``threshold``: the heuristics' score that counts
               (0.5); ``classifier_threshold``: the classifier's probability that counts
               (the one chosen on its training data, stored with it).
``profanity``  :class:`~conveyor.guardrails.words.WordsDetector` on the committed list
               (``data/profanity.txt``). ``words``: more words; ``allow``: words of the
               list not to report; ``label`` (``PROFANITY``).
``topics``     :class:`~conveyor.guardrails.words.TopicsDetector`: banned topics.
               ``rules``: ``{name: [words or phrases]}`` (a finding's label is the name
               upper-cased), or, for one rule, ``words`` and ``label`` (``TOPIC``).
=============  ==========================================================================

Every factory copies its settings, so one spec can build a detector twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor.guardrails.types import Detector

__all__ = ["DETECTORS", "build"]


def _take(name: str, settings: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(known))
    if unknown:
        accepted = ", ".join(known) if known else "none"
        raise ValueError(f"{name}: unknown setting {unknown[0]!r} (settings: {accepted})")
    return dict(settings)


def _words_list(name: str, value: Any, setting: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"{name}: {setting} is a list of words or phrases")
    return [str(v) for v in value]


def pii(settings: dict[str, Any]) -> Detector:
    from conveyor.guardrails.pii import PiiDetector

    taken = _take("pii", settings, ("entities",))
    return PiiDetector(_words_list("pii", taken.get("entities"), "entities") or None)


def secrets(settings: dict[str, Any]) -> Detector:
    from conveyor.guardrails.secrets import SecretsDetector

    taken = _take("secrets", settings, ("labels",))
    return SecretsDetector(_words_list("secrets", taken.get("labels"), "labels") or None)


def injection(settings: dict[str, Any]) -> Detector:
    from conveyor.guardrails.injection import InjectionDetector

    taken = _take("injection", settings, ("mode", "threshold", "classifier_threshold"))
    return InjectionDetector(**taken)


def profanity(settings: dict[str, Any]) -> Detector:
    from conveyor.guardrails.words import WordsDetector, profanity_words

    taken = _take("profanity", settings, ("words", "allow", "label"))
    allow = {w.lower() for w in _words_list("profanity", taken.get("allow"), "allow")}
    words = [w for w in profanity_words() if w not in allow]
    words += _words_list("profanity", taken.get("words"), "words")
    return WordsDetector("profanity", str(taken.get("label", "PROFANITY")), words)


def topics(settings: dict[str, Any]) -> Detector:
    from conveyor.guardrails.words import TopicsDetector

    taken = _take("topics", settings, ("rules", "words", "label"))
    rules = taken.get("rules")
    if rules is not None and "words" in taken:
        raise ValueError("topics: give rules, or words (one rule), not both")
    if rules is None:
        words = _words_list("topics", taken.get("words"), "words")
        rules = {str(taken.get("label", "TOPIC")): words}
    elif not isinstance(rules, dict):
        raise ValueError("topics: rules maps a rule's name to its words")
    return TopicsDetector({str(k): _words_list("topics", v, k) for k, v in rules.items()})


#: Name -> factory taking the detector's settings (see the module).
DETECTORS: dict[str, Callable[[dict[str, Any]], Detector]] = {
    "pii": pii,
    "secrets": secrets,
    "injection": injection,
    "profanity": profanity,
    "topics": topics,
}


def build(name: str, settings: dict[str, Any] | None = None) -> Detector:
    """The detector ``name`` built with ``settings`` (ValueError: unknown name or setting)."""
    factory = DETECTORS.get(name)
    if factory is None:
        raise ValueError(f"no detector {name!r}: known {', '.join(DETECTORS)}")
    return factory(dict(settings or {}))
