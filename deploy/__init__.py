"""Packaging the server for Edge Impulse: one folder per block for `edge-impulse-blocks push`."""
