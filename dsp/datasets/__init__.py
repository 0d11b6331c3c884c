"""Datasets on disk: reading recordings (acquisition JSON, CSV, WAV) and offline feature extraction."""
