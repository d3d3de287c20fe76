"""Reading and writing videos: files through PyAV (its wheels carry FFmpeg) and jpg/png frame folders through PIL.

Frames are always uint8 RGB arrays of shape (T, H, W, 3). Decoding is sequential and stops after the last
frame asked for, so a short clip from the start of a long video never decodes the rest of it.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from PIL import Image

from ..common.files import atomic_write

# Frames are decoded at full size before the resize; 4096 x 4096 (a 17-frame clip: 0.9 GB as uint8, 3.4 GB as
# float) is the largest frame read. Larger videos are skipped as "too_large" (4K UHD, 3840 x 2160, passes).
MAX_FRAME_PIXELS = 4096 * 4096
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class VideoReadError(RuntimeError):
    """A video or frame folder that cannot be read (missing, corrupt, truncated, or without the frames asked for).

    `reason` is one of "unreadable", "truncated" or "too_large", the keys under which data sets count skipped videos.
    """

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    """What a data set index needs to know about one video: its usable frame count and frame rate (0 if unknown)."""

    num_frames: int
    fps: float


def is_video_file(path: str | Path) -> bool:
    return str(path).lower().endswith(VIDEO_EXTENSIONS)


def is_image_file(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _frame_sort_key(name: str) -> tuple[int, str]:
    # SkyTimelapse names frames "<id>_<clip>_frames_00000012.jpg": the number after the last "_" gives the order;
    # the last run of digits covers that and plain "000012.jpg" names too, without a lexical 10-before-9 mix-up.
    numbers = re.findall(r"\d+", Path(name).stem)
    return (int(numbers[-1]) if numbers else -1, name)


def list_frame_files(folder: str | Path) -> list[str]:
    """Image files directly inside `folder`, in frame order (by the last number in each name)."""
    names = [n for n in os.listdir(folder) if is_image_file(n) and not n.startswith(".")]
    return [os.path.join(folder, n) for n in sorted(names, key=_frame_sort_key)]


def _open(path: str | Path | bytes, name: str = "") -> av.container.InputContainer:
    source, path = path, name or path
    # FFmpeg opens whatever a name says ("http://...", "concat:a|b", "subfile:..."), and a playlist inside a video
    # opens more. A data set's paths are data, not commands: only local files are opened, and nothing at all
    # from inside a video given as bytes.
    try:
        if isinstance(source, bytes):  # a whole encoded video (a `datasets` row, a tar member), demuxed from memory
            container = av.open(io.BytesIO(source), options={"protocol_whitelist": "none"})
        else:
            container = av.open(str(source), options={"protocol_whitelist": "file"})
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoReadError(f"cannot open video {path}: {err}") from err
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"no video stream in {path}")
    stream = container.streams.video[0]
    if stream.width * stream.height > MAX_FRAME_PIXELS:
        container.close()
        raise VideoReadError(f"video {path} is {stream.width}x{stream.height}, over the {MAX_FRAME_PIXELS:,}-pixel "
                             f"limit of one frame (frames are decoded at full size before the resize): resize it first",
                             "too_large")
    return container


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def _decodes(packet, path, codec_context=None) -> bool:
    try:
        return bool(packet.decode() if packet is not None else codec_context.decode(None))
    except (av.FFmpegError, ValueError) as err:
        raise VideoReadError(f"cannot decode video {path}: {err}") from err


def probe_video(path: str | Path | bytes, name: str = "") -> VideoInfo:
    """Count the frames of a video file by demuxing it once (no decoding past the first frame).

    The header's count (`stream.frames`) is 0 for some containers and stays at the full length in a truncated
    AVI, so the count is that of the packets actually present; fewer packets than the header promises means the
    file is truncated. Empty packets (AVI's dropped-frame entries) count towards the header's number but are
    not frames. The first frame is decoded to make sure the stream is decodable at all. `path` may be the
    encoded bytes of a video; `name` then says which in messages.
    Raises VideoReadError (reason "unreadable", "truncated" or "too_large").
    """
    container, path = _open(path, name), name or path
    try:
        stream = container.streams.video[0]
        header_frames = stream.frames
        fps = _stream_fps(stream)
        packets, empty, first_decoded = 0, 0, False
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    empty += packet.dts is not None  # the demuxer's final flush packet has no timestamp
                    continue
                if not first_decoded:
                    first_decoded = _decodes(packet, path)
                packets += 1
        except (av.FFmpegError, ValueError) as err:
            raise VideoReadError(f"video {path} breaks off after {packets} frames: {err}", "truncated") from err
        if packets and not first_decoded:
            # Decoders with a delay (B-frames) return the first frame of a very short video only once flushed.
            first_decoded = _decodes(None, path, stream.codec_context)
    finally:
        container.close()
    if packets == 0 or not first_decoded:
        raise VideoReadError(f"no decodable frame in video {path}")
    if header_frames > packets + empty:
        raise VideoReadError(
            f"video {path} is truncated: its header promises {header_frames} frames, the file holds {packets}",
            "truncated",
        )
    return VideoInfo(num_frames=packets, fps=fps)


def probe_frame_folder(folder: str | Path) -> VideoInfo:
    """Frame count of a folder of images; the first and last image headers are read to catch broken folders."""
    files = list_frame_files(folder)
    if not files:
        raise VideoReadError(f"no image files in frame folder {folder}")
    for file in (files[0], files[-1]):
        try:
            with Image.open(file) as image:  # parses the header only
                width, height = image.size
        except (OSError, ValueError) as err:
            raise VideoReadError(f"cannot read frame {file}: {err}") from err
        if width * height > MAX_FRAME_PIXELS:
            raise VideoReadError(f"frame {file} is {width}x{height}, over the {MAX_FRAME_PIXELS:,}-pixel limit of one "
                                 f"frame: resize the frames first", "too_large")
    return VideoInfo(num_frames=len(files), fps=0.0)


def probe(path: str | Path) -> VideoInfo:
    """`probe_frame_folder` for a directory, `probe_video` for a file."""
    return probe_frame_folder(path) if os.path.isdir(path) else probe_video(path)


def _check_indices(indices: Sequence[int]) -> list[int]:
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no frame indices given")
    if min(indices) < 0:
        raise ValueError(f"frame indices must be >= 0, got {min(indices)}")
    return indices


def read_video_frames(path: str | Path | bytes, indices: Sequence[int], name: str = "") -> np.ndarray:
    """Decode the frames at `indices` (any order, repeats allowed) of a video file (or its bytes, `name` naming
    them in messages).

    Returns uint8 (len(indices), H, W, 3). Decoding stops after the largest index.
    Raises VideoReadError (reason "truncated") when the video ends before that frame.
    """
    indices = _check_indices(indices)
    wanted, last = set(indices), max(indices)
    found: dict[int, np.ndarray] = {}
    container, path = _open(path, name), name or path
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for position, frame in enumerate(container.decode(stream)):
            if position in wanted:
                found[position] = frame.to_ndarray(format="rgb24")  # (H, W, 3)
            if position >= last:
                break
    except av.FFmpegError as err:
        if len(found) < len(wanted):
            raise VideoReadError(f"decoding {path} failed after {len(found)} frames: {err}", "truncated") from err
    finally:
        container.close()
    if len(found) < len(wanted):
        raise VideoReadError(
            f"video {path} ends before frame {last}: decoded {len(found)} of the {len(wanted)} frames asked for",
            "truncated",
        )
    return np.stack([found[i] for i in indices])  # (N, H, W, 3)


def read_frame_folder(folder: str | Path, indices: Sequence[int]) -> np.ndarray:
    """Load the images at `indices` of a frame folder (see `list_frame_files` for the order) as uint8 (N, H, W, 3)."""
    indices = _check_indices(indices)
    files = list_frame_files(folder)
    if max(indices) >= len(files):
        raise VideoReadError(f"frame folder {folder} has {len(files)} frames, frame {max(indices)} was asked for",
                             "truncated")
    frames = []
    for i in indices:
        try:
            with Image.open(files[i]) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (OSError, ValueError) as err:
            raise VideoReadError(f"cannot read frame {files[i]}: {err}") from err
    if len({f.shape for f in frames}) > 1:
        raise VideoReadError(f"frames of different sizes in {folder}")
    return np.stack(frames)  # (N, H, W, 3)


def read_frames(path: str | Path, indices: Sequence[int]) -> np.ndarray:
    """`read_frame_folder` for a directory, `read_video_frames` for a file."""
    return read_frame_folder(path, indices) if os.path.isdir(path) else read_video_frames(path, indices)


def write_video(path: str | Path, frames, fps: float, crf: int = 18) -> Path:
    """Encode uint8 frames (T, H, W, 3) (numpy array or tensor) as an H.264 (libx264, yuv420p) mp4, atomically.

    Odd widths or heights are padded by one replicated edge pixel, since yuv420p needs even sizes.
    `crf` is x264's quality (0 lossless .. 51 worst; 18 is visually near-lossless). Returns the path written.
    """
    array = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8 or array.shape[0] == 0:
        raise ValueError(f"write_video needs uint8 frames of shape (T, H, W, 3) with T >= 1, "
                         f"got {array.dtype} {tuple(array.shape)}")
    if not fps or fps <= 0:
        raise ValueError(f"write_video needs fps > 0, got {fps}")
    pad_h, pad_w = array.shape[1] % 2, array.shape[2] % 2
    if pad_h or pad_w:
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")

    def encode(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = array.shape[2], array.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for image in array:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode(None))

    return atomic_write(path, encode)
