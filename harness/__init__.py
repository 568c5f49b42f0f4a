"""Development only: starting, driving and stopping what the tests and benchmarks run.

- `daemons`: real gossipchatd processes (launch, the ready line, p2pctl, clusters).
- `waiting`: `wait_for`, polling a condition against a deadline.
- `netns`: multi-host scenarios in Linux network namespaces.
- `libp2p_hosts`: stock py-libp2p hosts and GossipSub nodes, the peers our daemon meets.
- `procs`: every child process registered, so that none outlives a benchmark run.
- `system_packages`: apt packages a test needs, installed on demand.

This package is not part of the gossipchat wheel: pyproject.toml lists the packages
it ships, and `harness` is not among them. pytest (rootdir) and `python -m bench.run`
(run from the repository root) import it from the checkout.
"""
