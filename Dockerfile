FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY producers ./producers
COPY worker ./worker
# The worker image: the package with its worker extra (httpx, Flower, ...).
RUN pip install --no-cache-dir -c constraints.txt '.[worker]' && useradd --system webhooks
USER webhooks
CMD ["reseller-webhooks", "worker"]
