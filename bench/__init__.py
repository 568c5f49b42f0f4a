"""gossipchat benchmarks: real daemons against bare py-libp2p and js-libp2p, in one run.

`python -m bench.run --quick` (about 4 minutes) or `--full` (about 20 minutes)
runs every scenario, prints each figure against its target and baselines, and writes
bench/results/latest.json, latest.md and PNG plots. Each scenario module's docstring
says what it measures and how. Benchmarks are not tests: nothing here asserts.
"""
