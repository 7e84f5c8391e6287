# CreditBot: a slim image. `creditbot run` migrates the database, then runs the scheduler
# and the outbox dispatcher; run a second container with `serve --host 0.0.0.0` for Slack's
# HTTP requests (or add `--slack-socket-mode` to `run`). Production hardening is a later issue.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY credit ./credit
COPY bot ./bot
COPY jobs ./jobs
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CREDITBOT_TEMPLATES=/app/templates
RUN useradd --create-home --uid 10001 creditbot
COPY --from=build /install /usr/local
WORKDIR /app
COPY templates ./templates
COPY config.example.toml ./config.example.toml
USER creditbot
ENTRYPOINT ["creditbot"]
CMD ["run"]
