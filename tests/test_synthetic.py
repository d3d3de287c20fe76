"""The built-in synthetic data set: deterministic, 16 classes that need both shape and motion to tell apart."""

import math
from dataclasses import replace

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pipelines.data import CLASS_NAMES, SyntheticVideoDataset, probe
from pipelines.common.seeding import keyed_generator
from pipelines.data.preview import main
from pipelines.data.synthetic import render_clip, sample_params


def global_motion(video: torch.Tensor) -> torch.Tensor:
    """(vx, vy) in pixels per frame of a (3, T, H, W) clip: least-squares optical flow over the whole frame."""
    frames = video.mean(0)  # (T, H, W)
    it = frames[1:] - frames[:-1]  # (T-1, H, W)
    mid = (frames[1:] + frames[:-1]) / 2
    ix = (torch.roll(mid, -1, 2) - torch.roll(mid, 1, 2))[:, 1:-1, 1:-1] / 2
    iy = (torch.roll(mid, -1, 1) - torch.roll(mid, 1, 1))[:, 1:-1, 1:-1] / 2
    it = it[:, 1:-1, 1:-1]
    a = torch.tensor([[(ix * ix).sum(), (ix * iy).sum()], [(ix * iy).sum(), (iy * iy).sum()]])
    b = -torch.tensor([(ix * it).sum(), (iy * it).sum()])
    return torch.linalg.solve(a, b)


def test_items_are_deterministic_per_seed_and_index():
    data = SyntheticVideoDataset(40, num_frames=9, resolution=32, seed=5)
    again = SyntheticVideoDataset(40, num_frames=9, resolution=32, seed=5)
    later = data[7]
    assert torch.equal(again[3]["video"], data[3]["video"]) and torch.equal(data[7]["video"], later["video"])
    assert not torch.equal(data[3]["video"], data[19]["video"])  # same class, different scene
    other_seed = SyntheticVideoDataset(40, num_frames=9, resolution=32, seed=6)
    assert not torch.equal(other_seed[3]["video"], data[3]["video"])
    item = data[21]
    assert item["video"].shape == (3, 9, 32, 32) and item["video"].dtype == torch.float32
    assert -1 <= item["video"].min() and item["video"].max() <= 1
    assert item["label"] == 21 % 16 and item["path"] == "synthetic://5/21"


def test_worker_processes_give_the_same_items():
    data = SyntheticVideoDataset(6, num_frames=5, resolution=16, seed=1)
    loaded = torch.cat([b["video"] for b in DataLoader(data, batch_size=2, num_workers=2)])
    assert torch.equal(loaded, torch.stack([data[i]["video"] for i in range(6)]))


def test_classes_cover_four_shapes_and_four_directions():
    assert len(CLASS_NAMES) == len(set(CLASS_NAMES)) == 16
    data = SyntheticVideoDataset(32, num_frames=2, resolution=16, num_classes=16)
    assert data.num_classes == 16 and sorted({data[i]["label"] for i in range(32)}) == list(range(16))


def test_motion_reveals_the_direction():
    data = SyntheticVideoDataset(32, num_frames=9, resolution=32, seed=2)  # speeds >= 0.18 * 32 / 8 = 0.72 px
    expected = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}
    for i in range(len(data)):
        item = data[i]
        vx, vy = global_motion(item["video"]).tolist()
        sx, sy = expected[CLASS_NAMES[item["label"]].split("_")[1]]
        main, cross = (vx * sx, vy) if sx else (vy * sy, vx)
        assert main > 0.5 and abs(cross) < 0.2 * main, (i, vx, vy)


def test_first_frame_shows_the_shape_but_not_the_direction():
    params = sample_params(keyed_generator(0, 11))
    clips = {d: render_clip("triangle", d, params, 9, 48) for d in ("right", "left", "down", "up")}
    for clip in clips.values():
        assert torch.equal(clip[:, 0], clips["right"][:, 0])
    assert (clips["right"][:, -1] - clips["left"][:, -1]).abs().amax() > 0.5
    first_frames = [render_clip(s, "up", params, 1, 48)[:, 0] for s in ("circle", "square", "triangle", "cross")]
    for a in range(4):
        for b in range(a):
            changed = ((first_frames[a] - first_frames[b]).abs().amax(0) > 0.2).sum()
            assert changed > 20, (a, b, changed)
    data = SyntheticVideoDataset(16, num_frames=9, resolution=48, seed=0)
    assert torch.equal(data[11]["video"], render_clip("triangle", "up", params, 9, 48))


