"""Recipes (typed, validated steps), the step registry, and the resumable runner."""
