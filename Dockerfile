FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY producers ./producers
COPY worker ./worker
# The worker image: the package with its worker extra (httpx, Flower, ...).
RUN pip install --no-cache-dir '.[worker]' && useradd --system webhooks
USER webhooks
CMD ["reseller-webhooks", "worker"]