def test_preview_writes_clips_and_a_grid(tmp_path, capsys):
    main(["--out", str(tmp_path), "--num-clips", "2", "data.num_frames=5", "data.resolution=16", "data.num_samples=4"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip000_circle_right.mp4", "clip001_circle_left.mp4",
                                                          "grid.gif", "grid.png"]
    assert Image.open(tmp_path / "grid.png").size == (5 * 16, 2 * 16)
    assert probe(tmp_path / "clip001_circle_left.mp4").num_frames == 5
    with pytest.raises(SystemExit) as exit_info:  # the old form of a data key names the new one
        main(["--out", str(tmp_path), "num_frames=5"])
    assert exit_info.value.code == 2 and "'data.num_frames'" in capsys.readouterr().err


def test_detail_adds_texture_and_a_panning_camera_but_keeps_the_scene():
    plain, textured = sample_params(keyed_generator(0, 3)), sample_params(keyed_generator(0, 3), 1.0)
    assert (plain.radius, plain.travel, plain.start, plain.object_colour) == (
        textured.radius, textured.travel, textured.start, textured.object_colour)
    flat, rich = render_clip("square", "right", plain, 9, 48), render_clip("square", "right", textured, 9, 48)
    assert -1 <= rich.min() and rich.max() <= 1

    def roughness(video):  # mean absolute difference of neighbouring pixels
        return (video[..., 1:] - video[..., :-1]).abs().mean()

    assert roughness(rich) > 2 * roughness(flat)
    # Without the shape, the whole frame is background: it moves against the camera's pan, uniformly.
    empty = replace(textured, radius=0.0)
    pan_x, pan_y = textured.detail.pan
    vx, vy = global_motion(render_clip("square", "right", empty, 9, 48)).tolist()
    assert abs(pan_x) > 0.02 and abs(pan_y) > 0.02
    assert vx == pytest.approx(-pan_x * 48 / 8, rel=0.25) and vy == pytest.approx(-pan_y * 48 / 8, rel=0.25)
    plain_set = SyntheticVideoDataset(8, 5, 16)
    assert torch.equal(SyntheticVideoDataset(8, 5, 16, detail=0.0)[3]["video"], plain_set[3]["video"])
    with pytest.raises(ValueError, match="detail"):
        SyntheticVideoDataset(8, 5, 16, detail=1.5)


@pytest.mark.parametrize("detail", [0.0, 1.0])
def test_whole_frame_rendering_equals_drawing_each_frame_in_a_window_around_the_shape(detail):
    """render_clip draws every frame at once over whole frames; drawn frame by frame, only within `reach` of the
    shape's centre (as the data set was first made), every clip is the same bit for bit."""
    from pipelines.data.synthetic import _STEPS, _background, _camera, _shape_distance, _surface

    def windowed(shape, direction, params, num_frames, resolution):
        side, pan = float(resolution), params.detail.pan if params.detail else (0.0, 0.0)
        margin = math.ceil(max(abs(p) for p in pan) * side / 2) + 1 if any(pan) else 0
        background = _background(params, resolution, margin)
        frames = _camera(background, pan, margin, num_frames, resolution) if margin else None
        coords = torch.arange(resolution, dtype=torch.float32) + 0.5
        y, x = torch.meshgrid(coords, coords, indexing="ij")
        radius, colour = params.radius * side, torch.tensor(params.object_colour)[:, None, None]
        reach, out = 1.75 * radius + 2, []
        for t in range(num_frames):
            progress = t / max(num_frames - 1, 1)
            cx, cy = [(s + d * params.travel * progress) * side for s, d in zip(params.start, _STEPS[direction])]
            top, left = max(int(cy - reach), 0), max(int(cx - reach), 0)
            bottom, right = min(math.ceil(cy + reach), resolution), min(math.ceil(cx + reach), resolution)
            frame = background.clone() if frames is None else frames[t].clone()
            dx, dy = x[top:bottom, left:right] - cx, y[top:bottom, left:right] - cy
            alpha = (0.5 - _shape_distance(shape, dx, dy, radius)).clamp(0, 1)
            surface = _surface(params, colour, dx[None], dy[None], reach)
            frame[:, top:bottom, left:right] = frame[:, top:bottom, left:right] * (1 - alpha) + surface * alpha
            out.append(frame.reshape(frame.shape[-3:]))
        return torch.stack(out, dim=1) * 2 - 1

    for i in range(48):
        shape, direction = CLASS_NAMES[i % 16].split("_")
        params = sample_params(keyed_generator(0, i), detail)
        assert torch.equal(render_clip(shape, direction, params, 9, 48), windowed(shape, direction, params, 9, 48))
