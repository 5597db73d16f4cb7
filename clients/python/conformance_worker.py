#!/usr/bin/env python3
"""A minimal zapfleet worker written from the protocol contract alone (README, "Wire protocol",
and Proto/zapfleet.proto), not from zapfleet's Swift code.

It joins a coordinator, takes shards like any worker, and answers each with samples it makes up
(known values, distinct per shard) instead of running the engine: the conformance test checks
that exactly those samples reach report.json and shards.hlog. It is a test of the contract, not
a simulator.

    conformance_worker.py --connect tcp://127.0.0.1:5555 --name py1 --record samples.json

Needs pyzmq, protobuf, hdrhistogram and PyYAML, and zapfleet_pb2 generated from Proto/ with
`protoc --python_out` on PYTHONPATH. Exits 0 on Stop, 3 when refused.
"""
import argparse
import base64
import json
import secrets
import socket
import sys
import time

import yaml
import zmq
from hdrh.histogram import HdrHistogram

import zapfleet_pb2 as pb

# Contract: Envelope.protocol_version of this protocol, the .proto's enum ProtocolVersion.
PROTOCOL_VERSION = pb.PROTOCOL_VERSION_CURRENT
# Contract: every histogram is lowest 1 ns, highest 1 h in ns, 3 significant digits.
LOWEST, HIGHEST, DIGITS = 1, 3_600_000_000_000, 3


def frame(**body):
    """One Envelope around one message, serialized: the only frame a worker sends."""
    envelope = pb.Envelope(protocol_version=PROTOCOL_VERSION)
    (name, message), = body.items()
    getattr(envelope, name).CopyFrom(message)
    return envelope.SerializeToString()


def samples_for(shard_id, policy_index, count):
    """Known block times for one policy's run of one shard, distinct per shard and policy."""
    return [1_000 * (shard_id + 1) + 10 * policy_index + 7 * k for k in range(count)]


def encode(values):
    """Contract: HdrHistogram V2 compressed bytes, raw (the Python library gives base64)."""
    histogram = HdrHistogram(LOWEST, HIGHEST, DIGITS)
    for value in values:
        histogram.record_value(value)
    return base64.b64decode(histogram.encode())


def result_for(assignment, samples, record):
    """A ShardResult that meets the contract: one complete PolicyResult per policy of the
    scenario, in its order, with counters the shard can produce (zeros) and one histogram."""
    scenario = yaml.safe_load(assignment.scenario_yaml)
    result = pb.ShardResult(run_id=assignment.run_id, shard_id=assignment.shard_id,
                            attempt=assignment.attempt, wall_ns=1_000_000)
    for index, policy in enumerate(scenario["policies"]):
        values = samples_for(assignment.shard_id, index, samples)
        result.policies.append(pb.PolicyResult(
            policy=policy, complete=True, wall_ns=1_000_000, counters=pb.Counters(),
            histograms=[pb.EncodedHistogram(operation="reset", projected=False, hdr_v2=encode(values))]))
        record.setdefault(str(assignment.shard_id), {})[policy] = values
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connect", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--record", required=True, help="JSON file: the samples sent, by shard and policy")
    parser.add_argument("--samples", type=int, default=5, help="samples per policy and shard")
    parser.add_argument("--memory", type=int, default=8 << 30, help="page-table budget in bytes")
    arguments = parser.parse_args()

    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    # Contract: the routing id is the worker's own, new for every process and unguessable.
    dealer.setsockopt(zmq.IDENTITY, f"{arguments.name}#{secrets.token_hex(16)}".encode())
    dealer.setsockopt(zmq.LINGER, 2000)
    dealer.connect(arguments.connect)
    hello = pb.Hello(build_version="python-conformance", host_name=socket.gethostname(), cores=1,
                     memory_budget_bytes=arguments.memory, largest_shard_bytes=0xFFFF_FFFF_FFFF_FFFF,
                     worker_name=arguments.name, role=pb.WORKER_ROLE_SIMULATOR)

    record = {}
    unacknowledged = {}  # shard id -> serialized result, until ResultAck
    interval, liveness = 1.0, 3
    welcomed = False
    last_sent = last_heard = 0.0
    dealer.send(frame(hello=hello))
    last_sent = last_heard = time.monotonic()
    while True:
        if dealer.poll(100):
            envelope = pb.Envelope()
            try:
                envelope.ParseFromString(dealer.recv())
            except Exception:
                continue  # not an envelope: drop it
            last_heard = time.monotonic()
            kind = envelope.WhichOneof("body")
            if kind == "refusal":
                print(f"refused: {envelope.refusal.reason}", file=sys.stderr)
                return 3
            if envelope.protocol_version != PROTOCOL_VERSION:
                print(f"the coordinator speaks protocol {envelope.protocol_version}", file=sys.stderr)
                return 3
            if kind == "welcome":
                welcomed = True
                interval = max(envelope.welcome.heartbeat_interval_ms, 10) / 1000
                liveness = max(envelope.welcome.heartbeat_liveness, 2)
                for payload in unacknowledged.values():  # results of this run not yet acknowledged
                    dealer.send(payload)
            elif kind == "assignment":
                result = result_for(envelope.assignment, arguments.samples, record)
                with open(arguments.record, "w") as out:
                    json.dump(record, out)
                payload = frame(result=result)
                unacknowledged[result.shard_id] = payload
                dealer.send(payload)
                last_sent = time.monotonic()
            elif kind == "result_ack":
                unacknowledged.pop(envelope.result_ack.shard_id, None)
                if envelope.result_ack.rejected:
                    print(f"result refused: {envelope.result_ack.reason}", file=sys.stderr)
            elif kind == "stop":
                print(f"stop: {envelope.stop.reason}")
                return 0
        now = time.monotonic()
        if not welcomed and now - last_sent >= interval:
            dealer.send(frame(hello=hello))  # contract: repeat hello until welcomed
            last_sent = now
        elif welcomed and now - last_sent >= interval:
            dealer.send(frame(heartbeat=pb.Heartbeat()))
            last_sent = now
        if welcomed and now - last_heard > interval * liveness:
            welcomed = False  # contract: a silent coordinator is gone; say hello again
            dealer.send(frame(hello=hello))
            last_sent = now


if __name__ == "__main__":
    sys.exit(main())
