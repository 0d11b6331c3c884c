"""Studio graph objects (the `graphs` list of a `/run` answer), drawn with numpy and Pillow.

Two kinds, as Studio's protocol defines them (docs/ei-protocol.md section 1.3, Graph object):

* `image_graph`: a PNG picture of a (frames, bins) matrix, drawn like a spectrogram.
* `line_graph`: series of numbers over a shared axis, as plain JSON-safe Python floats.

The official blocks draw the spectrogram with matplotlib as SVG (about 72 ms); here it is a
palette PNG built directly from the matrix (a few ms), so `draw_graphs` costs almost nothing.
"""
from __future__ import annotations

import base64
import io
import math
from functools import lru_cache
from typing import Mapping, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["image_graph", "line_graph", "image_size", "viridis_lut"]

# The plot area is upscaled by integer factors until it is at least this big, so a 41-frame
# spectrogram is still readable in Studio; bigger matrices are drawn one pixel per cell.
MIN_PLOT_WIDTH = 400
MIN_PLOT_HEIGHT = 200
LABEL_FONT_SIZE = 12
LABEL_PADDING = 3

# matplotlib's viridis sampled at 0, 1/8, ..., 1: perceptually uniform and readable in greyscale.
_VIRIDIS_ANCHORS = np.array(
    [
        (68, 1, 84), (72, 40, 120), (62, 73, 137), (49, 104, 142), (38, 130, 142),
        (31, 158, 137), (53, 183, 121), (110, 206, 88), (253, 231, 37),
    ],
    dtype=np.float64,
)

# Palette layout of the PNG: data uses entries 0..254 (255 levels of the colour map), entry 255
# is the white margin. Label text uses entry 0, the darkest colour of the map.
_DATA_LEVELS = 255
_BACKGROUND_INDEX = 255
_TEXT_INDEX = 0


def viridis_lut(size: int = 256) -> np.ndarray:
    """Viridis-like colour map as a lookup table.

    Parameters
    ----------
    size : int
        Number of entries.

    Returns
    -------
    numpy.ndarray
        uint8 array of shape (size, 3), RGB, from dark purple (entry 0) to yellow (last entry),
        linearly interpolated between nine anchor colours of matplotlib's viridis.
    """
    anchor_positions = np.linspace(0.0, 1.0, len(_VIRIDIS_ANCHORS))
    positions = np.linspace(0.0, 1.0, size)
    channels = [np.interp(positions, anchor_positions, _VIRIDIS_ANCHORS[:, c]) for c in range(3)]
    return np.round(np.stack(channels, axis=1)).astype(np.uint8)


@lru_cache(maxsize=1)
def _png_palette() -> bytes:
    lut = viridis_lut(256)
    # Resample the 256-entry map to 255 levels so both ends of the map stay exact.
    data_colours = lut[np.round(np.linspace(0, 255, _DATA_LEVELS)).astype(np.intp)]
    palette = np.vstack([data_colours, np.full((1, 3), 255, dtype=np.uint8)])
    return palette.tobytes()


@lru_cache(maxsize=1)
def _label_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=LABEL_FONT_SIZE)


def _label_height() -> int:
    ascent, descent = _label_font().getmetrics()
    return ascent + descent + 2 * LABEL_PADDING


@lru_cache(maxsize=64)
def _label_mask(text: str, vertical: bool) -> np.ndarray:
    """Boolean mask of `text` (True where ink is), rendered once per label and reused."""
    font = _label_font()
    left, _, right, _ = font.getbbox(text)
    canvas = Image.new("L", (max(1, right - left) + 2 * LABEL_PADDING, _label_height()), 0)
    ImageDraw.Draw(canvas).text((LABEL_PADDING - left, LABEL_PADDING), text, fill=255, font=font)
    if vertical:
        # Read bottom to top, as a y-axis label is.
        canvas = canvas.transpose(Image.Transpose.ROTATE_90)
    mask = np.asarray(canvas) >= 128
    mask.setflags(write=False)
    return mask


