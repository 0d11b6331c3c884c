"""The embeddings block: a fixed front-end (from the model's metadata), then the embedding model.

The front-end is one of the server's own Edge Impulse-identical blocks (spectrogram, MFE or
MFCC) with the parameters the model was trained with, so a model trained on MFE features works
unchanged. The block has no user parameters: changing the front-end would invalidate the model.
"""
from __future__ import annotations

import copy

import numpy as np

from dsp.core.block import BatchFeatures, Block, Features, Request, load_parameters
from dsp.core.errors import ConfigurationError
from dsp.core.params import parameter_specs, resolve_params
from dsp.embeddings.model import EmbeddingModel

NAME = "embeddings"
# Studio may send the rate as a float computed from sample intervals (e.g. 15999.99).
SAMPLING_FREQ_RELATIVE_TOLERANCE = 1e-4


def make_block(model: EmbeddingModel, frontends: dict[str, Block]) -> Block:
    """The embeddings block for `model`, its front-end taken from `frontends` by name."""
    meta = model.metadata
    frontend = frontends[meta.frontend_block]
    try:
        frontend_params = resolve_params(parameter_specs(frontend.parameters), meta.frontend_params)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{model.path}: front-end parameters: {exc}") from None
    labels = [f"emb_{i}" for i in range(meta.embedding_size)]
    output_config = {"type": "flat", "shape": {"width": meta.embedding_size}}

    def frontend_request(req: Request, raw: np.ndarray, draw_graphs: bool) -> Request:
        _check_window(req, raw, model)
        return Request(raw=raw, axes=req.axes, sampling_freq=meta.sampling_freq,
                       implementation_version=meta.frontend_version, params=frontend_params,
                       draw_graphs=draw_graphs)

    def compute_batch(req: Request) -> BatchFeatures:
        features = frontend.compute_batch(frontend_request(req, req.raw, False))
        return BatchFeatures(features=model.embed(features.features), labels=labels,
                             output_config=output_config, fft_used=features.fft_used)

    def compute(req: Request) -> Features:
        features = frontend.compute(frontend_request(req, req.raw, req.draw_graphs))
        embedding = model.embed(features.features[np.newaxis])[0]
        return Features(features=embedding, labels=labels, output_config=output_config,
                        fft_used=features.fft_used, graphs=features.graphs)

    def tflite_implementation(req: Request) -> bytes:
        if model.raw_window_model is None:
            raise ConfigurationError(f"The model '{meta.name}' ships no raw-window TFLite model.")
        if len(req.axes) != meta.axes or not _same_rate(req.sampling_freq, meta.sampling_freq):
            raise ConfigurationError(
                f"The model '{meta.name}' expects {meta.describe_input()}; the impulse sends "
                f"{len(req.axes)} axes at {req.sampling_freq:g} Hz."
            )
        return model.raw_window_model

    parameters = copy.deepcopy(load_parameters(NAME))
    parameters["info"]["hasTfliteImplementation"] = model.raw_window_model is not None
    parameters["info"]["description"] += f" Model: {meta.name} ({meta.describe_input()})."
    return Block(name=NAME, parameters=parameters, compute=compute, compute_batch=compute_batch,
                 tflite_implementation=tflite_implementation if model.raw_window_model else None,
                 ready=model.check)


def _check_window(req: Request, raw: np.ndarray, model: EmbeddingModel) -> None:
    """The window must be what the model was trained on: same rate, axes and length."""
    meta = model.metadata
    samples, axes = raw.shape[-2], raw.shape[-1]
    if (samples != meta.window_samples or axes != meta.axes
            or not _same_rate(req.sampling_freq, meta.sampling_freq)):
        got_axes = "axis" if axes == 1 else "axes"
        raise ConfigurationError(
            f"The model '{meta.name}' expects {meta.describe_input()}; got {samples} samples of "
            f"{axes} {got_axes} at {req.sampling_freq:g} Hz."
        )


def _same_rate(given: float, expected: float) -> bool:
    return abs(given - expected) <= SAMPLING_FREQ_RELATIVE_TOLERANCE * expected
