"""Asynchronous prediction jobs: requests queued on JetStream, scored by workers, results
by poll or signed webhook (``docs/jobs.md``)."""
