"""Small video fixtures for the data and evaluation tests: frame i of each is one flat colour that encodes i
(red = 8 * (i % 32) + 4, green = 8 * (i // 32) + 4), so decoding a clip's colours tells exactly which frames
were read."""

from fractions import Fraction

import av
import numpy as np
import torch
from PIL import Image

H, W = 48, 64


def coded_frames(n: int, start: int = 0) -> np.ndarray:
    ids = np.arange(start, start + n)
    frames = np.empty((n, H, W, 3), np.uint8)
    frames[..., 0] = (8 * (ids % 32) + 4)[:, None, None]
    frames[..., 1] = (8 * (ids // 32) + 4)[:, None, None]
    frames[..., 2] = 128
    return frames


def frame_ids(video: torch.Tensor) -> list[int]:
    """Decode the frame numbers of a (3, T, H, W) [-1, 1] clip made from `coded_frames`."""
    rgb = (video.mean(dim=(2, 3)) + 1) * 127.5  # (3, T)
    red, green = ((rgb[0] - 4) / 8).round().long(), ((rgb[1] - 4) / 8).round().long()
    return (red + 32 * green).tolist()


def write_avi(path, frames: np.ndarray, codec: str = "mpeg4") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream(codec, rate=Fraction(25))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.bit_rate = 8_000_000
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def write_mkv(path, frames: np.ndarray) -> None:
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def write_jpgs(folder, frames: np.ndarray, name=lambda i: f"frame_{i}.jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(frames):
        Image.fromarray(image).save(folder / name(i), quality=95)
