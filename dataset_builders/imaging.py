"""Reading medical images and turning them into 8-bit RGB slices (SA-Med2D-20M style).

DICOM through pydicom, NIfTI through nibabel, 2D files through Pillow. CT gets a window
(level/width presets), MR and other scalar data a percentile normalisation, everything becomes
8-bit RGB. Masks become one bounding box per label and connected component (scikit-image).

Only acquisition facts a record needs leave this module (`SAFE_DICOM_FIELDS`): no DICOM patient,
study or institution value is ever returned.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# One source of truth for CT windows and MR normalisation: the model's image processor.
from gmaivl.modeling_gmaivl.intensity_gmaivl import apply_window, percentile_normalize, resolve_window

# DICOM attributes that may reach a record (as `meta`), all acquisition geometry or modality.
SAFE_DICOM_FIELDS = ("Modality", "PixelSpacing", "SliceThickness", "PhotometricInterpretation")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# other 3D formats common in challenge datasets (LUNA16 .mhd, ...), read through SimpleITK
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(path: str | Path) -> bool:
    """A DICOM file by its suffix or by content: the `DICM` magic after the 128-byte preamble."""
    path = Path(path)
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


class SourceError(ValueError):
    """A bad input file: the message names the file and what is wrong."""


class Oversize(SourceError):
    """An input over one of the `InputLimits`, refused before it is decoded."""


class BurnedIn(SourceError):
    """A DICOM image whose header says text is burned into its pixels (`BurnedInAnnotation = YES`)."""


@dataclass(frozen=True)
class InputLimits:
    """Limits checked from a file's header, before its pixels are decoded.

    A CT of 512 x 512 x 1000 voxels (1 GiB as float32) is within the defaults; a small file that
    declares billions of pixels (a decompression bomb) is not. `max_decoded_bytes` counts the
    float32 working copy the readers make of scalar data.
    """

    max_pixels: int = 300_000_000  # pixels (voxels x channels) of one file
    max_decoded_bytes: int = 2 << 30  # bytes of the decoded arrays of one file
    max_compression_ratio: float = 2000.0  # declared bytes / file bytes, above `ratio_floor_bytes`
    ratio_floor_bytes: int = 256 << 20  # smaller declared sizes pass any ratio (sparse masks compress well)
    max_line_bytes: int = 64 << 20  # one line of a JSONL / CSV annotation file, or a whole JSON file x 16

    def validate(self) -> str | None:
        for name in ("max_pixels", "max_decoded_bytes", "ratio_floor_bytes", "max_line_bytes"):
            if getattr(self, name) < 1:
                return f"limits.{name} must be >= 1, got {getattr(self, name)}"
        if self.max_compression_ratio <= 1:
            return f"limits.max_compression_ratio must be > 1, got {self.max_compression_ratio}"
        return None

    def check(self, path: Path, shape: tuple[int, ...], itemsize: int, float_copy: bool = True) -> None:
        """Refuse a file whose declared array (`shape` of `itemsize`-byte values) is over a limit."""
        pixels = int(np.prod(shape, dtype=np.float64)) if shape else 0
        decoded = pixels * (itemsize + (4 if float_copy else 0))
        if pixels > self.max_pixels:
            raise Oversize(
                f"{path}: declares {pixels:,} pixels {tuple(shape)}, over limits.max_pixels={self.max_pixels:,}"
            )
        if decoded > self.max_decoded_bytes:
            raise Oversize(
                f"{path}: decoding needs {decoded / 2**20:,.0f} MiB, over limits.max_decoded_bytes="
                f"{self.max_decoded_bytes / 2**20:,.0f} MiB"
            )
        size = max(path.stat().st_size, 1)
        if decoded > self.ratio_floor_bytes and decoded / size > self.max_compression_ratio:
            raise Oversize(
                f"{path}: {size:,} bytes declare {decoded:,} decoded bytes (ratio {decoded / size:,.0f}), "
                f"over limits.max_compression_ratio={self.max_compression_ratio:,.0f}"
            )


DEFAULT_LIMITS = InputLimits()


@dataclass
class Volume:
    """A scalar or RGB image stack: `data` is (Z, H, W) or (Z, H, W, 3); spacing in mm (z, y, x)."""

    data: np.ndarray
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0)
    modality: str | None = None


def _float_list(value: Any) -> list[float]:
    try:
        return [float(v) for v in value]
    except TypeError:
        return [float(value)]


def _check_deflated(path: Path, limits: InputLimits) -> None:
    """A deflated DICOM is inflated whole by pydicom before any header can be read: inflate it
    here in bounded steps first, and refuse it once it grows past the limit."""
    import zlib

    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:
        meta = read_file_meta_info(path)
    except Exception:
        return  # not readable as DICOM: the full read reports it
    group_length = meta.get("FileMetaInformationGroupLength")
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian or group_length is None:
        return
    # pydicom then holds the inflated stream, the pixel data parsed from it and the arrays
    # decoded from that: a quarter of the decoding budget for the stream itself
    bound = limits.max_decoded_bytes // 4
    with open(path, "rb") as handle:
        # preamble (128) + "DICM" (4) + the group length element (12) + the rest of the file meta
        handle.seek(128 + 4 + 12 + int(group_length))
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total = 0
        while chunk := handle.read(1 << 16):
            data = inflater.decompress(chunk, 1 << 20)
            while data:
                total += len(data)
                if total > bound:
                    raise Oversize(
                        f"{path}: deflated DICOM inflates past {bound / 2**20:,.0f} MiB "
                        f"(limits.max_decoded_bytes / 4)"
                    )
                data = inflater.decompress(inflater.unconsumed_tail, 1 << 20)


def read_dicom(
    path: str | Path, limits: InputLimits = DEFAULT_LIMITS, burned_in: bool = False
) -> tuple[np.ndarray, dict[str, Any]]:
    """Pixel data of a DICOM file (modality LUT applied) and its safe metadata.

    Returns (frames, meta) with frames (N, H, W) float32 for grayscale or (N, H, W, 3) uint8 for
    colour, N = number of frames. The header is checked first: `BurnedIn` unless `burned_in`
    allows images with `BurnedInAnnotation = YES`, `Oversize` for dimensions over `limits`.
    `meta["burned_in_annotation"]` is the tag's value ("YES", "NO", or "" when absent).
    """
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    path = Path(path)
    _check_deflated(path, limits)
    try:
        ds = pydicom.dcmread(path, defer_size="256 KB")
        burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
        if burned == "YES" and not burned_in:
            raise BurnedIn(f"{path}: BurnedInAnnotation = YES (text drawn into the pixels)")
        if "PixelData" in ds or "FloatPixelData" in ds:
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
            shape = (int(ds.get("NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns), samples)
            limits.check(path, shape, max(int(ds.get("BitsAllocated", 8) or 8) // 8, 1), samples == 1)
        pixels = ds.pixel_array
    except SourceError:
        raise
    except Exception as error:  # pydicom raises many types for truncated/corrupt files
        raise SourceError(f"{path}: unreadable DICOM ({type(error).__name__}: {error})") from error
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
        photometric = "RGB"
    color = photometric not in ("MONOCHROME1", "MONOCHROME2")
    if color:
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.dtype != np.uint8:
            pixels = _to_uint8(pixels.astype(np.float32))
        data = pixels
    else:
        data = apply_modality_lut(pixels, ds).astype(np.float32)
        if photometric == "MONOCHROME1":
            data = data.max() - data
        if frames == 1 or data.ndim == 2:
            data = data.reshape((1, *data.shape[-2:]))
    meta: dict[str, Any] = {}
    for name in SAFE_DICOM_FIELDS:
        if name in ds and ds[name].value not in (None, ""):
            value = ds[name].value
            meta[name] = _float_list(value) if name in ("PixelSpacing", "SliceThickness") else str(value)
    meta["burned_in_annotation"] = burned
    return data, meta


def read_dicom_series(
    files: list[Path], limits: InputLimits = DEFAULT_LIMITS, burned_in: bool = False
) -> tuple[Volume, dict[str, Any]]:
    """Stack single-frame DICOM files of one series, ordered along the slice normal."""
    import pydicom

    slices = []
    for file in files:
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception as error:
            raise SourceError(f"{file}: unreadable DICOM header ({error})") from error
        position = header.get("ImagePositionPatient")
        orientation = header.get("ImageOrientationPatient")
        if position is not None and orientation is not None:
            normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
            key = float(np.dot(normal, np.asarray(position, float)))
        else:
            key = float(header.get("InstanceNumber", len(slices)) or 0)
        slices.append((key, file))
    slices.sort(key=lambda item: (item[0], str(item[1])))
    arrays, meta = [], {}
    for _, file in slices:
        data, meta = read_dicom(file, limits, burned_in)
        arrays.append(data[0])
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise SourceError(f"{files[0].parent}: series slices differ in shape {sorted(shapes)}")
    spacing = meta.get("PixelSpacing", [1.0, 1.0])
    thickness = meta.get("SliceThickness", [1.0])[0]
    volume = Volume(np.stack(arrays), (float(thickness), *map(float, spacing)), meta.get("Modality"))
    return volume, meta


def read_nifti(path: str | Path, channel: int = 0, limits: InputLimits = DEFAULT_LIMITS) -> Volume:
    """A NIfTI volume in closest-canonical (RAS) orientation as (Z, H, W) with spacing.

    4D images (e.g. multi-sequence MR of the Decathlon) keep `channel` along the last axis. The
    header's shape is checked against `limits` before the data is read.
    """
    import nibabel as nib

    path = Path(path)
    try:
        image = nib.load(str(path))
        limits.check(path, tuple(image.header.get_data_shape()), image.header.get_data_dtype().itemsize)
        image = nib.as_closest_canonical(image)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except SourceError:
        raise
    except Exception as error:
        raise SourceError(f"{path}: unreadable NIfTI ({type(error).__name__}: {error})") from error
    zooms = [float(z) for z in image.header.get_zooms()[:3]]
    if data.ndim == 4:
        if not 0 <= channel < data.shape[3]:
            raise SourceError(f"{path}: channel {channel} out of range for shape {data.shape}")
        data = data[..., channel]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise SourceError(f"{path}: expected a 3D volume, got shape {data.shape}")
    # (X, Y, Z) in RAS -> (Z, H, W) with the anterior side up in each axial slice
    data = np.transpose(data, (2, 1, 0))[:, ::-1, :]
    return Volume(np.ascontiguousarray(data), (zooms[2], zooms[1], zooms[0]))


def read_itk(path: str | Path, limits: InputLimits = DEFAULT_LIMITS) -> Volume:
    """A MetaImage / NRRD volume through SimpleITK as (Z, H, W) with spacing (z, y, x).

    3D volumes are reoriented to the layout `read_nifti` gives (RAS axes, anterior up), so the
    same scan yields the same slices whichever format it ships in.
    """
    import SimpleITK as sitk

    path = Path(path)
    try:
        header = sitk.ImageFileReader()
        header.SetFileName(str(path))
        header.ReadImageInformation()
        itemsize = sitk.GetArrayFromImage(
            sitk.Image([1] * header.GetDimension(), header.GetPixelID())
        ).itemsize
        limits.check(path, (*header.GetSize(), header.GetNumberOfComponents()), itemsize)
        image = sitk.ReadImage(str(path))
        if image.GetDimension() == 3:
            image = sitk.DICOMOrient(image, "RAS")  # index axes point to Right, Anterior, Superior
        data = sitk.GetArrayFromImage(image).astype(np.float32)
    except SourceError:
        raise
    except Exception as error:
        raise SourceError(f"{path}: unreadable volume ({type(error).__name__}: {error})") from error
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    if data.ndim == 2:
        return Volume(np.ascontiguousarray(data[None]), (1.0, *spacing))
    if data.ndim != 3:
        raise SourceError(f"{path}: expected a 3D volume, got shape {data.shape}")
    # (Z, Y, X) with Y growing anterior -> anterior side up, as in `read_nifti`
    return Volume(np.ascontiguousarray(data[:, ::-1, :]), spacing)


def read_volume(path: str | Path, channel: int = 0, limits: InputLimits = DEFAULT_LIMITS) -> Volume:
    """NIfTI through nibabel, MetaImage/NRRD through SimpleITK."""
    name = Path(path).name.lower()
    return read_itk(path, limits) if name.endswith(ITK_SUFFIXES) else read_nifti(path, channel, limits)


def read_label_nifti(path: str | Path, limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Integer label volume in the same (Z, H, W) layout as `read_volume` gives the image."""
    volume = read_volume(path, limits=limits)
    return np.rint(volume.data).astype(np.int32)


