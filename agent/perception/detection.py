"""Finds the small objects of the play band (knives; balls, moths and snakes on later floors).

1. Background. The play band is a flat wall with a horizontal floor line, so each row's median, taken
   over a sample of every eighth column (`background_columns`), is its background. A knife is 74 on 85,
   darker than the wall: bright top-hat morphology would miss it, and frame differencing fires on every
   moving fighter.
2. Foreground: pixels at least `recon.detect_min_contrast` gray levels from their row's background,
   darker or brighter alike.
3. Grouping. A fighter is drawn as pieces split by empty rows, so the foreground is dilated by
   `recon.detect_group_rows` rows up and down (none sideways) and split into 8-connected groups: the
   pieces of one fighter join, and a knife in flight stays its own group unless it touches a fighter.
4. The faint pass. A knife flying into a fighter joins the fighter's group in step 3 and is lost. Its own
   pixels are faint (11 gray levels off the wall, where fighters are 60 or more), so the grouping runs
   a second time on the foreground pixels at most `recon.detect_faint_contrast` levels off the
   background; a small group found there and not in the first pass is added when it lies level like a
   flying knife: wider than tall and at most `recon.detect_faint_max_height` rows. (A soft-edged sprite,
   as a decoder draws one, has faint pixels all along its outline: upright slivers, which this keeps out.)
5. Size and border limits. A group is a small object when its extent is at most `recon.detect_max_width`
   x `recon.detect_max_height` with at least `recon.detect_min_area` pixels (dragon fire is 18x4, snakes
   and balls 8x12, a standing fighter over 30 rows tall). A group touching the frame border is dropped:
   its true size is unknown.
6. Native frames. A 210x160 screen is cut to the play band first (`agent.config.PLAY_BAND`), and boxes
   come back in the native frame's coordinates. Any other size is taken to be a play-band crop.

Batches are processed in chunks of `CHUNK` frames stacked into one tall image (with empty separator
rows), so that each OpenCV step is one call for all of them. The detector's recall and cost, measured:
docs/experiments/defaults.md.
"""

from __future__ import annotations

import cv2
import numpy as np

from agent.config import PLAY_BAND, ReconConfig

Box = tuple[int, int, int, int]

NATIVE_SHAPE = (210, 160)

CHUNK = 16
"""Frames per OpenCV call: large enough to amortize the call overhead, small enough to stay in cache."""

BG_SAMPLES = 18
"""Columns sampled per row for its median background (every 8th of 144)."""

_DEFAULT = ReconConfig()


def detect_small_objects(frame: np.ndarray, cfg: ReconConfig | None = None) -> list[Box]:
    """Small objects of one 2-D uint8 grayscale frame, as (x, y, w, h) boxes in its pixel coordinates.

    `frame` is a native 210x160 screen (only its play band is searched) or a play-band crop of any size.
    """
    frame = _check_frames(frame, ndim=2)
    return detect_small_objects_batch(frame[None], cfg)[0]


def detect_small_objects_batch(frames: np.ndarray, cfg: ReconConfig | None = None) -> list[list[Box]]:
    """The batched form: uint8 frames (N, h, w) -> one list of (x, y, w, h) boxes per frame."""
    frames = _check_frames(frames, ndim=3)
    out: list[list[Box]] = [[] for _ in range(len(frames))]
    for i, x, y, w, h in detect_boxes(frames, cfg).tolist():
        out[i].append((x, y, w, h))
    return out


def detect_boxes(frames: np.ndarray, cfg: ReconConfig | None = None) -> np.ndarray:
    """All small objects of uint8 frames (N, h, w) as an int array of rows (frame, x, y, w, h)."""
    frames = _check_frames(frames, ndim=3)
    cfg = cfg or _DEFAULT
    dx = dy = 0
    if frames.shape[1:] == NATIVE_SHAPE:
        top, bottom, left, right = PLAY_BAND
        frames, dx, dy = frames[:, top:bottom, left:right], left, top
    parts = [_detect_chunk(np.ascontiguousarray(frames[s:s + CHUNK]), cfg, s)
             for s in range(0, len(frames), CHUNK)]
    boxes = np.concatenate(parts) if parts else np.zeros((0, 5), dtype=np.int64)
    boxes[:, 1] += dx
    boxes[:, 2] += dy
    return boxes


def boxes_to_masks(boxes: np.ndarray, shape: tuple[int, int, int], grow: int = 0) -> np.ndarray:
    """Bool masks (N, h, w) that are True inside each (frame, x, y, w, h) box grown by `grow` px."""
    masks = np.zeros(shape, dtype=bool)
    h, w = shape[1:]
    for i, x, y, bw, bh in boxes.tolist():
        masks[i, max(0, y - grow):min(h, y + bh + grow), max(0, x - grow):min(w, x + bw + grow)] = True
    return masks


