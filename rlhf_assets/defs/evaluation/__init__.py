"""The evaluation domain: the inputs every policy is evaluated on (RTP, declared prompt sets, the toxicity scorer,
SFT's shared samples), the scheduled re-evaluation and the input checks. Each policy's own suite, its checks and
its automation are built by `defs/policy_suite.py` from this package's factories."""
