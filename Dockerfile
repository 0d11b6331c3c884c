# The DSP block server, as `edge-impulse-blocks push` and the runner build it.
# The runner and push read the port from the first EXPOSE line (a bare number): keep it first.

# Build stage: the orientation filters' C library (float64) that the kalman block loads. Only the
# .so goes into the server image, not the compiler (the slim base has none).
FROM python:3.11-slim AS orientation-library
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY device/__init__.py device/build.py device/
COPY device/lib/orientation_filters.c device/lib/orientation_filters.h device/lib/fusion_window.h device/lib/
COPY device/server/ device/server/
RUN python3 -m device.build server

# Build stage: the server's Python packages in /opt/venv, without what they only need to be
# installed or tested (pip, setuptools, test suites, C sources, type stubs) and without parts of
# ai-edge-litert the CPU interpreter never loads (the WebGPU accelerator, NPU vendor plugins, the
# model tools). IMAGE_SIZE.md lists what each cut saves, measured.
FROM python:3.11-slim AS server-packages
# Builds behind a TLS-intercepting proxy: pass its CA bundle (PEM text) with
#   --build-arg EXTRA_CA_CERTS="$(cat proxy-ca.crt)"
ARG EXTRA_CA_CERTS=""
COPY requirements.txt /tmp/
RUN set -eu; \
    if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/build-extra.crt; \
        update-ca-certificates; \
        export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; \
    fi; \
    python3 -m venv --without-pip /opt/venv; \
    python3 -m pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        -r /tmp/requirements.txt; \
    site=$(/opt/venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
    find "$site" -depth -type d -name tests -exec rm -rf {} +; \
    find "$site" -name '*.pyi' -delete; \
    rm -rf "$site"/simdjson/simdjson.h "$site"/simdjson/simdjson.cpp \
        "$site"/ai_edge_litert/libLiteRtWebGpuAccelerator.so "$site"/ai_edge_litert/vendors \
        "$site"/ai_edge_litert/tools

FROM python:3.11-slim
EXPOSE 4446

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=4446

WORKDIR /app
COPY --from=server-packages /opt/venv /opt/venv

# Hosted blocks have no network: everything the server needs is copied in here.
COPY dsp/ dsp/
COPY models/*.json models/*.tflite models/
COPY dsp_server.py server_ops.py server_openapi.py gunicorn.conf.py parameters.json ./
# Where dsp/fusion/orientation_library.py looks by default: /app/build/server/.
COPY --from=orientation-library /src/build/server/liborientation_f64.so build/server/

RUN useradd --system --uid 10001 --no-create-home dsp
USER dsp

# /healthz: needs no key (DSP_API_KEY) and answers 503 unless every block can serve.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD python3 -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '4446'), timeout=4)"

ENTRYPOINT ["/opt/venv/bin/gunicorn", "-c", "gunicorn.conf.py", "dsp_server:create_app()"]
