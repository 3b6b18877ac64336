# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY geofence ./geofence
RUN python -m venv /venv && /venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app geofence
COPY --from=build /venv /venv
WORKDIR /app
COPY stores.geojson ./
USER geofence
ENV PATH=/venv/bin:$PATH \
    GEOFENCE_HOST=0.0.0.0 \
    GEOFENCE_PORT=8080 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz')"]
CMD ["geofence", "serve"]
