"""Where step programs run: the local process backend and the SageMaker container contract."""
