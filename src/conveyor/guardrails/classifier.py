"""The prompt-injection classifier: TF-IDF over character n-grams and words, and a logistic
regression, trained with scikit-learn on the labelled set committed in
``data/injection.jsonl.gz`` and shipped as a small artifact (``data/injection_model.json.gz``:
the kept features' weights, idf folded in) that runs in plain Python: no scikit-learn or
numpy at inference, loaded in milliseconds.

Features of a text, after :func:`normalize` (NFKC, zero-width characters dropped,
look-alike Cyrillic and Greek letters folded to Latin, lower case): the character 3- to
5-grams of each word padded with a space (scikit-learn's ``char_wb``), and the words and
word pairs (``w:ignore``, ``w:ignore previous``). Each feature counts ``1 + log(count)``
times its idf, the vector is scaled to unit length, and the score is the sigmoid of its
dot product with the weights plus the intercept.

A long text is scored by windows of :data:`WINDOW` words (half overlapping), its score the
highest: an injection in the middle of a long retrieved document is not diluted by the
rest. Training adds the windows of long texts with their text's label.

Retrain (deterministic; a few seconds)::

    .venv/bin/python -m conveyor.guardrails.classifier
"""

from __future__ import annotations

import gzip
import json
import math
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "WINDOW",
    "InjectionClassifier",
    "dataset",
    "features",
    "load",
    "normalize",
    "train",
    "windows",
]

