"""Private descriptor pool for ortserve's ``inference.*`` protobuf types.

tritonclient adds the same ``inference.*`` symbols to protobuf's default pool,
and adding ours there too fails with "duplicate symbol". Every generated
``*_pb2`` module in this package adds its file here instead. One shared pool,
because grpc_service.proto depends on model_config.proto.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
