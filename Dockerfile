# psml images for docker-compose.yml (Triton runs from NVIDIA's own image).
# - target "router": the serving path only (pyproject's `serving` group: no torch, no onnxruntime, no Triton
#   wheel); the router forwards to Triton and never runs a model.
# - target "full": everything in requirements.txt, for Locust, attacks and benchmarks.
FROM python:3.11-slim AS router
WORKDIR /app
COPY pyproject.toml ./
COPY common ./common
COPY psml ./psml
COPY zoo ./zoo
COPY router ./router
RUN pip install --no-cache-dir -e ".[serving]"
EXPOSE 8080

FROM python:3.11-slim AS full
WORKDIR /app
COPY requirements.txt pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.txt
COPY common ./common
COPY stack ./stack
COPY psml ./psml
COPY zoo ./zoo
COPY router ./router
COPY attacks ./attacks
COPY loadtests ./loadtests
COPY benchmarks ./benchmarks
RUN pip install --no-cache-dir -e . --no-deps
EXPOSE 8080 8089
