"""gossipchat benchmarks: real daemons against raw py-libp2p, in one run.

`python -m bench.run --quick` (about 3 minutes) or `--full` (about 10-15 minutes)
runs every scenario, prints each figure against its target and baseline, and writes
bench/results/latest.json, latest.md and PNG plots. Each scenario module's docstring
says what it measures and how. Benchmarks are not tests: nothing here asserts.
"""
