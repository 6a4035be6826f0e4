"""Latency benchmark for aicallerd: ``make bench`` (see bench/README.md)."""
