"""Which ONNX opsets the converter writes.

tf2onnx 1.17 writes opsets up to 18. 13 is the oldest whose Softmax works on the last
axis as Keras's does (older ones flatten to 2-D first). The default, 17, covers every
layer used here and loads in any onnxruntime since 1.11.
"""

from __future__ import annotations

DEFAULT_OPSET = 17
MIN_OPSET = 13
