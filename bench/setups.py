"""The serving set-ups ``bench e2e`` compares, by name. Kept apart from ``bench.serving``
(which imports the generated gRPC code, pinned to a grpcio version) so that the benchmark
CLI builds on machines whose grpcio is older, e.g. the lent GPU machine for ``bench gpu``."""

SETUPS = ("embedded", "embedded+batching", "embedded-int8", "embedded-int8+batching", "triton",
          "triton+batching", "torch", "torch+batching")
# What a plain ``bench e2e`` runs. "torch" is the PyTorch module in-process, on the GPU when
# torch sees one (each row says its device): the GPU serving path.
CPU_SETUPS = SETUPS[:6]
