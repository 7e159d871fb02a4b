"""The runtime of a split: an edge server and a device client on the Open Inference Protocol (KServe v2).

Four subpackages, with imports going only toward `common` (`tests/test_package_shape.py` checks it):

    common/   what both sides share: the wire format (`protocol`, `rest_codec`), how an image becomes
              the model's input (`images`), and the runners and parts loaded from artifacts (`parts`)
    server/   the edge server (`python -m hnd_lightning.serve`): served models, dynamic batching,
              REST and gRPC front ends, metrics, lifecycle; never imports `device`
    device/   the device client (`python -m hnd_lightning.client`, `loadtest`): transports, link
              emulation, the three strategies per image, measurement and its report, load; never
              imports `server`
    export/   what `deploy` writes for other servers and runtimes: ONNX parts, Triton repositories

`loopback.py` is the one module that joins both sides: a short run of the split over loopback
(the quickstart's last stage).
"""
