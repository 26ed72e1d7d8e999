"""Export of trained denoisers: ONNX (fp32/fp16), TensorRT plans, the Triton repository."""
