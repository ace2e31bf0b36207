"""Evaluation statistics (no dagster, no boto3): bootstrap confidence intervals and friends."""
