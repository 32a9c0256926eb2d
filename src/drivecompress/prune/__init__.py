"""Pruning: structured channel removal (Torch-Pruning's dependency graph) and unstructured magnitude masks."""
