"""The demo video: scikit-image's real photos (cat, coffee, rocket), a few seconds each, as a camera would see them.

``--source demo`` plays it from the user cache (``$XDG_CACHE_HOME/edge-harness``, see
:mod:`edge.camera.cache`; never a run directory or a deploy bundle), ``make demo`` records the
annotated result, and the tests build a small one to check that every backend names the cat and
the coffee through the camera path.
Each photo slowly zooms in (a gentle camera move), so consecutive frames differ the way a real
camera's do while the subject stays in view. The file is written once, atomically, with a
``video`` manifest that records the segments (which frames show which photo).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError, require
from edge.manifest import manifest_path, read_manifest, write_manifest
from edge.photos import photos as bundled_photos
from edge.run import DEMO_VIDEO


@dataclass(frozen=True)
class DemoVideo:
    """Where the demo video is and which frames show which photo (``segments``: name -> [start, end))."""

    path: Path
    fps: float
    segments: dict[str, tuple[int, int]]

    @property
    def frames(self) -> int:
        return max(end for _, end in self.segments.values())

    def photo_at(self, frame_index: int) -> str:
        for name, (start, end) in self.segments.items():
            if start <= frame_index < end:
                return name
        raise ValueError(f"frame {frame_index} is outside the demo video ({self.frames} frames)")


def _cover(cv2: Any, photo: np.ndarray, width: int, height: int, zoom: float) -> np.ndarray:
    """Crop the photo's centre to the frame's aspect ratio (zoomed in by ``zoom``) and resize it."""
    ph, pw = photo.shape[:2]
    scale = max(width / pw, height / ph) * zoom
    crop_w, crop_h = min(pw, int(round(width / scale))), min(ph, int(round(height / scale)))
    top, left = (ph - crop_h) // 2, (pw - crop_w) // 2
    crop = photo[top : top + crop_h, left : left + crop_w]
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)


def write_demo_video(
    path: str | os.PathLike[str],
    size: tuple[int, int] = (640, 480),
    fps: float = 10.0,
    seconds_per_photo: float = 3.0,
    photos: dict[str, np.ndarray] | None = None,
) -> DemoVideo:
    """Write the photos as a video (atomically; .mp4 or .avi) and its manifest; returns the segments."""
    cv2 = require("cv2", "opencv", "The demo video")
    path = Path(path)
    width, height = size
    per_photo = max(1, int(round(seconds_per_photo * fps)))
    if width < 32 or height < 32 or fps <= 0:
        raise UserError(f"demo video needs a size of at least 32x32 and fps > 0, got {width}x{height} at {fps}")
    photos = photos if photos is not None else bundled_photos()
    segments: dict[str, tuple[int, int]] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file keeps the suffix: OpenCV picks the container from it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp_name, 0o644)
    tmp = Path(tmp_name)
    try:
        writer = cv2.VideoWriter(str(tmp), video_fourcc(cv2, path), fps, (width, height))
        if not writer.isOpened():
            raise UserError(f"OpenCV cannot write {path.suffix} videos here: use a .mp4 or .avi path")
        try:
            for name, photo in photos.items():
                start = sum(end - begin for begin, end in segments.values())
                for i in range(per_photo):
                    writer.write(_cover(cv2, photo, width, height, zoom=1.0 + 0.12 * i / per_photo))
                segments[name] = (start, start + per_photo)
        finally:
            writer.release()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    provenance = {
        "photos": "scikit-image",
        "size": [width, height],
        "fps": fps,
        "segments": {k: list(v) for k, v in segments.items()},
    }
    write_manifest(path, "video", None, provenance=provenance)
    return DemoVideo(path, fps, segments)


def video_fourcc(cv2: Any, path: Path) -> int:
    """The codec for a container: MPEG-4 Part 2 in .mp4 (plays everywhere, needs no H.264 licence), MJPEG in .avi."""
    suffix = path.suffix.lower()
    if suffix in (".mp4", ".m4v", ".mov"):
        return int(cv2.VideoWriter_fourcc(*"mp4v"))
    if suffix == ".avi":
        return int(cv2.VideoWriter_fourcc(*"MJPG"))
    raise UserError(f"cannot write a {suffix or 'suffix-less'} video ({path}): use .mp4 or .avi")


def ensure_demo_video(directory: str | os.PathLike[str]) -> DemoVideo:
    """The demo video in ``directory`` (written on first use; reused while its manifest matches the file)."""
    path = Path(directory) / DEMO_VIDEO
    if path.exists() and manifest_path(path).exists():
        try:
            manifest = read_manifest(path)
            from edge.atomic import sha256_file

            if manifest.kind == "video" and manifest.sha256 == sha256_file(path):
                segments = {k: (int(v[0]), int(v[1])) for k, v in manifest.provenance["segments"].items()}
                return DemoVideo(path, float(manifest.provenance["fps"]), segments)
        except (UserError, KeyError, TypeError, ValueError):
            pass  # a damaged or foreign file is rebuilt below
    return write_demo_video(path)
