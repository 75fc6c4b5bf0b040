# The mesh's images: static binaries (musl) on an empty base, nothing else in them.
#
#   docker build --target sidecar  -t mesh-sidecar:0.1.0 .    # mesh-sidecar (proxy, gateway, CA)
#   docker build --target bookinfo -t mesh-bookinfo:0.1.0 .   # the Bookinfo services
#
# The names are those deploy/kubernetes and `meshctl kube-inject` use (kind: `kind load
# docker-image mesh-sidecar:0.1.0 mesh-bookinfo:0.1.0`).

FROM rust:1-alpine AS build
# ring's C and assembly parts.
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
# Alpine's Rust targets musl and links statically by default.
RUN cargo build --release --locked -p mesh-sidecar -p bookinfo \
 && strip target/release/mesh-sidecar target/release/bookinfo \
 && mkdir -p /out && cp target/release/mesh-sidecar target/release/bookinfo /out/

FROM scratch AS bookinfo
COPY --from=build /out/bookinfo /bookinfo
USER 1000:1000
ENTRYPOINT ["/bookinfo"]

# Last, so that a plain `docker build .` makes the sidecar.
FROM scratch AS sidecar
COPY --from=build /out/mesh-sidecar /mesh-sidecar
USER 1337:1337
EXPOSE 15000 15001 15006 15012
ENTRYPOINT ["/mesh-sidecar"]
