"""The benchmark harness (`make bench`): a real `vitals serve` on loopback under load
from separate load generator processes, next to baselines of the same load.

`__main__` runs the scenarios and reports; `scenarios/` holds one module per
scenario; `loadgen` is the worker process over the bare client in `wsclient`;
`baseline_server` and `sqlite_baseline` are the baselines; the servers run under
`gateway.client.process`, and `processes` drives the workers and samples every process;
`stats` and `report` turn runs into figures.
"""
