# VirtRigaud controller image: `docker build -t virtrigaud/virtrigaud:0.1.0 .`
# Both stages use the same base, so the virtualenv built in the first runs unchanged in
# the second.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# libvirt-python compiles against libvirt at install time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config libvirt-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN python -m venv /opt/virtrigaud \
 && /opt/virtrigaud/bin/pip install --no-cache-dir -c constraints.txt .

FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 virtrigaud \
 && useradd --uid 65532 --gid 65532 --create-home --home-dir /home/virtrigaud virtrigaud
COPY --from=build /opt/virtrigaud /opt/virtrigaud
# KubeRay starts Ray pods through `bash -lc`, whose login profile resets PATH: `ray` must
# also be found in /usr/local/bin.
RUN ln -s /opt/virtrigaud/bin/ray /opt/virtrigaud/bin/virtrigaud /usr/local/bin/
# A passwd entry and a writable HOME: Ray looks up the user name and writes under ~ and /tmp.
ENV PATH=/opt/virtrigaud/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0
USER 65532:65532
WORKDIR /home/virtrigaud
ENTRYPOINT ["virtrigaud"]
CMD ["run"]
