"""How an entropy-coded latent travels: one framed byte string per image, in an OIP `BYTES` tensor.

CompressAI's `decompress` never validates its input: a truncated, foreign or corrupted string, or a wrong
latent size, decodes silently into wrong values. So the device frames each image's string and the
server checks every field of the frame before anything is decoded (a bad one is a 400 naming the
tensor and the element):

    offset  bytes  field (little-endian)
         0      4  magic b"HNDB"
         4      1  frame version (1)
         5      2  latent channels  (uint16)
         7      2  latent height    (uint16)
         9      2  latent width     (uint16)
        11      4  payload length n (uint32)
        15      4  CRC32 (zlib) of bytes 0..14 followed by the payload
        19      n  the payload: `compress()`'s string for this image

The latent shape travels in every frame (decompress needs (h, w)) and must equal the served model's;
the CRC covers header and payload, so a cut, a flipped bit or a frame of another model is refused.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

from hnd_lightning.runtime.common.protocol import InferenceError

MAGIC = b"HNDB"
FRAME_VERSION = 1
_HEADER = struct.Struct("<4sBHHHI")
_CRC = struct.Struct("<I")
HEADER_BYTES = _HEADER.size + _CRC.size  # 19 bytes of framing per image
# the input of an entropy-coded split's server model: framed strings, one per image
BITSTREAM_INPUT = "bitstream"


def frame(payload: bytes, latent_shape: Sequence[int]) -> bytes:
    """Frame one image's coded `payload` for a latent of `latent_shape` (C, h, w)."""
    channels, height, width = (int(side) for side in latent_shape)
    header = _HEADER.pack(MAGIC, FRAME_VERSION, channels, height, width, len(payload))
    return header + _CRC.pack(zlib.crc32(header + payload)) + payload


def unframe(data: bytes, latent_shape: Sequence[int], name: str = BITSTREAM_INPUT, index: int = 0) -> bytes:
    """The payload of a frame, after checking all of it: size, magic, version, latent shape, length, CRC.

    Raises `InferenceError` (400) naming input `name`, element `index` and what is wrong.
    """
    where = f"input '{name}' element {index}"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InferenceError(f"{where}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_BYTES:
        raise InferenceError(
            f"{where}: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte frame header (truncated)"
        )
    magic, version, channels, height, width, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InferenceError(f"{where}: not an entropy-coded latent frame (magic {magic!r}, expected {MAGIC!r})")
    if version != FRAME_VERSION:
        raise InferenceError(f"{where}: frame version {version}, this server reads version {FRAME_VERSION}")
    expected = [int(side) for side in latent_shape]
    if [channels, height, width] != expected:
        raise InferenceError(f"{where}: latent shape {[channels, height, width]}, this model decodes {expected}")
    if len(data) != HEADER_BYTES + length:
        raise InferenceError(
            f"{where}: the frame says {length} payload bytes but holds {len(data) - HEADER_BYTES} (truncated or padded)"
        )
    (crc,) = _CRC.unpack_from(data, _HEADER.size)
    payload = data[HEADER_BYTES:]
    if zlib.crc32(data[: _HEADER.size] + payload) != crc:
        raise InferenceError(f"{where}: CRC32 mismatch (the bitstream was corrupted or is not this frame's)")
    return payload


def frames_array(payloads: Sequence[bytes], latent_shape: Sequence[int]) -> np.ndarray:
    """The `bitstream` tensor of a batch: an object array (N,) of framed strings."""
    array = np.empty(len(payloads), dtype=object)
    array[:] = [frame(payload, latent_shape) for payload in payloads]
    return array


def unframe_all(array: np.ndarray, latent_shape: Sequence[int], name: str = BITSTREAM_INPUT) -> list[bytes]:
    """Every payload of a `bitstream` tensor, each frame checked (`unframe`)."""
    return [unframe(item, latent_shape, name, index) for index, item in enumerate(array.reshape(-1))]
