"""Request decoding that never raises.

grpc's generated registration parses a request body with ``FromString`` and, when the
bytes are not a valid protobuf of the method's request type, answers UNKNOWN and logs a
traceback per request. Here the deserializers hand the handler an ``Undecodable`` marker
instead, which the handler's guard (``guard.Guard``) answers INVALID_ARGUMENT like any
other bad input. Used for the FetalFlex service (``servicer.add_to_server``) and grpc's
standard health service (``add_health_to_server``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from fetalflex.errors import InvalidRequestError
from service.errors import status_for


class Undecodable:
    """A request body that is not a valid protobuf of the method's request type (what the
    tolerant deserializer hands the handler instead of raising)."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def error(self) -> InvalidRequestError:
        return InvalidRequestError("request", f"not a valid {self.type_name} protobuf")


def tolerant_deserializer(message: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    """``message.FromString`` that never raises: bad bytes give an ``Undecodable``."""
    bad = Undecodable(message.DESCRIPTOR.full_name)

    def deserialize(data: bytes) -> Message | Undecodable:
        try:
            return message.FromString(data)
        except Exception:  # noqa: BLE001 - whatever the parser says, the bytes are bad
            return bad

    return deserialize


def tolerant_handlers(service: ServiceDescriptor, implementation: Callable[[str], Any]
                      ) -> dict[str, grpc.RpcMethodHandler]:
    """Handlers for ``service``'s methods (``implementation(name)`` serves each), made from
    the proto's service descriptor as the generated ``add_*_to_server`` makes them, but with
    tolerant deserializers."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for m in service.methods:
        if m.client_streaming:
            raise TypeError(f"{m.name}: client-streaming methods are not supported here")
        request = message_factory.GetMessageClass(m.input_type)
        response = message_factory.GetMessageClass(m.output_type)
        make = (grpc.unary_stream_rpc_method_handler if m.server_streaming
                else grpc.unary_unary_rpc_method_handler)
        handlers[m.name] = make(implementation(m.name),
                                request_deserializer=tolerant_deserializer(request),
                                response_serializer=response.SerializeToString)
    return handlers


def add_health_to_server(health: Any, server: grpc.aio.Server) -> None:
    """Register grpc's standard health servicer (``Check``, ``List``, ``Watch``) with tolerant
    deserializers: bytes that are not a valid request get INVALID_ARGUMENT, not UNKNOWN and
    a traceback (the generated ``add_HealthServicer_to_server`` raises in the parser)."""
    from grpc_health.v1 import health_pb2

    def guarded(name: str) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]:
        method = getattr(health, name)

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, Undecodable):
                st = status_for(request.error())
                await context.abort(st.code, st.message)
            return await method(request, context)
        return call

    # The stubs type the generated module's descriptor as upb's class (the same object).
    service = cast(ServiceDescriptor, health_pb2.DESCRIPTOR.services_by_name["Health"])
    handlers = tolerant_handlers(service, guarded)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),))
