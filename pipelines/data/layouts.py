"""The on-disk layouts: UCF-101, SkyTimelapse and a generic folder.

Each layout says which videos under its root belong to the data set and how they are labelled; reading,
clip sampling and skipping are `VideoClipDataset`'s.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..common.errors import DataError, MissingFileError
from .clip_dataset import VideoClipDataset
from .index import Source, scan_sources

SPLITS = ("train", "test", "all")


def _relative_parts(path: str, root: Path) -> tuple[str, ...]:
    return Path(os.path.relpath(path, os.path.abspath(root))).parts


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split '{split}' is not one of {', '.join(SPLITS)}")
    return split


class UCF101(VideoClipDataset):
    """UCF-101: `<root>/<Class>/v_<Class>_gXX_cYY.avi` (root may also be the folder holding `UCF-101/`).

    Labels are 0-based indices into `class_names`: the order of `classInd.txt` ("1 ApplyEyeMakeup", 1-based)
    when present, which is the sorted order of the class names; else the sorted class folder names.
    split "train"/"test" keeps the videos of `trainlist0{fold}.txt` / `testlist0{fold}.txt`; "all" keeps every
    video. The list files are looked for in the root, its `ucfTrainTestlist/`, and the same next to the root.
    """

    layout = "ucf101"
    expected = "UCF-101 class folders of videos: <root>/<Class>/v_<Class>_gXX_cYY.avi"

    def __init__(self, root: str | Path, split: str = "all", fold: int = 1, **kwargs):
        self.split = _check_split(split)
        if fold not in (1, 2, 3):
            raise ValueError(f"UCF-101 fold must be 1, 2 or 3, got {fold}")
        self.fold = fold
        root = Path(root)
        super().__init__(root / "UCF-101" if (root / "UCF-101").is_dir() else root, **kwargs)

    def _find_list(self, name: str, required: bool) -> Path | None:
        places = [self.root, self.root / "ucfTrainTestlist", self.root.parent, self.root.parent / "ucfTrainTestlist"]
        for place in places:
            if (place / name).is_file():
                return place / name
        if required:
            raise MissingFileError(f"UCF-101 split '{self.split}' needs {name}; looked in "
                                    f"{', '.join(str(p) for p in places)} (or use split=all)")
        return None

    def _read_class_index(self, folders: list[str]) -> list[str]:
        path = self._find_list("classInd.txt", required=False)
        if path is None:
            return sorted(folders)
        numbered = {}
        for line in path.read_text().splitlines():
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not fields[0].isdigit():
                raise DataError(f"{path}: line '{line}' is not '<number> <Class>' (for example '1 ApplyEyeMakeup')")
            numbered[int(fields[0])] = fields[1]
        if sorted(numbered) != list(range(1, len(numbered) + 1)):
            raise DataError(f"{path} must number its classes 1..N without gaps, one '<number> <Class>' a line")
        names = [numbered[i] for i in range(1, len(numbered) + 1)]
        unknown = sorted(set(folders) - set(names))
        if unknown:
            raise DataError(f"class folders {unknown} of '{self.root}' are not in {path}")
        return names

    def find_sources(self) -> list[Source]:
        return [s for s in scan_sources(self.root, frame_folders=False) if len(_relative_parts(s.path, self.root)) == 2]

    def select(self, paths: list[str]) -> list[tuple[str, int]]:
        classes = [_relative_parts(p, self.root)[0] for p in paths]
        self.class_names = self._read_class_index(sorted(set(classes)))
        label_of = {name: i for i, name in enumerate(self.class_names)}
        labelled = [(p, label_of[c]) for p, c in zip(paths, classes, strict=True)]
        if self.split == "all":
            return labelled
        listed = self._find_list(f"{self.split}list0{self.fold}.txt", required=True)
        by_name = {"/".join(_relative_parts(p, self.root)).lower(): (p, label) for p, label in labelled}
        selected = []
        for line in listed.read_text().splitlines():
            if not line.strip():
                continue
            name = line.split()[0].replace("\\", "/")
            if name.lower() in by_name:
                selected.append(by_name[name.lower()])
            else:
                self._skip("missing", str(self.root / name), f"{name}: listed in {listed} but not under {self.root}")
        return selected


class SkyTimelapse(VideoClipDataset):
    """SkyTimelapse: `<root>/<long_id>/<clip_id>/*.jpg`, unlabelled (label -1).

    When `root` holds `sky_train/` and `sky_test/`, `split` picks one ("all" takes both); otherwise `root` is
    one split's folder. Frames are ordered by the number after the last "_" in their names.
    """

    layout = "sky"
    expected = "SkyTimelapse frame folders: <root>/<long_id>/<clip_id>/*.jpg"

    def __init__(self, root: str | Path, split: str = "all", **kwargs):
        self.split = _check_split(split)
        super().__init__(root, **kwargs)

    def _split_folders(self) -> list[str]:
        present = [name for name in ("sky_train", "sky_test") if (self.root / name).is_dir()]
        if not present:
            return []
        if self.split == "all":
            return present
        wanted = f"sky_{self.split}"
        if wanted not in present:
            raise MissingFileError(f"SkyTimelapse split '{self.split}' needs {self.root / wanted}")
        return [wanted]

    def find_sources(self) -> list[Source]:
        return scan_sources(self.root, videos=False)

    def select(self, paths: list[str]) -> list[tuple[str, int]]:
        folders = self._split_folders()
        return [(p, -1) for p in paths if not folders or _relative_parts(p, self.root)[0] in folders]


class VideoFolder(VideoClipDataset):
    """Any folder of video files and/or frame folders, searched recursively.

    When every video (or frame folder) sits inside a first-level subfolder of `root`, those subfolders are the
    classes (sorted names, 0-based labels); otherwise the data set is unlabelled (label -1).
    """

    layout = "folder"
    expected = "video files (.mp4, .avi, ...) or folders of .jpg/.png frames, optionally in class folders"

    def find_sources(self) -> list[Source]:
        return scan_sources(self.root)

    def select(self, paths: list[str]) -> list[tuple[str, int]]:
        parts = [_relative_parts(p, self.root) for p in paths]
        if not parts or min(len(p) for p in parts) < 2:
            return [(p, -1) for p in paths]
        self.class_names = sorted({p[0] for p in parts})
        label_of = {name: i for i, name in enumerate(self.class_names)}
        return [(p, label_of[part[0]]) for p, part in zip(paths, parts, strict=True)]
