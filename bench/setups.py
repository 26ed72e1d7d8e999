"""The serving set-ups ``bench e2e`` compares, by name. Kept apart from ``bench.serving``
(which imports the generated gRPC code, pinned to a grpcio version) so that the benchmark
CLI builds on machines whose grpcio is older, e.g. the lent GPU machine for ``bench gpu``."""

SETUPS = ("embedded", "embedded+batching", "embedded-int8", "embedded-int8+batching", "triton",
          "triton+batching", "torch", "torch+batching", "torch-cuda", "torch-cuda+batching")
# What a plain ``bench e2e`` runs. "torch" is the PyTorch module in-process on the CPU;
# "torch-cuda" the same on the GPU (the GPU serving path), refused where torch sees no GPU
# rather than measured on the CPU under a GPU name.
CPU_SETUPS = SETUPS[:6]
