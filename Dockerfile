# impasto: one image for the shop (`impasto serve`) and a farm worker (`impasto worker`).
#
#   CPU:   docker build -t impasto .
#   CUDA:  docker build -t impasto:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
#          (run with the NVIDIA container toolkit: `docker run --gpus all …`; torch's CUDA wheels
#          bring their own CUDA libraries, the host brings the driver)
#
# No secret is baked in: IMPASTO_SECRET_KEY, IMPASTO_ADMIN_PASSWORD, database and storage
# credentials come from the environment at run time (compose.yaml reads them from .env).
# Written without a container daemon at hand (see docs/operations.md): build it once before use.

ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IMPASTO_DATA_DIR=/var/lib/impasto/data \
    IMPASTO_CATALOG_DIR=/var/lib/impasto/styles \
    IMPASTO_CACHE_DIR=/var/lib/impasto/cache

# OpenCV's headless wheel wants glib; torch's CPU wheel wants OpenMP
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --system --create-home --home-dir /home/impasto --uid 10001 impasto \
    && mkdir -p /var/lib/impasto/data /var/lib/impasto/styles /var/lib/impasto/cache \
    && chown -R impasto:impasto /var/lib/impasto

WORKDIR /opt/impasto
# torch first, from the index of the variant (a bare `torch` from PyPI is the CUDA build)
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install ".[shop,farm]"

USER impasto
VOLUME ["/var/lib/impasto"]
EXPOSE 8000

# The shop's probe; a worker's compose service overrides it with its metrics port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4); sys.exit(0)"]

ENTRYPOINT ["impasto"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