def read_image(
    path: str | Path,
    limits: InputLimits = DEFAULT_LIMITS,
    data: bytes | None = None,
    modes: tuple[str, ...] | None = None,
) -> np.ndarray | None:
    """A 2D image file as a uint8 (H, W) or (H, W, 3) array; truncated files raise `SourceError`,
    files whose header declares more than `limits` allow raise `Oversize` before decoding.

    16-bit and 32-bit grayscale files are min-max scaled to 8 bits without a float copy of the
    image (a lookup table for 16-bit data), so memory stays near the file's pixel size.
    `data`: decode these bytes (read from or rebuilt from `path`, which names them in errors);
    `modes`: return None, before decoding, if the image's own mode is not one of them.
    """
    import io

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # `limits` decide
            with Image.open(path if data is None else io.BytesIO(data)) as image:
                if modes is not None and image.mode not in modes:
                    return None
                bands = len(image.getbands())
                limits.check(path, (image.height, image.width, bands), 1, float_copy=False)
                image.load()
                if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                    pixels = np.asarray(image)
                    image.close()
                    return _u16_to_uint8(pixels.astype(np.uint16, copy=False))
                if image.mode in ("I", "F"):
                    pixels = np.asarray(image)
                    image.close()
                    return _to_uint8(pixels)
                if image.mode not in ("L", "RGB"):
                    image = image.convert("RGB")
                return np.asarray(image)
    except SourceError:
        raise
    except Image.DecompressionBombError as error:
        raise Oversize(f"{path}: {error}") from error
    except Exception as error:
        raise SourceError(f"{path}: unreadable image ({type(error).__name__}: {error})") from error


