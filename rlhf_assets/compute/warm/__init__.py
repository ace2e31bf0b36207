"""A warm step worker: local step programs start in a fraction of a second instead of 5–10 s.

Every local step process used to spend its first seconds importing torch, transformers, TRL and datasets before
doing any work. The worker (`server.py`) imports those once, then forks one child per step, which imports only
this package's own modules (fresh from disk, so edits are always seen) and runs the step module as
`python -m rlhf_assets.steps.<step>` would. The local backend launches `client.py` in place of the step: it
hands the worker its environment, working directory and standard streams, relays signals, and exits with the
step's own status, so Dagster Pipes, cancellation and SIGKILL behave as with a plain subprocess.

Only the standard library is imported by `protocol.py` and `client.py`: the client itself starts in ~50 ms.
SageMaker jobs and multi-process launches never use the worker (`compute/launch.py` is unchanged).
"""