def image_size(frames: int, bins: int, *, x_label: Optional[str] = "Time (frames)",
               y_label: Optional[str] = "Frequency (FFT bin)") -> tuple[int, int, int, int]:
    """Geometry of the picture `image_graph` draws for a (frames, bins) matrix.

    Parameters
    ----------
    frames, bins : int
        Shape of the matrix.
    x_label, y_label : str or None
        As given to `image_graph`; an empty or None label takes no margin.

    Returns
    -------
    tuple of int
        (width, height, scale_x, scale_y) in pixels: every cell is scale_x by scale_y pixels; the
        plot sits at the top right, with a left margin for `y_label` and a bottom margin for
        `x_label`, each `_label_height()` pixels when the label is present.
    """
    scale_x = max(1, math.ceil(MIN_PLOT_WIDTH / frames))
    scale_y = max(1, math.ceil(MIN_PLOT_HEIGHT / bins))
    left_margin = _label_height() if y_label else 0
    bottom_margin = _label_height() if x_label else 0
    return frames * scale_x + left_margin, bins * scale_y + bottom_margin, scale_x, scale_y


def _colour_indices(matrix: np.ndarray) -> np.ndarray:
    """Min-max scale to palette indices 0..254; non-finite cells take the lowest colour."""
    finite = np.isfinite(matrix)
    all_finite = bool(finite.all())
    if not all_finite and not finite.any():
        return np.zeros(matrix.shape, dtype=np.uint8)
    lo = float(matrix.min() if all_finite else matrix[finite].min())
    hi = float(matrix.max() if all_finite else matrix[finite].max())
    span = hi - lo
    # A constant matrix (or one whose span overflows) is drawn in one colour, never as NaN.
    if not (span > 0.0 and math.isfinite(span)):
        return np.zeros(matrix.shape, dtype=np.uint8)
    scaled = (matrix - lo) * ((_DATA_LEVELS - 1) / span)
    if not all_finite:
        scaled = np.where(finite, scaled, 0.0)
    return np.rint(scaled).astype(np.uint8)


def image_graph(name: str, matrix: np.ndarray, *, x_label: Optional[str] = "Time (frames)",
                y_label: Optional[str] = "Frequency (FFT bin)") -> dict:
    """Draw a time-major matrix as a spectrogram picture for Studio.

    Parameters
    ----------
    name : str
        Graph title shown by Studio.
    matrix : numpy.ndarray
        2-D array of shape (frames, bins), time-major as spectrogram features are laid out.
        Values are min-max scaled over the finite cells; a constant matrix is drawn in the
        lowest colour, non-finite cells too.
    x_label, y_label : str or None
        Axis titles drawn under and left of the plot; None or "" draws no label and no margin.

    Returns
    -------
    dict
        ``{"name", "image", "imageMimeType": "image/png", "type": "image"}``; ``image`` is the
        base64 PNG (no ``data:`` prefix). Time runs left to right, bin 0 is at the bottom, the
        colour map is viridis (dark = low). Each cell is an integer number of pixels (nearest
        neighbour) so that the plot is at least 400 x 200 pixels; see `image_size`.

    Raises
    ------
    ValueError
        If `matrix` is not a non-empty 2-D array.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"image_graph needs a non-empty (frames, bins) matrix, got shape {matrix.shape}")
    frames, bins = matrix.shape
    width, height, scale_x, scale_y = image_size(frames, bins, x_label=x_label, y_label=y_label)

    # (bins, frames) with the highest bin in row 0, so bin 0 ends up at the bottom of the image.
    cells = _colour_indices(matrix).T[::-1]
    plot = np.repeat(np.repeat(cells, scale_y, axis=0), scale_x, axis=1)

    pixels = np.full((height, width), _BACKGROUND_INDEX, dtype=np.uint8)
    plot_left = width - plot.shape[1]
    pixels[: plot.shape[0], plot_left:] = plot
    if y_label:
        _stamp(pixels, _label_mask(y_label, vertical=True), top=0, left=0,
               max_height=plot.shape[0], max_width=plot_left)
    if x_label:
        _stamp(pixels, _label_mask(x_label, vertical=False), top=plot.shape[0], left=plot_left,
               max_height=height - plot.shape[0], max_width=plot.shape[1])

    # A palette PNG holds one byte per pixel and compresses fast; level 1 is plenty for flat
    # nearest-neighbour blocks.
    picture = Image.fromarray(pixels)
    picture.putpalette(_png_palette())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return {
        "name": name,
        "image": base64.b64encode(buffer.getvalue()).decode("ascii"),
        "imageMimeType": "image/png",
        "type": "image",
    }


def _stamp(pixels: np.ndarray, mask: np.ndarray, *, top: int, left: int,
           max_height: int, max_width: int) -> None:
    """Draw a label mask centred in its margin, cropped to it (long labels are cut)."""
    mask = mask[:max_height, :max_width]
    top += (max_height - mask.shape[0]) // 2
    left += (max_width - mask.shape[1]) // 2
    region = pixels[top: top + mask.shape[0], left: left + mask.shape[1]]
    region[mask] = _TEXT_INDEX


def _json_floats(values, replacement: float) -> list[float]:
    """Plain Python floats with NaN and +-inf replaced, so strict JSON encoders accept them."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(array).all():
        array = np.where(np.isfinite(array), array, replacement)
    return array.tolist()


