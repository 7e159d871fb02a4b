"""What the edge server and the device client share.

protocol.py     tensors on the wire, their checks, `InferenceError`
rest_codec.py   REST bodies with Triton's binary tensor extension
images.py       images read and prepared (camera view, model input, JPEG)
parts.py        the parts loaded from artifacts: models served, the teacher, torch / onnxruntime runners
credentials.py  the bearer token (file or environment), certificate files, a client's TLS, loopback
"""
