"""Side-by-side benchmark adapters: rushpy and its Python peers on one Redis server.

Every adapter implements :class:`benchmarks.peers.base.Adapter`; the workloads in
:mod:`benchmarks.peers.workloads` drive any adapter the same way.
"""