def line_graph(name: str, series: Mapping[str, object], x_values, *, graph_type: str = "linear",
               axis_labels: Optional[Mapping[str, str]] = None,
               suggested_y_min: Optional[float] = None, suggested_y_max: Optional[float] = None,
               suggested_x_min: Optional[float] = None, suggested_x_max: Optional[float] = None,
               smoothing: Optional[bool] = None, non_finite: float = 0.0) -> dict:
    """Build a Studio line graph.

    Parameters
    ----------
    name : str
        Graph title shown by Studio.
    series : mapping of str to array-like
        One 1-D series per name (e.g. per axis), each as long as `x_values`. Studio puts these
        under ``X`` (it plots them against the shared axis).
    x_values : array-like
        Shared axis values (time in ms, frequency in Hz, ...); Studio's ``y`` field.
    graph_type : {"linear", "logarithmic"}
        Scale of the value axis.
    axis_labels : mapping, optional
        ``{"X": ..., "y": ...}`` exactly as on the wire (``X`` titles the series values,
        ``y`` the shared axis).
    suggested_y_min, suggested_y_max, suggested_x_min, suggested_x_max : float, optional
        Studio's axis hints, sent only when given. As the protocol notes, Studio applies the
        ``Y`` hints to the series values.
    smoothing : bool, optional
        Studio's smoothing flag, sent only when given.
    non_finite : float
        What NaN and infinities are replaced with (JSON has no NaN).

    Returns
    -------
    dict
        ``{"name", "X": {series: [float]}, "y": [float], "type", ...hints}``, made of plain
        Python values only, so any JSON encoder (stdlib included) can write it.

    Raises
    ------
    ValueError
        On an unknown `graph_type` or a series whose length differs from `x_values`.
    """
    if graph_type not in ("linear", "logarithmic"):
        raise ValueError(f"graph_type must be 'linear' or 'logarithmic', got {graph_type!r}")
    shared_axis = _json_floats(x_values, non_finite)
    values = {}
    for series_name, series_values in series.items():
        floats = _json_floats(series_values, non_finite)
        if len(floats) != len(shared_axis):
            raise ValueError(f"series {series_name!r} has {len(floats)} values but x_values has "
                             f"{len(shared_axis)}")
        values[str(series_name)] = floats
    graph: dict = {"name": name, "X": values, "y": shared_axis, "type": graph_type}
    hints = {"suggestedYMin": suggested_y_min, "suggestedYMax": suggested_y_max,
             "suggestedXMin": suggested_x_min, "suggestedXMax": suggested_x_max}
    for key, hint in hints.items():
        if hint is not None and math.isfinite(float(hint)):
            graph[key] = float(hint)
    if smoothing is not None:
        graph["smoothing"] = bool(smoothing)
    if axis_labels:
        graph["axisLabels"] = {str(key): str(label) for key, label in axis_labels.items()}
    return graph
