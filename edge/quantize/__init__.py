"""INT8 static quantization (`edge quantize`): QDQ ONNX models for ONNX Runtime CPU or TensorRT.

``cli`` is the command and the accuracy-aware search over methods; ``targets`` holds the ONNX
Runtime settings of each target (cpu, trt) and writes the QDQ model; ``ranges`` collects activation
ranges (minmax, entropy, percentile) chunk by chunk; ``weights`` rounds weights (nearest or GPTQ);
``evaluate`` compares a quantized model with its float parent through the Runner contract.
Calibration sets themselves (drawing, storing, reading) belong to the ``calibration`` package.
"""
