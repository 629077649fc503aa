# The psml router and Locust image for docker-compose.yml (Triton runs from NVIDIA's own image).
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt pyproject.toml ./
# The router forwards to Triton and never runs a model, so the CPU wheels suffice here.
RUN pip install --no-cache-dir -r requirements.txt
COPY psml ./psml
COPY zoo ./zoo
COPY router ./router
COPY attacks ./attacks
COPY loadtests ./loadtests
COPY benchmarks ./benchmarks
RUN pip install --no-cache-dir -e . --no-deps
EXPOSE 8080 8089
