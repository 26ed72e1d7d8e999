"""``fetalflex health``: gRPC health check (exit 0 when SERVING)."""

from __future__ import annotations

import argparse

from fetalflex.cli.args import Subcommands
from fetalflex.cli_common import connection_args


def register(sub: Subcommands) -> None:
    p = sub.add_parser("health", help="gRPC health check (exit 0 when SERVING); the API port "
                                      "with its TLS options, or the plaintext health port")
    connection_args(p, token=False)
    p.add_argument("--service", default="")
    p.add_argument("--timeout", type=float, default=3.0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from service.client import channel_from_args

    try:
        with channel_from_args(args) as ch:
            # types-grpcio-health-checking declares HealthStub without its methods
            r = health_pb2_grpc.HealthStub(ch).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"unhealthy: {exc.code().name}: {exc.details()}")
        return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
    print(name)
    return 0 if r.status == health_pb2.HealthCheckResponse.SERVING else 1
