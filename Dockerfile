# syntax=docker/dockerfile:1
# The server as a static binary on an empty image:
#   docker build --build-arg VERSION=1.2.0 --build-arg REVISION=$(git rev-parse HEAD) -t incidents .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=""
ARG REVISION=""
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" \
      -o /out/incidents . \
 && /out/incidents -version

FROM scratch
# CA certificates for webhooks to https receivers; nothing else is needed.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=build /out/incidents /incidents
# Not root: any unprivileged id works, the server writes nothing to disk.
USER 65532:65532
ENV ADDR=:8080
EXPOSE 8080
# scratch has no curl: the binary checks itself (GET /healthz on ADDR).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["/incidents", "-healthcheck"]
ENTRYPOINT ["/incidents", "-env-file", ""]