def _u16_to_uint8(pixels: np.ndarray, rows: int = 256) -> np.ndarray:
    """Min-max scale uint16 pixels through a 65536-entry table, a band of rows at a time."""
    low, high = int(pixels.min()), int(pixels.max())
    table = np.zeros(65536, np.uint8)
    if high > low:
        ramp = (np.arange(65536, dtype=np.float64) - low) / (high - low)
        table = (np.clip(ramp, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    out = np.empty(pixels.shape, np.uint8)
    for start in range(0, pixels.shape[0], rows):
        out[start : start + rows] = table[pixels[start : start + rows]]
    return out


def read_mask(path: str | Path, limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """A 2D label mask (PNG/TIFF/NIfTI/DICOM) as an integer array."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        volume = read_label_nifti(path, limits)
        if volume.shape[0] != 1:
            raise SourceError(f"{path}: expected a 2D mask, got a volume of shape {volume.shape}")
        return volume[0]
    if is_dicom(path):
        data, _ = read_dicom(path, limits, burned_in=True)  # a mask's pixels are never published
        return np.rint(data[0]).astype(np.int32)
    array = read_image(path, limits)
    if array.ndim == 3:  # colour-coded masks: any non-black pixel is foreground of label 1
        array = (array.max(axis=-1) > 0).astype(np.int32)
    return array.astype(np.int32)


def _finite_values(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(finite values, mask of non-finite pixels or None); all-NaN/inf data raises `BadPixels`."""
    if not np.issubdtype(array.dtype, np.floating):
        return array, None
    finite = np.isfinite(array)
    if finite.all():
        return array, None
    if not finite.any():
        raise BadPixels("non_finite_image", "every pixel is NaN or infinite")
    return array[finite], ~finite


class BadPixels(ValueError):
    """An image with no usable pixels (dropped with `reason`, counted in the build report)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Min-max scale to uint8; NaN/inf pixels are ignored for the range and become 0."""
    values, bad = _finite_values(np.asarray(array))
    low, high = float(values.min()), float(values.max())
    scaled = np.asarray(array, dtype=np.float32)
    if high > low:
        scaled = (scaled - np.float32(low)) * np.float32(1.0 / (high - low))
    else:
        scaled = np.zeros(scaled.shape, np.float32)
    if bad is not None:
        scaled[bad] = 0.0
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_rgb8(
    array: np.ndarray,
    modality: str,
    window: str | tuple[float, float] | list[float] | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Scalar or colour pixels -> (H, W, 3) uint8 (see `to_uint8`)."""
    pixels = to_uint8(array, modality, window, percentiles)
    return pixels if pixels.ndim == 3 else gray_to_rgb(pixels)


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return gray if gray.ndim == 3 else np.repeat(gray[..., None], 3, axis=-1)


def to_uint8(
    array: np.ndarray,
    modality: str,
    window: str | tuple[float, float] | list[float] | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Scalar pixels -> (H, W) uint8, colour pixels -> (H, W, 3) uint8.

    CT (and anything given a window) is windowed in its native units; other scalar data (MR, PET,
    ...) gets a percentile normalisation; uint8 data is kept as it is. NaN and infinite pixels are
    left out of the percentiles and come out black; an image without a finite pixel raises
    `BadPixels`.
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3]
        return rgb if rgb.dtype == np.uint8 else _to_uint8(rgb.astype(np.float32))
    if array.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {array.shape}")
    if window is None and modality.upper() == "CT" and array.dtype != np.uint8:
        window = "abdomen"
    if window is None and array.dtype == np.uint8:
        return array
    values, bad = _finite_values(array)
    if window is not None:
        level, width = resolve_window(window)
        scaled = np.asarray(apply_window(array.astype(np.float32), level, width), dtype=np.float32)
    elif bad is None:
        scaled = np.asarray(percentile_normalize(array.astype(np.float32), *percentiles), dtype=np.float32)
    else:  # the same normalisation, with the percentiles of the finite pixels only
        low, high = np.percentile(values.astype(np.float64), list(percentiles))
        if high <= low:
            scaled = np.zeros(array.shape, np.float32)
        else:
            scaled = ((array.astype(np.float64) - low) / (high - low)).astype(np.float32)
    if bad is not None:
        scaled[bad] = 0.0
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def resize_rgb(
    rgb: np.ndarray, min_side: int | None = None, max_side: int | None = None
) -> tuple[np.ndarray, float, float]:
    """Resize so the short side >= min_side and the long side <= max_side; returns scale (sx, sy).

    Works on (H, W) gray and (H, W, 3) colour uint8 arrays alike."""
    height, width = rgb.shape[:2]
    scale = 1.0
    if min_side and min(height, width) < min_side:
        scale = min_side / min(height, width)
    if max_side and max(height, width) * scale > max_side:
        scale = max_side / max(height, width)
    if scale == 1.0:
        return rgb, 1.0, 1.0
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BICUBIC))
    return resized, new_w / width, new_h / height


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer mask to (width, height)."""
    if mask.shape[1] == size[0] and mask.shape[0] == size[1]:
        return mask
    image = Image.fromarray(mask.astype(np.int32), mode="I")
    return np.asarray(image.resize(size, Image.Resampling.NEAREST)).astype(np.int32)


@dataclass
class BoxResult:
    """A bounding box of one connected component of one label value."""

    value: int
    bbox: list[float]  # x_min, y_min, x_max, y_max (pixel edges, exclusive max)
    area: int


def mask_to_boxes(
    mask: np.ndarray,
    values: list[int] | None = None,
    min_area: int = 16,
    min_area_fraction: float = 0.0,
    connectivity: int = 2,
    max_per_label: int = 0,
) -> tuple[list[BoxResult], dict[str, int]]:
    """One box per label value and connected component; tiny components are dropped.

    `max_per_label` > 0 keeps only the largest components of each label (the rest are counted as
    "extra_component"). Returns (boxes, dropped) with dropped counted by reason ("tiny_component",
    "empty_label", "extra_component").
    """
    from skimage.measure import label as connected_components
    from skimage.measure import regionprops

    threshold = max(min_area, int(np.ceil(min_area_fraction * mask.size)))
    present = [int(v) for v in np.unique(mask) if v != 0]
    wanted = present if values is None else [int(v) for v in values]
    boxes: list[BoxResult] = []
    dropped: dict[str, int] = {}
    for value in wanted:
        binary = mask == value
        if not binary.any():
            dropped["empty_label"] = dropped.get("empty_label", 0) + 1
            continue
        components = connected_components(binary, connectivity=connectivity)
        regions = sorted(regionprops(components), key=lambda r: (-r.area, r.bbox))
        kept = 0
        for region in regions:
            if region.area < threshold:
                dropped["tiny_component"] = dropped.get("tiny_component", 0) + 1
                continue
            if max_per_label and kept >= max_per_label:
                dropped["extra_component"] = dropped.get("extra_component", 0) + 1
                continue
            kept += 1
            y0, x0, y1, x1 = region.bbox
            boxes.append(BoxResult(value, [float(x0), float(y0), float(x1), float(y1)], int(region.area)))
    return boxes, dropped
