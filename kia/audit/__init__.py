"""`kia audit`: what did the adapter learn, and what did it break? PASS or FAIL against a policy.

- `config`: `AuditConfig`, `AuditResult`; `run`: `audit()`, the stage, and `summary_json`;
- `arms`: the inputs (adapter, build, probe) and the base and adapted answers on every split;
- `assemble`: audit.json's sections from those answers; `metrics`: one metric entry with its
  interval and test; `shift`, `collapse`, `refusals`: the paper's three kinds of harm;
- `benchmarks`: lm-evaluation-harness tasks, paired per document; `stats`: intervals and tests;
- `policy`: the TOML thresholds and the verdict;
- `update`: an update's audit against the production adapter (retention, the lost facts, every
  measure with production as the reference); `parity`: vLLM's answers checked against peft's.
"""

from kia.audit.config import AuditConfig, AuditResult
from kia.audit.policy import DEFAULT_POLICY, Policy, judge, load_policy
from kia.audit.run import audit, summary_json

__all__ = ["DEFAULT_POLICY", "AuditConfig", "AuditResult", "Policy", "audit", "judge", "load_policy", "summary_json"]
