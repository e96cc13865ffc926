"""Pipelines that chain the package's binaries: `quickstart` (train, evaluate, QAT, export, time)."""
