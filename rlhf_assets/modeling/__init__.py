"""Model building and loading shared by step programs (imports torch/transformers, never dagster)."""
