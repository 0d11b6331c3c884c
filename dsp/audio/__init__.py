"""Audio front-ends: framing and power spectra, mel filterbanks, and the spectrogram, MFE and MFCC blocks."""
