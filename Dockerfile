# One image for every farm role: `farm worker`, `farm flower`, `farm submit` (the
# coordinator) and the one-machine `farm generate`. See docker-compose.yml.
#
# BASE_IMAGE: any Debian-like image with Python 3.11 and venv. An offline machine builds a
# local one (tests/compose/build-base.sh) and passes --build-arg BASE_IMAGE=farm-base:bookworm.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/farm \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv "$VIRTUAL_ENV" \
    && useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin farm
ENV PATH="$VIRTUAL_ENV/bin:$PATH"

WORKDIR /app
# Dependencies first (a layer that survives code changes), then the code.
COPY pyproject.toml README.md ./
RUN mkdir -p farm workers coordinator \
    && touch farm/__init__.py workers/__init__.py coordinator/__init__.py \
    && pip install '.[flower]' \
    && pip uninstall -y farm \
    && rm -rf farm workers coordinator build *.egg-info
COPY farm ./farm
COPY workers ./workers
COPY coordinator ./coordinator
RUN pip install --no-deps '.' \
    && rm -rf build *.egg-info \
    && mkdir -p /app/data \
    && chown farm:farm /app/data

# Never root: the data folder is the only place it writes.
USER farm
# docker stop / scale-down sends SIGTERM: Celery's soft shutdown (SIGQUIT behaviour) lets
# running jobs finish for FARM_SOFT_SHUTDOWN_S, then cancels the rest back onto the queue
# (acks_late). Without the remap, SIGTERM waits for every job unbounded, and the kill that
# ends the grace period leaves them unacknowledged until the visibility timeout (2 h).
ENV FARM_DATA_DIR=/app/data \
    REMAP_SIGTERM=SIGQUIT \
    FARM_SOFT_SHUTDOWN_S=60
VOLUME ["/app/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 \
    CMD ["farm", "health"]
ENTRYPOINT ["farm"]
CMD ["--help"]
