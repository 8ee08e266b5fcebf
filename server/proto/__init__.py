"""Protobuf and gRPC modules for the ``inference`` API (Triton-compatible).

Every ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` module here is
generated from ``protos/*.proto`` by ``scripts/gen_protos.py``: do not edit
them by hand. Change the .proto files and run
``python scripts/gen_protos.py`` instead; ``--check`` reports stale files.

Their descriptors live in the private pool of ``server.proto._pool`` so that
they can be imported in the same process as tritonclient.
"""
