"""What `python -m hnd_lightning.deploy` writes for other runtimes.

onnx_export.py        `device.onnx` / `server.onnx`, exported and checked against PyTorch
triton_repository.py  the server part as a Triton model repository
"""
