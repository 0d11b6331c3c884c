# Every target builds on `make install`, which creates .venv from the pinned requirements files and
# builds the orientation filters' C library the server loads (build/server/; needs a C compiler).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 4446

.PHONY: install install-train server-library run test bench load-test features samples clean device device-sdk device-footprint block-context

install: $(VENV)/.installed server-library

# The C filters in float64 (device/server/orientation_server.c): rebuilt only when their sources
# change (device.build caches by hash); a missing compiler is reported with how to install one.
server-library: $(VENV)/.installed
	$(BIN)/python -m device.build server

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

# TensorFlow for training and converting models (models/); the tests of that tooling need it too.
install-train: $(VENV)/.installed-train

$(VENV)/.installed-train: $(VENV)/.installed requirements-train.txt
	$(BIN)/pip install --disable-pip-version-check -q -r requirements-train.txt
	touch $@

run: install
	PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py "dsp_server:create_app()"

test: install install-train
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/run_bench.py

# A dataset's features as .npy, like Studio's X_train.npy:
#   make features DATA=data/training BLOCK=mfe PARAMS='{"num-filters": 40}' WINDOW_MS=1000 INCREASE_MS=500 AXES=audio
BLOCK ?= spectrogram
PARAMS ?= {}
WINDOW_MS ?= 1000
INCREASE_MS ?= $(WINDOW_MS)
OUT ?= features
features: install
	$(BIN)/python -m dsp.datasets.extract --block $(BLOCK) --params '$(PARAMS)' --window-ms $(WINDOW_MS) \
		--increase-ms $(INCREASE_MS) $(if $(AXES),--axes '$(AXES)') --out $(OUT) $(DATA)

# Multi-sensor samples (acquisition JSON) from a WAV and other sensors' recordings, aligned on their
# timestamps and resampled to one rate (README, "Make multi-sensor samples"):
#   make samples AUDIO=rec/audio.wav SENSORS="rec/imu.csv rec/light.json" OUT=samples RATE=16000 LABELS=rec/labels.txt
# Optional: AUDIO_START (the audio's first sample in the sensors' clock), OFFSET_MS, TIME_UNIT (s, ms,
# us, ns), SENSOR_RATE (Hz of CSV files without timestamps), LABEL. OUT defaults to samples here;
# a command-line OUT wins over this target-specific value.
samples: OUT = samples
samples: install
	$(if $(AUDIO),,$(error make samples needs AUDIO=file.wav and SENSORS="file.csv ..."))
	$(if $(SENSORS),,$(error make samples needs SENSORS="file.csv ..." (CSV or acquisition JSON files)))
	$(BIN)/python -m dsp.datasets.samples --audio $(AUDIO) --sensors $(SENSORS) --out $(OUT) \
		$(if $(RATE),--out-rate $(RATE)) $(if $(LABELS),--labels $(LABELS)) $(if $(LABEL),--label $(LABEL)) \
		$(if $(AUDIO_START),--audio-start $(AUDIO_START)) $(if $(OFFSET_MS),--offset-ms $(OFFSET_MS)) \
		$(if $(TIME_UNIT),--time-unit $(TIME_UNIT)) $(if $(SENSOR_RATE),--rate $(SENSOR_RATE))

# The real server under concurrent clients for a minute: zero errors, flat memory (LOAD_TEST.md).
load-test: install
	$(BIN)/python bench/load_test.py --seconds 60 --output LOAD_TEST.md

# The fusion blocks' C code (device/): the host library (ctypes, tests) and the Cortex-M4F firmware
# for QEMU's mps2-an386; installs Debian's cross compiler and QEMU as root when they are missing.
device: install
	$(BIN)/python -m device.build host
	$(BIN)/python -m device.build firmware

# The folder to copy into an Edge Impulse C++ export (README, "On the device"): SDK_OUT=dir to choose.
device-sdk: install
	$(BIN)/python -m device.sdk $(SDK_OUT)

# Flash, static RAM, stack and instructions per sample on the Cortex-M4F: device/footprint.json.
device-footprint: install
	$(BIN)/python -m device.footprint

# One block's folder for `edge-impulse-blocks init` and `push` (README, "Connect the blocks"): the
# CLI ties a folder to one hosted block, so each block gets its own. OUT defaults to dist/<block>
# here (dist/ is dockerignored); a command-line OUT wins. Without an explicit BLOCK (the global
# default above does not count) the module says which blocks there are.
#   make block-context BLOCK=kalman [OUT=dist/kalman]
block-context: OUT = dist/$(BLOCK)
block-context: install
	$(BIN)/python -m deploy.block_context $(if $(filter file,$(origin BLOCK)),,$(BLOCK) $(OUT))

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build/device build/server

# The root block's parameters.json, which `edge-impulse-blocks push` reads: `make parameters.json DSP_BLOCK=mfe`.
.PHONY: parameters.json
parameters.json: install
	$(BIN)/python dsp_server.py --print-parameters > $@.tmp && mv $@.tmp $@
