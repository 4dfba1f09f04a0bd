# openai-meter: the metering proxy, air-gapped ready (tiktoken encodings pre-seeded at build time).
FROM python:3.12-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # tiktoken reads its BPE files from here; `encodings seed` fills it at build time.
    TIKTOKEN_CACHE_DIR=/opt/openai-meter/tiktoken

RUN useradd --system --create-home --home-dir /var/lib/openai-meter --uid 10001 meter

WORKDIR /opt/openai-meter/src
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY proxy ./proxy
COPY pricing ./pricing
COPY storage ./storage
RUN pip install -c requirements/constraints.txt . \
 && openai-meter encodings seed \
 && rm -rf /opt/openai-meter/src

WORKDIR /var/lib/openai-meter
USER meter

# Ledger (SQLite by default) and spool live in the working directory: mount a volume here.
ENV OPENAI_METER_DATABASE_URL=sqlite:////var/lib/openai-meter/openai-meter.db \
    OPENAI_METER_LEDGER__SPOOL_DIR=/var/lib/openai-meter/spool
VOLUME ["/var/lib/openai-meter"]
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]

# SIGTERM drains in-flight calls for server.shutdown_grace_s (default 30 s): give
# `docker stop` a longer timeout (`--time 40` / compose `stop_grace_period: 40s`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["openai-meter"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
