"""Progressive delivery: the rollout controller that moves a canary step by step."""
