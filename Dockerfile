# The Delphi job poller (see docs/operations.md). Entry point: `delphi-jobs poll`; arguments given to
# `docker run IMAGE ...` are added to it. Tables are created or verified at start with
# DELPHI_CREATE_TABLES=1 (docker-compose.yml sets it for DynamoDB Local).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/delphi-jobs
COPY pyproject.toml README.md ./
COPY delphi_jobs ./delphi_jobs
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 --user-group delphi

USER 10001
WORKDIR /home/delphi

# Stopping: the engine sends SIGTERM, waits its stop timeout (10 s unless told otherwise), then kills.
# On SIGTERM the poller lets running jobs finish for the shutdown grace, then stops their process
# groups (SIGTERM, kill grace, SIGKILL) and hands them back to PENDING. Grace + kill grace must stay
# below the stop timeout, so these defaults fit in 10 s; raise them only together with the stop
# timeout (docker-compose.yml: stop_grace_period).
ENV DELPHI_SHUTDOWN_GRACE_SECONDS=5 \
    DELPHI_KILL_GRACE_SECONDS=3 \
    DELPHI_LOG_FORMAT=json \
    DELPHI_METRICS_PORT=9100
EXPOSE 9100
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['DELPHI_METRICS_PORT'] + '/healthz', timeout=4)"]

ENTRYPOINT ["delphi-jobs", "poll"]
CMD []