#: Words in one scoring window of a long text.
WINDOW = 120
#: Distinct words whose known n-grams a model remembers.
_CACHE_WORDS = 50_000
_ARTIFACT = "data/injection_model.json.gz"
_DATA = "data/injection.jsonl.gz"

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
#: Cyrillic and Greek letters drawn like Latin ones (Unicode's confusables, the common ones).
_CONFUSABLES = str.maketrans(
    "аеорсухіјѕԁԛԝАВЕКМНОРСТХІЈЅіїɡοαεκνρτυχΑΒΕΗΙΚΜΝΟΡΤΥΧΖ",
    "aeopcyxijsdqwABEKMHOPCTXIJSiigoaekvptuxABEHIKMNOPTYXZ",
)
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    """``text`` as the detectors read it: NFKC (full-width and styled letters to plain ones),
    zero-width characters dropped, look-alike letters folded to Latin. Plain ASCII text is
    returned as it is."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    return text.translate(_CONFUSABLES)


def _char_ngrams(word: str) -> list[str]:
    """The character 3- to 5-grams of ``word`` padded with a space (the padded word itself
    when it is shorter)."""
    padded = f" {word} "
    size = len(padded)
    out = []
    for n in (3, 4, 5):
        if size <= n:
            out.append(padded)
            break
        out += [padded[i : i + n] for i in range(size - n + 1)]
    return out


def features(text: str) -> list[str]:
    """The features of an already normalized text (see the module), with repeats."""
    lowered = _SPACES.sub(" ", text.lower())
    out: list[str] = []
    for word in lowered.split():
        out += _char_ngrams(word)
    words = _WORD.findall(lowered)
    for i, word in enumerate(words):
        out.append("w:" + word)
        if i:
            out.append(f"w:{words[i - 1]} {word}")
    return out


def windows(text: str, size: int = WINDOW) -> Iterator[tuple[int, int]]:
    """``[start, end)`` spans of ``size`` words, each half over the previous one; one span
    for a text of at most ``size`` words."""
    bounds = [m.span() for m in re.finditer(r"\S+", text)]
    if len(bounds) <= size:
        yield 0, len(text)
        return
    step = size // 2
    for first in range(0, len(bounds) - step, step):
        last = min(first + size, len(bounds)) - 1
        yield bounds[first][0], bounds[last][1]


@dataclass(frozen=True, slots=True)
class InjectionClassifier:
    """The trained model (see the module): ``probability(text)``."""

    weights: dict[str, float]
    """Feature -> its logistic-regression coefficient."""
    idf: dict[str, float]
    intercept: float
    threshold: float
    """The probability from which a text is called an injection."""
    meta: dict[str, Any]
    _cache: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False, compare=False)

    def _counts(self, text: str) -> dict[str, int]:
        """The counts of ``features(text)`` that the model knows, each word's character
        n-grams looked up once and remembered (words repeat: a prompt of 1,000 tokens has
        a few hundred distinct ones)."""
        lowered = _SPACES.sub(" ", text.lower())
        counts: dict[str, int] = {}
        cache = self._cache
        idf = self.idf
        for word in lowered.split():
            known = cache.get(word)
            if known is None:
                known = tuple(f for f in _char_ngrams(word) if f in idf)
                if len(cache) < _CACHE_WORDS:
                    cache[word] = known
            for feature in known:
                counts[feature] = counts.get(feature, 0) + 1
        previous = None
        for word in _WORD.findall(lowered):
            feature = "w:" + word
            if feature in idf:
                counts[feature] = counts.get(feature, 0) + 1
            if previous is not None:
                pair = f"w:{previous} {word}"
                if pair in idf:
                    counts[pair] = counts.get(pair, 0) + 1
            previous = word
        return counts

    def _window(self, text: str) -> float:
        counts = self._counts(text)
        if not counts:
            return 1.0 / (1.0 + math.exp(-self.intercept))
        dot = 0.0
        norm = 0.0
        weights = self.weights
        idf = self.idf
        for feature, count in counts.items():
            value = (1.0 + math.log(count)) * idf[feature] if count > 1 else idf[feature]
            norm += value * value
            dot += value * weights[feature]
        z = self.intercept + dot / math.sqrt(norm)
        return 1.0 / (1.0 + math.exp(-z))

    def probability(self, text: str) -> float:
        """How likely ``text`` is an injection, 0 to 1 (its most likely window's)."""
        return self.best(text)[0]

    def best(self, text: str) -> tuple[float, int, int]:
        """The highest window probability and that window's ``[start, end)``."""
        text = normalize(text)
        top = (-1.0, 0, len(text))
        for start, end in windows(text):
            p = self._window(text[start:end])
            if p > top[0]:
                top = (p, start, end)
        return top

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "intercept": self.intercept,
            "threshold": self.threshold,
            "meta": self.meta,
            "features": {f: [round(self.weights[f], 6), round(self.idf[f], 6)] for f in self.idf},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InjectionClassifier:
        if data.get("format") != 1:
            raise ValueError(f"injection model format {data.get('format')!r}: expected 1")
        table = data["features"]
        return cls(
            weights={f: v[0] for f, v in table.items()},
            idf={f: v[1] for f, v in table.items()},
            intercept=float(data["intercept"]),
            threshold=float(data["threshold"]),
            meta=dict(data.get("meta", {})),
        )


@cache
def load() -> InjectionClassifier:
    """The committed model (loaded once)."""
    raw = resources.files("conveyor.guardrails").joinpath(_ARTIFACT).read_bytes()
    return InjectionClassifier.from_json(json.loads(gzip.decompress(raw)))


def dataset() -> list[dict[str, Any]]:
    """The committed labelled set (``text``, ``label``, ``family``, ``source``, ``group``,
    ``split``), read offline from the package."""
    raw = resources.files("conveyor.guardrails").joinpath(_DATA).read_bytes()
    return [json.loads(line) for line in gzip.decompress(raw).decode().split("\n") if line]


def _examples(records: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for record in records:
        text = normalize(record["text"])
        spans = list(windows(text))
        if len(spans) > 1:
            spans.append((0, len(text)))
        for start, end in spans:
            texts.append(text[start:end])
            labels.append(int(record["label"]))
    return texts, labels


def train(
    records: list[dict[str, Any]],
    *,
    keep: int = 5000,
    c: float = 1.0,
    max_fpr: float = 0.01,
) -> InjectionClassifier:
    """Fit on ``records`` (their ``train`` split is the caller's business): TF-IDF and a
    balanced logistic regression, the ``keep`` features of largest weight kept and the
    model refitted on them; the threshold is the lowest probability whose false-positive
    rate on the benign training texts (by grouped cross-validation) is at most ``max_fpr``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    def fit(texts: list[str], labels: list[int], vocabulary: list[str] | None) -> Any:
        vectorizer = TfidfVectorizer(
            analyzer=features,
            sublinear_tf=True,
            min_df=1 if vocabulary else 2,
            vocabulary=vocabulary,
        )
        matrix = vectorizer.fit_transform(texts)
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        model.fit(matrix, labels)
        return vectorizer, model

    texts, labels = _examples(records)
    vectorizer, model = fit(texts, labels, None)
    names = vectorizer.get_feature_names_out()
    order = sorted(range(len(names)), key=lambda i: -abs(model.coef_[0][i]))[:keep]
    vocabulary = sorted(str(names[i]) for i in order)
    vectorizer, model = fit(texts, labels, vocabulary)

    # the threshold: out-of-fold probabilities of whole training records, by group
    groups = [f"{r['source']}/{r['family']}/{r['group']}" for r in records]
    scores: list[tuple[float, int]] = []
    folds = GroupKFold(n_splits=5)
    for fit_index, test_index in folds.split(records, groups=groups):
        part = [records[i] for i in fit_index]
        ptexts, plabels = _examples(part)
        pvec, pmodel = fit(ptexts, plabels, vocabulary)
        fold = _to_classifier(pvec, pmodel, 0.5, {})
        scores += [
            (fold.probability(records[i]["text"]), int(records[i]["label"])) for i in test_index
        ]
    benign = sorted((s for s, label in scores if not label), reverse=True)
    allowed = int(max_fpr * len(benign))
    threshold = max(0.5, benign[allowed] + 1e-6) if benign else 0.5
    meta = {
        "trained_on": len(records),
        "features": len(vocabulary),
        "c": c,
        "max_fpr": max_fpr,
        "window": WINDOW,
    }
    return _to_classifier(vectorizer, model, round(threshold, 6), meta)


def _to_classifier(
    vectorizer: Any, model: Any, threshold: float, meta: dict[str, Any]
) -> InjectionClassifier:
    names = vectorizer.get_feature_names_out()
    coef = model.coef_[0]
    idf = vectorizer.idf_
    return InjectionClassifier(
        weights={str(n): float(coef[i]) for i, n in enumerate(names)},
        idf={str(n): float(idf[i]) for i, n in enumerate(names)},
        intercept=float(model.intercept_[0]),
        threshold=threshold,
        meta=meta,
    )


def evaluate(model: InjectionClassifier, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Recall (injections found) and false-positive rate (benign texts flagged) of
    ``model`` at its threshold on ``records``."""
    tp = fn = fp = tn = 0
    for record in records:
        flagged = model.probability(record["text"]) >= model.threshold
        if record["label"]:
            tp, fn = tp + flagged, fn + (not flagged)
        else:
            fp, tn = fp + flagged, tn + (not flagged)
    return {
        "injections": tp + fn,
        "benign": fp + tn,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "false_positive_rate": round(fp / (fp + tn), 4) if fp + tn else None,
    }


def main() -> None:
    records = dataset()
    training = [r for r in records if r["split"] == "train"]
    model = train(training)
    held_out = [r for r in records if r["split"] == "held_out"]
    report = evaluate(model, held_out)
    model.meta["held_out"] = report
    path = Path(__file__).resolve().parent / _ARTIFACT
    payload = json.dumps(model.to_json(), sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(gzip.compress(payload, mtime=0))
    print(json.dumps({"threshold": model.threshold, **model.meta}, indent=2))
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
