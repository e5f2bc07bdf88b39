"""Data: the DLKFM sampling protocol, the DLK folder format, dataset generators, tf.data loading.

Conventions: corners are (x, y) pixels (pixel centres at integer coordinates), order top-left,
top-right, bottom-right, bottom-left, (4, 2) per sample and (B, 4, 2) batched; the homography
``input_H_template`` maps template pixels to input pixels; images in pipelines are float32 in
[0, 1], (B, H, W, 3).

Modules:

- `protocol`: corner sampling, ``input_H_template``, template cutting (shared by all datasets).
- `dlk_format`: folder layout, label JSON read/write (file order TL, TR, BL, BR), listing.
- `sources`: reading raw images and finding aligned pairs.
- `demo`: the offline skimage photographs and their augmentation.
- `modality`: synthetic second modalities (map, season).
- `generators`: per-dataset sample synthesis; `generate`: the resumable parallel writer.
- `loader`: `load_dataset` (tf.data) and `load_arrays` (NumPy).
"""

from .demo import DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES, load_demo_image
from .dlk_format import (
    MANIFEST_NAME,
    SPLITS,
    is_downloaded,
    label_to_json,
    list_samples,
    parse_label,
    read_label,
    read_template_mask,
    sample_name,
    sample_paths,
    split_dirs,
    write_label,
)
from .generate import JPEG_QUALITY, dataset_names, generate_dataset, make_generator
from .generators import GENERATORS, Sample
from .loader import check_image_file, load_arrays, load_dataset
from .modality import MODALITY_STYLES, render_map, render_modality, render_season
from .protocol import (
    BOX_SIZE,
    CENTRED_CORNERS,
    CENTRED_H,
    CORNER_BOX_ORIGINS,
    INPUT_SIZE,
    MIN_CROSS,
    PATCH_OFFSET,
    TEMPLATE_CORNERS,
    TEMPLATE_SIZE,
    homography_from_corners,
    make_pair,
    make_template,
    sample_corners,
    template_valid_mask,
)

__all__ = [
    "BOX_SIZE",
    "CENTRED_CORNERS",
    "CENTRED_H",
    "CORNER_BOX_ORIGINS",
    "DEMO_TRAIN_IMAGES",
    "DEMO_VAL_IMAGES",
    "GENERATORS",
    "INPUT_SIZE",
    "MIN_CROSS",
    "JPEG_QUALITY",
    "MANIFEST_NAME",
    "MODALITY_STYLES",
    "PATCH_OFFSET",
    "SPLITS",
    "Sample",
    "TEMPLATE_CORNERS",
    "TEMPLATE_SIZE",
    "check_image_file",
    "dataset_names",
    "generate_dataset",
    "is_downloaded",
    "homography_from_corners",
    "label_to_json",
    "list_samples",
    "load_arrays",
    "load_dataset",
    "load_demo_image",
    "make_generator",
    "make_pair",
    "make_template",
    "parse_label",
    "read_label",
    "read_template_mask",
    "render_map",
    "render_modality",
    "render_season",
    "sample_corners",
    "sample_name",
    "sample_paths",
    "split_dirs",
    "template_valid_mask",
    "write_label",
]
