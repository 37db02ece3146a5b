# Image with Java 17, the pinned Python stack and the Delta jars. Runs `make demo` by default, as the unprivileged
# user `recsys` (uid 10001), which owns only /app; serve the API with (keys from the environment, not the image):
#   docker run -p 8000:8000 -e RECSYS_SERVE__HOST=0.0.0.0 -e RECSYS_SERVE__SIGNING_KEYS='["<32+ random chars>"]' \
#     -e RECSYS_SERVE__METRICS_TOKEN=<token> IMAGE .venv/bin/recsys serve --warehouse warehouse --port 8000
FROM python:3.11-slim-bookworm
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

# Debian's packages follow the bookworm point release; the Python stack is pinned by requirements.lock.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven make git procps \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first, so code changes do not rebuild the venv layer.
COPY requirements.lock pyproject.toml README.md ./
COPY conf/maven ./conf/maven
RUN python -m venv .venv \
 && .venv/bin/pip install --upgrade pip setuptools wheel \
 && .venv/bin/pip install -r requirements.lock \
 && PYTHON=.venv/bin/python bash conf/maven/fetch-jars.sh .venv/delta-jars \
 && rm -rf /root/.m2

COPY . .
RUN .venv/bin/pip install --no-deps --no-build-isolation -e . \
 && touch ".venv/.installed-$(cat requirements.lock pyproject.toml conf/maven/pom.xml | sha256sum | cut -c1-12)"

# The code and the venv stay root's (read-only to the service); the user may create its data, warehouse and
# reports folders in /app.
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home recsys \
 && chown recsys:recsys /app
USER 10001:10001

EXPOSE 8000
CMD ["make", "demo"]
