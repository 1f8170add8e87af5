"""Fit the benchmark's models in this venv (its own scikit-learn) and save them with joblib.

python serving_fit.py OUTDIR      # writes OUTDIR/lr.joblib and OUTDIR/rf.joblib
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import sklearn
from serving_workload import fit


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for kind in ("lr", "rf"):
        joblib.dump(fit(kind), out / f"{kind}.joblib")
    print(json.dumps({"sklearn": sklearn.__version__}))


if __name__ == "__main__":
    main()
