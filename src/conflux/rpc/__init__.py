"""Conflux over gRPC: the original Conflux's ``conflux.v1.ConfluxService``, wire-compatible.

``conflux.proto`` is the service's definition; ``conflux_pb2`` and ``conflux_pb2_grpc`` are
generated from it (``make proto``) and kept in the repository, a test holding them to the
file. ``service`` implements the rpcs over the engine, ``server`` runs them in the daemon.
"""
