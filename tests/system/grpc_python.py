#!/usr/bin/env python3
"""System test: Python's grpcio talks to a running suppressd without generated stubs.

Discovers the service through server reflection (grpcio-reflection speaks v1alpha), builds the
message classes from the reflected descriptors, checks health, and calls Check and CheckBatch.
Exits non-zero on the first failed expectation.

usage: grpc_python.py HOST:PORT
"""
import sys

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def expect(condition, message):
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {message}")


def main():
    target = sys.argv[1]
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=10)

    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    expect("suppressd.v1.Suppression" in services, f"reflection lists the data plane ({sorted(services)})")
    expect("grpc.health.v1.Health" in services, "reflection lists health")

    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="suppressd.v1.Suppression"), timeout=5)
    expect(status.status == health_pb2.HealthCheckResponse.SERVING, "health says SERVING")

    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName("suppressd.v1.Suppression")
    check = service.FindMethodByName("Check")
    request_class = GetMessageClass(check.input_type)
    response_class = GetMessageClass(check.output_type)
    call = channel.unary_unary(
        "/suppressd.v1.Suppression/Check",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    verdict = pool.FindEnumTypeByName("suppressd.v1.Verdict")
    reason = pool.FindEnumTypeByName("suppressd.v1.Reason")

    blocked = call(request_class(number="+12015550123"), timeout=5)
    expect(verdict.values_by_number[blocked.verdict].name == "VERDICT_BLOCK", "registry number is blocked")
    expect(
        [reason.values_by_number[r].name for r in blocked.reasons] == ["REASON_NATIONAL_REGISTRY"],
        "with reason NATIONAL_REGISTRY",
    )
    expect(blocked.normalized_number == "+12015550123", "normalised number echoed")
    expect(any(v.set == "us-dnc" and v.version > 0 for v in blocked.versions), "snapshot versions as proof")

    allowed = call(request_class(number="+12015550199"), timeout=5)
    expect(verdict.values_by_number[allowed.verdict].name == "VERDICT_ALLOW", "clean number is allowed")

    batch_method = service.FindMethodByName("CheckBatch")
    batch_request = GetMessageClass(batch_method.input_type)
    batch_response = GetMessageClass(batch_method.output_type)
    batch = channel.unary_unary(
        "/suppressd.v1.Suppression/CheckBatch",
        request_serializer=batch_request.SerializeToString,
        response_deserializer=batch_response.FromString,
    )
    answer = batch(batch_request(numbers=["+12015550123", "nonsense"], e164=[12015550199], batch_id=9), timeout=5)
    expect(answer.batch_id == 9, "batch id echoed")
    expect(list(answer.verdicts) == [2, 3, 1], f"batch verdicts BLOCK, INVALID, ALLOW ({list(answer.verdicts)})")

    try:
        call(request_class(number="+12015550123", tenant="nobody"), timeout=5)
        expect(False, "unknown tenant refused")
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.NOT_FOUND, "unknown tenant is NOT_FOUND")


if __name__ == "__main__":
    main()
