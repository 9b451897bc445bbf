# syntax=docker/dockerfile:1
# One image for every role: `tollgate serve` (the default), `engine`, `frontdoor --engine HOST:PORT`,
# `authsvc --keys FILE`, `statssvc --db FILE`, `keys ...`, `stats usage ...`, `check-config`.
#   docker build -t tollgate .
#   docker run --rm -p 8080:8080 -p 50051:50051 tollgate             # the embedded default (mock `demo` model)
#   docker run --rm -v "$PWD/gateway.yaml:/etc/tollgate/gateway.yaml:ro" tollgate serve --config /etc/tollgate/gateway.yaml
# tests/deploy/test_image.py runs this file's build steps into a virtual environment and starts the entrypoint.

# Build: tollgate and its runtime dependencies (no dev extra) into a virtual environment the runtime stage copies.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY generated ./generated
COPY gateway ./gateway
COPY authsvc ./authsvc
COPY statssvc ./statssvc
COPY routersvc ./routersvc
RUN python -m venv /opt/tollgate \
    && /opt/tollgate/bin/pip install --no-cache-dir /src

# Runtime: the virtual environment alone, run by an unprivileged user; no compiler, no pip cache, no source tree.
FROM python:3.11-slim
RUN groupadd --system --gid 10001 tollgate \
    && useradd --system --uid 10001 --gid tollgate --home-dir /var/lib/tollgate --create-home --shell /usr/sbin/nologin tollgate
COPY --from=build /opt/tollgate /opt/tollgate
# In a container the listeners must face outward; a flag wins over these, and they win over a config file's `listen`.
ENV PATH=/opt/tollgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOLLGATE_HTTP=0.0.0.0:8080 \
    TOLLGATE_GRPC=0.0.0.0:50051
WORKDIR /var/lib/tollgate
USER 10001:10001
# 8080 HTTP front door, 50051 engine gRPC; authsvc and statssvc listen where --listen says (50061, 50062 by convention).
EXPOSE 8080 50051
ENTRYPOINT ["tollgate"]
CMD ["serve"]
