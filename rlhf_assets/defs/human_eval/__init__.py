"""The human-evaluation domain: blinded pairwise tasks for annotators and each policy's results once labelled.

Each policy's `human_eval_tasks` and `human_eval_results` and its labels-complete sensor come with its suite
(`defs/policy_suite.py`); this package holds their factories and the job the sensors request."""
