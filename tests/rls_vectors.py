"""Vectors for the rate limit service codec (filters/rate-limit/src/rls.rs),
serialized by an independent implementation: Python's protobuf runtime,
with the messages of envoy/service/ratelimit/v3/rls.proto declared here by
field number (only the fields the filter uses, plus some it must skip).
Writes filters/rate-limit/testdata/rls_vectors.json.
Run: python -m venv /tmp/pb && /tmp/pb/bin/pip install protobuf && /tmp/pb/bin/python tests/rls_vectors.py"""
import json
import os

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

fd = descriptor_pb2.FileDescriptorProto(name="rls_subset.proto", package="rls", syntax="proto3")


def message(name, fields):
    m = fd.message_type.add(name=name)
    for number, fname, ftype, label, type_name in fields:
        f = m.field.add(name=fname, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = type_name
    return m


OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
message("Entry", [(1, "key", F.TYPE_STRING, OPT, None), (2, "value", F.TYPE_STRING, OPT, None)])
message("Descriptor", [(1, "entries", F.TYPE_MESSAGE, REP, ".rls.Entry")])
message("Request", [
    (1, "domain", F.TYPE_STRING, OPT, None),
    (2, "descriptors", F.TYPE_MESSAGE, REP, ".rls.Descriptor"),
    (3, "hits_addend", F.TYPE_UINT32, OPT, None),
])
message("Duration", [(1, "seconds", F.TYPE_INT64, OPT, None), (2, "nanos", F.TYPE_INT32, OPT, None)])
message("HeaderValue", [
    (1, "key", F.TYPE_STRING, OPT, None),
    (2, "value", F.TYPE_STRING, OPT, None),
])
message("RateLimit", [
    (3, "name", F.TYPE_STRING, OPT, None),
    (1, "requests_per_unit", F.TYPE_UINT32, OPT, None),
    (2, "unit", F.TYPE_INT32, OPT, None),  # the enum's wire form
])
message("Quota", [(1, "requests", F.TYPE_UINT32, OPT, None), (4, "id", F.TYPE_STRING, OPT, None)])
message("Status", [
    (1, "code", F.TYPE_INT32, OPT, None),
    (2, "current_limit", F.TYPE_MESSAGE, OPT, ".rls.RateLimit"),
    (3, "limit_remaining", F.TYPE_UINT32, OPT, None),
    (4, "duration_until_reset", F.TYPE_MESSAGE, OPT, ".rls.Duration"),
    (5, "quota", F.TYPE_MESSAGE, OPT, ".rls.Quota"),
])
message("Response", [
    (1, "overall_code", F.TYPE_INT32, OPT, None),
    (2, "statuses", F.TYPE_MESSAGE, REP, ".rls.Status"),
    (3, "response_headers_to_add", F.TYPE_MESSAGE, REP, ".rls.HeaderValue"),
    (4, "request_headers_to_add", F.TYPE_MESSAGE, REP, ".rls.HeaderValue"),
    (5, "raw_body", F.TYPE_BYTES, OPT, None),
    (7, "quota", F.TYPE_MESSAGE, OPT, ".rls.Quota"),
])

pool = descriptor_pool.DescriptorPool()
pool.Add(fd)
cls = {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"rls.{name}"))
       for name in ["Request", "Response"]}

requests = []
for name, domain, descriptors, hits in [
    ("one tenant entry", "meshware", [[("tenant", "acme")]], 0),
    ("tenant and client, two descriptors, hits 3", "acme",
     [[("tenant", "acme"), ("client", "203.0.113.7")], [("route", "/orders"), ("method", "POST")]], 3),
    ("utf-8 and an empty value", "d", [[("user", "zoë"), ("tier", "")]], 1000),
]:
    m = cls["Request"](domain=domain, hits_addend=hits)
    for d in descriptors:
        dm = m.descriptors.add()
        for k, v in d:
            dm.entries.add(key=k, value=v)
    requests.append({"name": name, "domain": domain, "descriptors": [[list(e) for e in d] for d in descriptors],
                     "hits_addend": hits, "wire": m.SerializeToString().hex()})

UNIT_S = {1: 1, 2: 60, 3: 3600, 4: 86400}
CODE = {0: "UNKNOWN", 1: "OK", 2: "OVER_LIMIT"}
responses = []
for name, overall, statuses, resp_h, req_h, extras in [
    ("over limit with a limit, reset and headers", 2,
     [(2, ("per-tenant", 100, 2), 0, (12, 500_000_000)), (1, None, 41, None)],
     [("x-ratelimit-by", "limitador")], [("x-global-checked", "1")], True),
    ("ok, no statuses", 1, [], [], [], False),
    ("unknown code, hour limit, remaining large", 0, [(1, ("hourly", 5000, 3), 4999, (3599, 0))], [], [], False),
]:
    m = cls["Response"](overall_code=overall)
    fields_statuses = []
    for code, limit, remaining, reset in statuses:
        s = m.statuses.add(code=code, limit_remaining=remaining)
        f = {"code": CODE[code], "limit_remaining": remaining}
        if limit:
            s.current_limit.name, s.current_limit.requests_per_unit, s.current_limit.unit = limit
            f["current_limit"] = {"name": limit[0], "requests_per_unit": limit[1], "unit_s": UNIT_S[limit[2]]}
        if reset:
            s.duration_until_reset.seconds, s.duration_until_reset.nanos = reset
            f["until_reset_ms"] = reset[0] * 1000 + reset[1] // 1_000_000
        if extras:
            s.quota.requests, s.quota.id = 7, "q1"  # a field the filter skips
        fields_statuses.append(f)
    for k, v in resp_h:
        m.response_headers_to_add.add(key=k, value=v)
    for k, v in req_h:
        m.request_headers_to_add.add(key=k, value=v)
    if extras:
        m.raw_body = b"{\"skipped\": true}"
        m.quota.requests = 9
    responses.append({"name": name, "wire": m.SerializeToString().hex(), "fields": {
        "overall_code": CODE[overall], "statuses": fields_statuses,
        "response_headers_to_add": [list(h) for h in resp_h], "request_headers_to_add": [list(h) for h in req_h]}})

path = os.path.join(root, "filters", "rate-limit", "testdata", "rls_vectors.json")
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w") as f:
    json.dump({"generator": "tests/rls_vectors.py (Python protobuf)", "requests": requests, "responses": responses},
              f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"wrote {len(requests)} requests and {len(responses)} responses to {os.path.relpath(path, root)}")
