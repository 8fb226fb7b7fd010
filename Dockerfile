# One image for every farm role. Built fully in the deployment issue (compose with Redis,
# workers and Flower); today it runs the in-process generator.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 VIRTUAL_ENV=/opt/farm
RUN python3 -m venv "$VIRTUAL_ENV" && useradd --create-home --uid 10001 farm
ENV PATH="$VIRTUAL_ENV/bin:$PATH"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY farm ./farm
COPY workers ./workers
COPY coordinator ./coordinator
RUN pip install --no-cache-dir . && mkdir -p /app/data && chown farm:farm /app/data

USER farm
ENV FARM_DATA_DIR=/app/data
VOLUME ["/app/data"]
ENTRYPOINT ["farm"]
CMD ["generate", "--tier", "1", "-n", "300"]
