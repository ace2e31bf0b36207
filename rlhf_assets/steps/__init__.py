"""Step programs: standalone entry points for the heavy work, launched through Dagster Pipes.

Each imports `dagster_pipes` (never `dagster`) and honours the SageMaker container contract, so the same file
runs as a local subprocess, under `accelerate launch`, or as a SageMaker training job's entry point.
"""