def _check_frames(frames: np.ndarray, ndim: int) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != ndim or frames.dtype != np.uint8:
        want = "(h, w)" if ndim == 2 else "(N, h, w)"
        raise ValueError(f"expected uint8 grayscale frames of shape {want}, "
                         f"got {frames.dtype} {frames.shape}")
    return frames


def background_columns(width: int) -> slice:
    """The columns a row's background is the median of: about BG_SAMPLES of them, evenly spread. The
    `row_contrast` input normalization (agent/normalization.py) samples the same ones."""
    step = max(1, width // BG_SAMPLES)
    return slice(step // 2, None, step)


def _row_background(tall: np.ndarray) -> np.ndarray:
    """Median (the upper one of an even sample) of each row over background_columns: (rows, 1)."""
    sample = tall[:, background_columns(tall.shape[1])]
    mid = sample.shape[1] // 2
    return np.partition(sample, mid, axis=1)[:, mid:mid + 1]


def _detect_chunk(frames: np.ndarray, cfg: ReconConfig, offset: int) -> np.ndarray:
    n, h, w = frames.shape
    tall = frames.reshape(n * h, w)
    diff = cv2.absdiff(tall, np.repeat(_row_background(tall), w, axis=1))
    _, fg = cv2.threshold(diff, cfg.detect_min_contrast - 1, 255, cv2.THRESH_BINARY)
    boxes = _small_groups(fg, n, h, w, cfg, offset)
    if cfg.detect_faint_contrast:
        # The faint pass: a knife touching a fighter joins it in `fg`, but not among the pixels of its
        # own faint contrast, which no fighter has.
        faint = cv2.bitwise_and(fg, cv2.inRange(diff, 0, cfg.detect_faint_contrast))
        extra = _small_groups(faint, n, h, w, cfg, offset)
        extra = extra[(extra[:, 4] <= cfg.detect_faint_max_height) & (extra[:, 3] > extra[:, 4])]
        if len(extra):
            new = ~_overlaps(extra, boxes) if len(boxes) else np.ones(len(extra), dtype=bool)
            boxes = np.concatenate([boxes, extra[new]])
            boxes = boxes[np.lexsort(boxes.T[::-1])]
    return boxes


def _overlaps(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each (frame, x, y, w, h) row of `boxes`: whether a row of `others` of the same frame overlaps it."""
    out = np.zeros(len(boxes), dtype=bool)
    for k, (i, x, y, w, h) in enumerate(boxes.tolist()):
        same = others[others[:, 0] == i]
        out[k] = bool(np.any((same[:, 1] < x + w) & (same[:, 1] + same[:, 3] > x)
                             & (same[:, 2] < y + h) & (same[:, 2] + same[:, 4] > y)))
    return out


def _small_groups(fg: np.ndarray, n: int, h: int, w: int, cfg: ReconConfig, offset: int) -> np.ndarray:
    """The groups of the foreground `fg` (n * h, w) that are small objects, as rows (frame, x, y, w, h)."""
    # Each frame gets `rv` empty rows above and below plus one gap row, so that groups never reach
    # into the next frame, and `rh` empty columns either side, so that the dilation is never clipped.
    rv, rh = cfg.detect_group_rows, cfg.detect_group_cols
    hp, wp = h + 2 * rv + 1, w + 2 * rh
    padded = np.zeros((n, hp, wp), dtype=np.uint8)
    padded[:, rv:rv + h, rh:rh + w] = fg.reshape(n, h, w)
    grouped = padded.reshape(n * hp, wp)
    if rv or rh:
        grouped = cv2.dilate(grouped, np.ones((2 * rv + 1, 2 * rh + 1), np.uint8))
    contours, _ = cv2.findContours(grouped, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 5), dtype=np.int64)

    # A group's dilated box, less the dilation, is the box of its pixels in frame coordinates.
    rects = np.array([cv2.boundingRect(c) for c in contours], dtype=np.int64)
    x, bw, bh = rects[:, 0], rects[:, 2] - 2 * rh, rects[:, 3] - 2 * rv
    index = rects[:, 1] // hp
    y = rects[:, 1] - index * hp
    keep = ((bw <= cfg.detect_max_width) & (bh <= cfg.detect_max_height)
            & (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h))
    rows = []
    for j in np.flatnonzero(keep):
        top = index[j] * h + y[j]
        if np.count_nonzero(fg[top:top + bh[j], x[j]:x[j] + bw[j]]) >= cfg.detect_min_area:
            rows.append((index[j] + offset, x[j], y[j], bw[j], bh[j]))
    if not rows:
        return np.zeros((0, 5), dtype=np.int64)
    rows.sort()
    return np.array(rows, dtype=np.int64)
