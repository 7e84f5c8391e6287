# CreditBot: one image for every replica. The container runs `creditbot run`, which migrates
# the database (replicas starting together take turns) and then serves HTTP on port 8080
# (/healthz, /readyz, /metrics, the ERP API, Slack's and Telegram's webhooks), dispatches the
# outbox, and — on the replica holding the leader lock — runs the scheduled jobs.
# Configuration: CREDITBOT_* environment variables (secrets among them) or a config.toml
# mounted at /app/config.toml. See docker-compose.example.yml.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY credit ./credit
COPY bot ./bot
COPY jobs ./jobs
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CREDITBOT_TEMPLATES=/app/templates \
    CREDITBOT_LOGGING__FORMAT=json \
    CREDITBOT_PORT=8080
RUN useradd --create-home --uid 10001 --user-group creditbot
COPY --from=build /install /usr/local
WORKDIR /app
COPY templates ./templates
COPY config.example.toml ./config.example.toml
RUN chown creditbot:creditbot /app
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["creditbot", "health"]
ENTRYPOINT ["creditbot"]
CMD ["run", "--host", "0.0.0.0"]
