"""Thin asset definitions: declare dependencies, config and metadata, then call a backend."""
