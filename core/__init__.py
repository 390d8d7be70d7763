"""The contract every package builds on: workloads, metrics, records, checks, figures, trials, backends.

``backends``, ``workloads`` and ``results`` import only this package (and ``workloads`` the backends'
public family modules); ``harness`` (planning, executors, CLI) sits on top."""
