"""The client SDK: ``zeroserve.Client`` and ``zeroserve.AsyncClient`` over HTTP or gRPC."""
