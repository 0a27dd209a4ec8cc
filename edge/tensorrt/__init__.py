"""TensorRT engine building (`edge engine`): FP32/FP16/INT8 engines from a run's ONNX models.

``build`` holds the one TensorRT version branch and the builder; ``cli`` is the command. Running
an engine is the ``tensorrt`` backend in :mod:`edge.runners` (``tensorrt_runner``), and which
engine runs on this machine is :mod:`edge.runners.tensorrt_engines`. TensorRT path: not yet
verified on hardware.
"""
