"""Benchmarks of kling_async: figures as ratios against baselines measured in the same run."""
