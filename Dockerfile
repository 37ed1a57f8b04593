FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY producers ./producers
COPY worker ./worker
RUN pip install --no-cache-dir . && useradd --system webhooks
USER webhooks
CMD ["reseller-webhooks", "worker"]
