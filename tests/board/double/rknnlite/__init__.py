"""Test double of rknn-toolkit-lite2 (`rknnlite`) for pytest-rknn's test board.

It stands in for an RK3588 NPU: same package layout, class, constants, signatures,
return values and log lines as rknn-toolkit-lite2 2.5.0 (see api/rknn_lite.py), but the
outputs are computed with onnxruntime from the ONNX model that the registry names for
the loaded .rknn file. Configured by environment variables (RKNNLITE_DOUBLE_*), set by
the board Python wrapper that tests/board/testboard.py writes. Imports only the standard
library, numpy and onnxruntime.
"""
