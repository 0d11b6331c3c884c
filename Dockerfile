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

FROM python:3.11-slim
EXPOSE 4446

# Builds behind a TLS-intercepting proxy: pass its CA bundle (PEM text) with
#   --build-arg EXTRA_CA_CERTS="$(cat proxy-ca.crt)"
ARG EXTRA_CA_CERTS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=4446

WORKDIR /app
COPY requirements.txt ./
RUN set -eu; \
    if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/build-extra.crt; \
        update-ca-certificates; \
        export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; \
    fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r requirements.txt

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
