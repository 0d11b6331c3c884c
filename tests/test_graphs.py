"""Studio graph objects: the PNG spectrogram picture and the JSON-safe line graph."""
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from dsp.graphs import image_graph, image_size, line_graph, viridis_lut

LOWEST_COLOUR = tuple(int(c) for c in viridis_lut()[0])
HIGHEST_COLOUR = tuple(int(c) for c in viridis_lut()[-1])


def decode(graph: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(graph["image"], validate=True)))


def plot_area(matrix_shape, **labels) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the plot inside the picture, from the documented geometry."""
    frames, bins = matrix_shape
    width, _, scale_x, scale_y = image_size(frames, bins, **labels)
    return width - frames * scale_x, 0, width, bins * scale_y


def test_image_graph_is_a_png_of_the_documented_size():
    matrix = np.random.default_rng(1).random((41, 65))
    graph = image_graph("Spectrogram", matrix)

    assert set(graph) == {"name", "image", "imageMimeType", "type"}
    assert graph["type"] == "image" and graph["imageMimeType"] == "image/png"
    assert not graph["image"].startswith("data:")
    picture = decode(graph)
    assert picture.format == "PNG"
    width, height, scale_x, scale_y = image_size(41, 65)
    assert picture.size == (width, height)
    assert 41 * scale_x >= 400 and 65 * scale_y >= 200


def test_without_labels_the_picture_is_exactly_the_upscaled_matrix():
    graph = image_graph("g", np.arange(12.0).reshape(3, 4), x_label=None, y_label="")
    _, _, scale_x, scale_y = image_size(3, 4, x_label=None, y_label=None)
    assert decode(graph).size == (3 * scale_x, 4 * scale_y)


def test_highest_bin_lights_the_top_row_and_bin_zero_is_at_the_bottom():
    matrix = np.zeros((41, 65))
    matrix[:, -1] = 1.0
    picture = np.asarray(decode(image_graph("g", matrix)).convert("RGB"))
    left, top, right, bottom = plot_area(matrix.shape)
    plot = picture[top:bottom, left:right]

    _, _, _, scale_y = image_size(*matrix.shape)
    assert (plot[:scale_y] == HIGHEST_COLOUR).all()
    assert (plot[scale_y:] == LOWEST_COLOUR).all()


def test_time_runs_left_to_right():
    matrix = np.zeros((41, 65))
    matrix[-1, :] = 1.0
    picture = np.asarray(decode(image_graph("g", matrix)).convert("RGB"))
    left, top, right, bottom = plot_area(matrix.shape)
    _, _, scale_x, _ = image_size(*matrix.shape)
    assert (picture[top:bottom, right - scale_x:right] == HIGHEST_COLOUR).all()
    assert (picture[top:bottom, left:right - scale_x] == LOWEST_COLOUR).all()


@pytest.mark.parametrize("fill", [0.0, 1.5, -1e308])
def test_constant_matrix_draws_one_colour(fill):
    matrix = np.full((10, 20), fill)
    with np.errstate(all="raise"):  # no divide-by-zero or invalid value on the way
        picture = np.asarray(decode(image_graph("g", matrix)).convert("RGB"))
    left, top, right, bottom = plot_area(matrix.shape)
    assert (picture[top:bottom, left:right] == LOWEST_COLOUR).all()


def test_non_finite_cells_do_not_break_the_scale():
    matrix = np.zeros((5, 6))
    matrix[0, 0] = np.nan
    matrix[1, 1] = np.inf
    matrix[2, 2] = 4.0
    picture = np.asarray(decode(image_graph("g", matrix)).convert("RGB"))
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert HIGHEST_COLOUR in colours and LOWEST_COLOUR in colours

    all_nan = decode(image_graph("g", np.full((3, 3), np.nan), x_label=None, y_label=None))
    assert (np.asarray(all_nan.convert("RGB")) == LOWEST_COLOUR).all()


@pytest.mark.parametrize("bad", [np.zeros(10), np.zeros((0, 5)), np.zeros((2, 2, 2))])
def test_image_graph_rejects_a_matrix_that_is_not_2d(bad):
    with pytest.raises(ValueError, match="frames, bins"):
        image_graph("g", bad)


def test_line_graph_is_plain_json_without_nan():
    x_ms = np.arange(4, dtype=np.float32) * 10
    graph = line_graph(
        "After filter",
        {"accX": np.array([1.0, np.nan, np.inf, -np.inf]), "accY": np.float32([1, 2, 3, 4])},
        x_ms,
        graph_type="logarithmic",
        axis_labels={"X": "g", "y": "ms"},
        suggested_y_min=np.float64(0.0),
    )

    text = json.dumps(graph, allow_nan=False)  # raises on NaN/inf and on numpy scalars
    assert json.loads(text) == graph
    assert graph["X"]["accX"] == [1.0, 0.0, 0.0, 0.0]
    assert graph["y"] == [0.0, 10.0, 20.0, 30.0]
    assert graph["type"] == "logarithmic"
    assert graph["suggestedYMin"] == 0.0 and type(graph["suggestedYMin"]) is float
    assert graph["axisLabels"] == {"X": "g", "y": "ms"}
    for values in [graph["y"], *graph["X"].values()]:
        assert all(type(v) is float for v in values)


def test_line_graph_sends_only_the_hints_given():
    graph = line_graph("g", {"a": [1, 2]}, [0, 1])
    assert set(graph) == {"name", "X", "y", "type"}
    assert graph["type"] == "linear"


def test_line_graph_rejects_mismatched_series_and_unknown_type():
    with pytest.raises(ValueError, match="'a' has 3 values"):
        line_graph("g", {"a": [1, 2, 3]}, [0, 1])
    with pytest.raises(ValueError, match="graph_type"):
        line_graph("g", {"a": [1]}, [0], graph_type="matrix")
