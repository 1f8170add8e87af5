"""The quickstart (make demo) end to end: its registry story holds on the real flow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conveyor.project import Project
from conveyor.rag.collections import Collections
from conveyor.serving.route_store import RouteStore

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "quickstart.py"


@pytest.mark.slow
def test_quickstart_promotes_through_gates_and_optimizes(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    done = subprocess.run(
        [sys.executable, str(QUICKSTART), "--project", str(root), "--fresh"],
        capture_output=True,
        text=True,
        env=env,
        timeout=420,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "promotion refused (gate_failed): fraud-detector@2 failed its gates" in out, out
    assert "promoted fraud-detector@3 to champion" in out, out

    # `conveyor train fraud-detector -C demo` finds its code in the project folder.
    assert (root / "model.py").exists() and (root / "data.py").exists()
    with Project.open(root) as project:
        registry = project.registry
        # Step 12 moved champion from @3 to @7 through a rollout (below); if not, its lines
        # say why (gates, or the rollout's verdict and reason).
        step12 = [line for line in out.splitlines() if "@7" in line or "rollout" in line]
        assert registry.get("fraud-detector", "champion").number == 7, "\n".join(step12)
        weak = registry.gate_report("fraud-detector@2")
        assert weak is not None and not weak.passed
        assert {"quality.roc_auc", "champion.roc_auc"} <= {c.name for c in weak.failures}
        good = registry.gate_report("fraud-detector@3")
        assert good is not None and good.passed
        optimized = registry.get("fraud-detector", 4)
        assert optimized.flavor == "onnx" and optimized.tags["optimization"] == "onnx-int8"
        assert optimized.parent_id == registry.get("fraud-detector", 3).id
        assert optimized.metrics["size_bytes"] < 0.8 * _float_onnx_bound(out)
        moves = registry.alias_history("fraud-detector", "champion")
        assert [m.forced for m in moves] == [False, False, False]
        assert [m.actor for m in moves][-2:] == ["ana", "ana"]  # newest first: the rollout's
        assert all(m.reason for m in moves)
        # Served: a sticky 10 % canary of @4 with a shadow copy to @1, then a rollback.
        routes = RouteStore(project.store, project.events, registry)
        history = routes.history("fraud-detector")[-3:]  # step 8's (step 12 came after)
        assert [h.policy.mode for h in history] == ["fixed", "canary", "fixed"]
        assert history[1].policy.shadow == [1] and history[0].actor == "key:quickstart-oncall"
        project.events.flush()
        served = project.events.query(kind="prediction", subject="fraud-detector", limit=5000)
        versions = Counter(e.subject_version for e in served.items)
        assert versions["4"] > 0 and versions["3"] > versions["4"] * 4
        shadows = project.events.query(kind="prediction.shadow", limit=2000).items
        assert len(shadows) == 1000 and {e.subject_version for e in shadows} == {"1"}
        assert "rollback to revision 3" in out and "canary (v4)" in out
        assert "readiness: ready (GET /v2/health/ready" in out
        # The audit trail it printed: the rollback and the canary, by the on-call key.
        lines = out.splitlines()
        start = next(i for i, line in enumerate(lines) if "audit trail" in line) + 1
        trail = [line.strip() for line in lines[start : start + 4]]
        assert trail[:2] == [
            "route.rolled_back fraud-detector by key:quickstart-oncall",
            "route.set fraud-detector by key:quickstart-oncall",
        ], trail
        # The feature store: customer-risk trained on a feature service, served by id.
        risk = registry.get("customer-risk", 1)
        (used,) = risk.inputs
        assert (used["kind"], used["name"]) == ("feature_service", "customer_risk")
        assert used["views"]["customer_spend"]["datasets"] == ["transactions@2"]
        assert "transactions@2 -> view customer_spend v1 -> service" in out
        (scored,) = project.events.query(kind="prediction", subject="customer-risk").items
        looked_up = scored.payload["features"]
        assert looked_up["service"] == "customer_risk" and len(looked_up["rows"]) == 2
        assert looked_up["rows"][0]["missing"] == [] and looked_up["rows"][0]["expired"] == []
        assert looked_up["rows"][0]["values"]["amount_mean_7d"] > 0
        # Monitoring: the drift job passes calm traffic and fails drifted traffic; the
        # alert on it fires once in three evaluations, notifies the webhook once, and its
        # retrain action starts a retraining; late labels give the quality per phase.
        assert "calm traffic against the training data: no drift" in out, out
        assert "drifted traffic against the training data: drift detected" in out, out
        assert "evaluated 3 times, fired 1 time(s), 1 notification(s)" in out, out
        assert "started retrain.fraud-detector (succeeded), triggered by the alert" in out, out
        fired = [e.payload["rule"] for e in project.events.query(kind="alert.fired").items]
        assert fired.count("fraud_input_drift") == 1, fired
        retrained = registry.get("fraud-detector", 5)
        assert retrained.tags.get("trigger") == "event:alert.retrain_requested", retrained.tags
        detected = project.events.query(kind="drift.detected", subject="fraud-detector").items
        assert len(detected) == 1
        (calm_row,) = [line for line in out.splitlines() if line.startswith("│ calm ")]
        (drift_row,) = [line for line in out.splitlines() if line.startswith("│ drifted ")]
        calm_accuracy = float(calm_row.split("│")[3])
        drift_accuracy, estimate = float(drift_row.split("│")[3]), drift_row.split("│")[6]
        assert calm_accuracy > drift_accuracy + 0.03, (calm_row, drift_row)
        assert abs(float(estimate.split()[0]) - drift_accuracy) < 0.05, drift_row
        # Progressive delivery: the hotfix without gates is refused, then forced and rolled
        # back by the controller at its first step on its error rate, with an alert; the
        # bigger challenger is promoted step by step; the A-A experiment finds nothing.
        assert "rollout of fraud-detector@6 refused" in out, out
        assert "rolled back at step 1 (10% of traffic): error_rate:" in out, out
        assert "the on-call webhook got 1 alert(s)" in out, out
        assert "promoted after" in out and "champion is now fraud-detector@7" in out, out
        rollouts = {r.candidate: r for r in project.rollouts.list()}
        assert rollouts[6].status == "rolled_back" and rollouts[6].step_index == 0
        assert rollouts[7].status == "promoted"
        aa = next(line for line in out.splitlines() if "A-A experiment" in line)
        assert "no difference" in aa and "sample ratio ok" in aa and "keep running" in aa, aa
        assert "readiness:" in out
        # The forgotten customer had rows, and is gone from the latest dataset version.
        forgot = next(line for line in out.splitlines() if "forgot customer" in line).split()
        customer, rows = int(forgot[3].rstrip(":")), int(forgot[4])
        assert rows > 0
        latest = project.data.versions.latest("transactions")
        assert latest is not None
        ids = project.data.versions.read(latest, purpose="test").column("customer_id")
        assert customer not in set(ids.to_pylist())
        # Batch scoring: the three broken rows are rejected with their reason, the rest
        # scored; resuming the finished run is refused and a re-run doubles nothing.
        flat = " ".join(out.split())  # the console wraps long lines
        assert "20,000 scored, 3 rejected" in flat, out
        assert "'log_amount': not a number" in flat and "'merchant_category' is null" in flat
        assert "refused (conflict), nothing left to score" in flat, out
        assert "20,000 rows in nightly/ (none doubled)" in flat, out
        scores = root / "scores" / "nightly"
        manifest = json.loads((scores / "_manifest.json").read_text())
        assert [p["rows"] for p in manifest["partitions"]] == [20_000, 3]
        assert manifest["scored"] == 20_000 and manifest["rejected"] == 3
        # the broken file's partition has only rejected rows: no scores file of its own
        assert len(list(scores.glob("part-*.parquet"))) == 1
        assert len(list((scores / "rejected").glob("part-*.parquet"))) == 1
        # Stream scoring on the NATS `make test` starts: every good message scored by the
        # champion's route, the two poison ones dead-lettered.
        assert "14 scored a stream on NATS JetStream: 202 messages, 200 scored" in flat, out
        assert "2 dead-lettered with their reason" in flat, out
        # RAG: the repository's docs built into docs@1 (its gate run on the 18 labelled
        # questions), searched with citations, and rebuilt into docs@2 re-embedding nothing.
        built = re.search(r"15 RAG: docs@1 built from (\d+) documents, (\d+) chunks", flat)
        assert built is not None and int(built[1]) >= 18 and int(built[2]) > 100, out
        assert "labelled questions: passed; alias live moved" in flat, out
        assert "nothing changed: docs@2, 0 chunks embedded" in flat, out
        collections = project.service("rag", Collections)
        assert collections.version("docs", "live").number == 2
        assert sorted(v.number for v in collections.versions("docs")) == [1, 2]
        # The LLM gateway: a fallback to the local model, a card sent upstream as a
        # pseudonym and restored, an injection blocked, a cancelled stream charged for what
        # was generated, a conversation's budget tripping with its name, a paraphrase
        # answered from the semantic cache.
        assert "16 LLM gateway: fast answered by upstream" in flat, out
        assert "fell back to tiny" in flat, out
        assert "the upstream saw 'Refund my card <CREDIT_CARD_1>'" in flat, out
        assert "the caller got 'echo: Refund my card 4111 1111 1111 1111'" in flat, out
        assert "an injection blocked (400 guardrail_blocked)" in flat, out
        assert "recorded as cancelled, charged for" in flat, out
        assert "budget 'per-conversation' (conversation 'support-42', per day)" in flat, out
        assert "'Is it possible to change my delivery address?': cache hit (semantic" in flat, out
        assert "'echo: Can I change my delivery address?'" in flat, out
        assert "template 'support': the same documents in another order made" in flat, out
        assert "(prefix hit rate 100%, `conveyor llm prefixes`)" in flat, out
        # Agents over MCP: a retry, a timeout, a leaked key blocked, a Markdown table, the
        # conversation's budget of tool calls tripping.
        assert (
            "17 MCP gateway: the agent sees 14 tools of conveyor (10), crm (2), weather (2)" in flat
        )
        assert "conveyor__rollback: fraud-detector back to v" in flat, out
        assert "recorded as key:agent" in flat, out
        assert "weather__forecast failed upstream, retried: 'Lyon: 14°C" in flat, out
        assert "timeout: 'weather__climate_report' did not answer within 1 s" in flat, out
        assert "secret_blocked: the tool's result holds a secret (API_KEY): withheld" in flat
        assert "| id | name | plan | open_tickets |" in flat, out
        assert "budget_exceeded: budget 'conversation-calls' (conversation 'support-7'" in flat
        mcp_calls = {e.payload["tool"] for e in project.events.query(kind="mcp.call").items}
        assert {"weather__forecast", "crm__customer"} <= mcp_calls
        # Deployment: dev -> staging (promoted, served, smoke-tested), image, chart, CI.
        assert "18 deployment: 20 golden requests recorded from fraud-detector@" in flat, out
        assert "(staging): gates passed in dev, sha256:" in flat, out
        smoke = re.search(r"conveyor smoke --env staging: (passed|FAILED) \(([^)]*)\)", flat)
        assert smoke is not None, out
        checks = dict(check.rsplit(" ", 1) for check in smoke.group(2).split(", "))
        # every check passes but maybe latency: a p95 against the demo's 50 ms SLO on a
        # machine this suite shares (tests/deploy/test_smoke.py checks that latency fails
        # an SLO nothing meets); what is asserted here is that it was measured
        assert checks.pop("latency") in ("ok", "failed"), out
        assert checks == {
            "live": "ok",
            "ready": "ok",
            "metadata:fraud-detector": "ok",
            "golden:fraud-detector": "ok",
        }, out
        assert "valid against Kubernetes 1.29.0 and 1.31.0 and the policy checks" in flat, out
        assert "jobs test -> data -> train -> image -> deploy-staging -> deploy-prod" in flat
        for written in ("build/Dockerfile", "build/requirements.lock", "ci/conveyor.yaml"):
            assert (root / ".conveyor" / written).is_file(), written
        from conveyor.config import load_spec

        with Project(load_spec(root, env={}, environment="staging")) as staging:
            copied = staging.registry.get("fraud-detector", 1)
            assert copied.tags["conveyor.promoted_from"].startswith("dev:fraud-detector@")
            assert staging.registry.gate_report(copied) is not None
        llm_calls = project.events.query(kind="llm.call", limit=100).items
        statuses = {e.payload["status"] for e in llm_calls}
        assert {"ok", "cancelled", "error"} <= statuses


def _float_onnx_bound(out: str) -> float:
    """The float32 ONNX size the demo printed (KiB), in bytes."""
    line = next(line for line in out.splitlines() if "as float32 ONNX" in line)
    kib = line.split("KiB as float32 ONNX")[0].split()[-1]
    return float(kib) * 1024
