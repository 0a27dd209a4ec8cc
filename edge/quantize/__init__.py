"""INT8 static quantization (`edge quantize`): QDQ ONNX models for ONNX Runtime CPU, TensorRT or OpenVINO.

``cli`` is the command and ``quantize_run``, its library entry point; ``search`` is the
accuracy-aware search (one calibration pass, the tries on the val split, layers kept in float,
the speed of the tries, acceptance on the test split, the written model and manifest);
``targets`` holds the ONNX Runtime quantizer settings of each target (cpu, trt, openvino) and writes the QDQ model;
``ranges`` collects activation ranges (minmax, mean-minmax, entropy, percentile) chunk by chunk; ``weights``
rounds weights (nearest or GPTQ); ``bias`` corrects the biases of the chosen model (each layer's
mean output put back where the float model has it); ``evaluate`` runs models through the Runner contract and compares
a quantized model with its float parent (percentages) and layer by layer.
Calibration sets themselves (drawing, storing, reading) belong to the ``calibration`` package.
"""
