"""Human evaluation: blinded pairwise tasks, the labeling web app, its label store and SageMaker Ground Truth I/O.

Importable without dagster: the app runs as its own process (`rlhf-assets label`) beside the Dagster instance.
"""
