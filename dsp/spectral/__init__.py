"""The spectral features block (FFT and wavelet features of motion and other slow signals)."""
