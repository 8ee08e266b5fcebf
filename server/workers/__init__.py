"""``ortserve --workers N``: N frontend processes on shared ports, one engine process.

The engine (the process started as ``ortserve``) owns the models, batchers, ONNX Runtime
sessions, lifecycle, statistics and ``/metrics``; it starts the frontends, serves each one's
requests over ``server.remote`` and restarts a frontend that dies. Each frontend runs the
gRPC and HTTP servers (SO_REUSEPORT) with a ``RemoteService`` as its InferenceService.
"""
