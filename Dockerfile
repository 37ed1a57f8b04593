FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY producers ./producers
COPY worker ./worker
# The worker image: the package with its worker extra (httpx, Flower, ...). Tracing needs the otel
# extra too: docker build --build-arg EXTRAS=worker,otel (docs/tracing.md).
ARG EXTRAS=worker
RUN pip install --no-cache-dir -c constraints.txt ".[${EXTRAS}]" && useradd --system webhooks
USER webhooks
CMD ["reseller-webhooks", "worker"]
