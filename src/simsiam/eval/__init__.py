"""Evaluation: collapse metric and kNN monitor."""
