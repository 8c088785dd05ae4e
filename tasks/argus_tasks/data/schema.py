"""The dataset schema, in one place. The code, the GX suites and the docs all take it from here.

Layout of a dataset root (a DVC-tracked folder in the dataset registry, and the ``data/`` folder
of a run after ``pull``)::

    manifest.parquet                         one row per frame (MANIFEST_COLUMNS)
    frames/<condition>/<split>/<frame_id>.png   RGB, 8 bit
    labels/<condition>/<split>/<frame_id>.png   single channel uint8 class ids (CLASSES), 255 = ignore
    depth/<condition>/<split>/<frame_id>.png    optional, uint16 depth in centimetres

Labels exist for adverse frames too (as in ACDC), which is what the realism gap compares against.
"""

from __future__ import annotations

CONDITIONS_ALL = ("clear", "fog", "rain", "snow", "night")
SPLITS = ("train", "val", "test")
IGNORE_ID = 255

# id -> name. Order is the label id. Keep in sync with nothing else: everything imports this.
CLASSES: tuple[str, ...] = (
    "road",          # 0
    "sidewalk",      # 1
    "building",      # 2
    "vegetation",    # 3
    "sky",           # 4
    "vehicle",       # 5
    "lane_marking",  # 6  thin: drawn >= 2.5 px wide at 64 px by the demo scenes
    "pole",          # 7  thin: streetlights and sign posts
)
NUM_CLASSES = len(CLASSES)

# Manifest columns: name -> (pandas/pyarrow dtype, description). The GX suite checks exactly these.
MANIFEST_COLUMNS: dict[str, tuple[str, str]] = {
    "frame_id": ("string", "unique id of the frame, stable across revisions"),
    "split": ("string", "one of SPLITS"),
    "condition": ("string", "one of CONDITIONS_ALL"),
    "sequence": ("string", "drive / sequence the frame belongs to"),
    "capture_time": ("datetime64[ns, UTC]", "when the frame was captured (UTC)"),
    "width": ("int64", "pixels"),
    "height": ("int64", "pixels"),
    "frame_sha256": ("string", "sha256 of the frame PNG bytes"),
    "label_sha256": ("string", "sha256 of the label PNG bytes"),
    "frame_path": ("string", "frame path relative to the dataset root"),
    "label_path": ("string", "label path relative to the dataset root"),
    "brightness_mean": ("float64", "mean luminance in [0, 1]"),
    "brightness_std": ("float64", "std of luminance in [0, 1]"),
}

# ---- value ranges the validation gate enforces (the GX suites are generated from these) ----------
FRAME_SIZE_RANGE = (64, 4096)  # width and height, pixels
# Plausible mean luma (Rec. 709 on display values, [0, 1]) of one frame, per condition: a night frame
# brighter than a clear noon frame, or a fog frame darker than a night one, is suspect.
BRIGHTNESS_RANGE: dict[str, tuple[float, float]] = {
    "clear": (0.12, 0.85),
    "fog": (0.25, 0.95),
    "rain": (0.08, 0.80),
    "snow": (0.25, 0.97),
    "night": (0.0, 0.45),
}
# Plausible average of brightness_mean over all frames of a condition (catches a mislabelled batch).
CONDITION_MEAN_BRIGHTNESS: dict[str, tuple[float, float]] = {
    "clear": (0.2, 0.75),
    "fog": (0.3, 0.9),
    "rain": (0.12, 0.7),
    "snow": (0.3, 0.92),
    "night": (0.02, 0.35),
}
BRIGHTNESS_STD_RANGE = (0.02, 0.5)  # a frame with almost no contrast is blank or broken

# ---- generated (output) datasets ------------------------------------------------------------------
# What ``publish`` writes to an output dataset: the layout above (frames/labels per condition and
# split, no depth), the manifest columns above plus the lineage of each frame. ``check-outputs``
# validates exactly these columns (the GX suite ``argus_generated_manifest`` is generated from them).
OUTPUT_CONDITIONS = tuple(c for c in CONDITIONS_ALL if c != "clear")  # what a generator makes
OUTPUT_LINEAGE_COLUMNS: dict[str, tuple[str, str]] = {
    "source_frame_id": ("string", "frame id of the clear source frame in the source dataset"),
    "source_frame_sha256": ("string", "sha256 of the source frame PNG bytes"),
    "source_revision": ("string", "source dataset revision as the run asked for it (tag, commit or latest)"),
    "source_commit": ("string", "registry commit of the source dataset revision"),
    "model_name": ("string", "registered generator model (argus-weather-<condition>)"),
    "model_version": ("string", "registered version of the generator that made the frame"),
    "seed": ("int64", "generation seed of the frame"),
    "config_hash": ("string", "hash of the generation settings (strength, resolution, ...)"),
    "label_fidelity": ("float64", "mIoU of the judge segmenter on the generated frame against the source labels"),
}
OUTPUT_MANIFEST_COLUMNS: dict[str, tuple[str, str]] = {**MANIFEST_COLUMNS, **OUTPUT_LINEAGE_COLUMNS}
# Plausible mean absolute change of a generated frame from its source (RGB in [0, 1]): below, the
# generator did nothing; above, it replaced the scene. The physics-based demo conditions change a
# frame by 0.09..0.40 at 64 px.
GENERATED_CHANGE_RANGE = (0.01, 0.6)
GENERATED_BLANK_LUMA_STD = 0.01  # a generated frame with less luma contrast than this is blank
