// `make profile-vm`: runs a proxy-wasm module's request path in Node's V8
// under a stand-in host, so that V8's sampling profiler can name the
// module's functions (Envoy's V8 cannot: its build is stripped and takes no
// flags). The host does the least each call needs: header maps as lists,
// shared data with CAS, properties from a table, metrics and logs dropped.
// Its own time shows as JavaScript frames; report.py counts only the wasm
// frames. The figures are relative: which functions of the module the
// request spends its time in, not what Envoy pays.
//
//   node --cpu-prof host.cjs <module.wasm> <folder with profile.json and
//   request.json (BENCH_WRITE_PROFILE)> [requests]
//
// With VMPROF_TRACE=<file> it instead writes the host calls of one request
// (after the warm-up) as JSON, with the callback each was made in and its
// arguments: the probe module replays them in Envoy (`make bench`'s
// "host calls only" row: what the suite's calls cost without its code).
'use strict';
const fs = require('fs');
const path = require('path');

const [modulePath, folder, count] = process.argv.slice(2);
const requests = parseInt(count || '30000', 10);
const config = fs.readFileSync(path.join(folder, 'profile.json'));
const request = JSON.parse(fs.readFileSync(path.join(folder, 'request.json'), 'utf8'));

// proxy-wasm ABI 0.2.1 numbers.
const OK = 0, NOT_FOUND = 1, CAS_MISMATCH = 8;
const REQUEST_HEADERS = 0, RESPONSE_HEADERS = 2, PLUGIN_CONFIGURATION = 7;
const WARN = 3;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
let exports_;
const bytes = () => new Uint8Array(exports_.memory.buffer);
const view = () => new DataView(exports_.memory.buffer);
const text = (ptr, len) => decoder.decode(bytes().subarray(ptr, ptr + len));

// Hands `data` to the module the way hosts do: memory it allocates, then
// the address and length written where the module asked.
function give(data, ptrAt, lenAt) {
  let ptr = 0;
  if (data.length > 0) {
    ptr = exports_.proxy_on_memory_allocate(data.length);
    bytes().set(data, ptr);
  }
  view().setUint32(ptrAt, ptr, true);
  view().setUint32(lenAt, data.length, true);
}

// proxy-wasm's serialized map: count, (name length, value length) pairs,
// then each name and value followed by a NUL.
function serialize(pairs) {
  const encoded = pairs.map(([k, v]) => [encoder.encode(k), encoder.encode(v)]);
  let size = 4 + 8 * encoded.length;
  for (const [k, v] of encoded) size += k.length + v.length + 2;
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, encoded.length, true);
  let at = 4;
  for (const [k, v] of encoded) {
    dv.setUint32(at, k.length, true);
    dv.setUint32(at + 4, v.length, true);
    at += 8;
  }
  for (const [k, v] of encoded) {
    out.set(k, at);
    at += k.length + 1;
    out.set(v, at);
    at += v.length + 1;
  }
  return out;
}

const le64 = (n) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
};
const properties = new Map([
  ['source\0address', encoder.encode('10.1.2.3:45678')],
  ['response\0code', le64(200)],
  ['response\0flags', le64(0)],
  ['xds\0cluster_name', encoder.encode('local')],
  ['plugin_root_id', encoder.encode('')],
]);

let maps = {};
const shared = new Map();
let nextCas = 1;
let nextMetric = 1;
let nowNs = BigInt(Date.now()) * 1000000n;

function find(map, name) {
  return (maps[map] || []).findIndex(([k]) => k === name);
}

const env = {
  // Warnings and errors reach stderr: a rejected profile says why.
  proxy_log: (level, p, l) => {
    if (level >= WARN) console.error(decoder.decode(bytes().subarray(p, p + l)));
    return OK;
  },
  proxy_get_log_level: (at) => { view().setUint32(at, WARN, true); return OK; },
  proxy_get_current_time_nanoseconds: (at) => { view().setBigUint64(at, nowNs, true); return OK; },
  proxy_set_tick_period_milliseconds: () => OK,
  proxy_get_buffer_bytes: (type, _start, _max, ptrAt, lenAt) => {
    if (type !== PLUGIN_CONFIGURATION) return NOT_FOUND;
    give(config, ptrAt, lenAt);
    return OK;
  },
  proxy_get_header_map_pairs: (map, ptrAt, lenAt) => {
    give(serialize(maps[map] || []), ptrAt, lenAt);
    return OK;
  },
  proxy_get_header_map_value: (map, kp, kl, ptrAt, lenAt) => {
    const i = find(map, text(kp, kl));
    if (i < 0) return NOT_FOUND;
    give(encoder.encode(maps[map][i][1]), ptrAt, lenAt);
    return OK;
  },
  proxy_replace_header_map_value: (map, kp, kl, vp, vl) => {
    const name = text(kp, kl);
    const list = maps[map] || (maps[map] = []);
    const i = find(map, name);
    if (i >= 0) list[i][1] = text(vp, vl);
    else list.push([name, text(vp, vl)]);
    return OK;
  },
  proxy_add_header_map_value: (map, kp, kl, vp, vl) => {
    (maps[map] || (maps[map] = [])).push([text(kp, kl), text(vp, vl)]);
    return OK;
  },
  proxy_remove_header_map_value: (map, kp, kl) => {
    const name = text(kp, kl);
    maps[map] = (maps[map] || []).filter(([k]) => k !== name);
    return OK;
  },
  proxy_get_property: (pp, pl, ptrAt, lenAt) => {
    const value = properties.get(text(pp, pl));
    if (!value) return NOT_FOUND;
    give(value, ptrAt, lenAt);
    return OK;
  },
  proxy_set_property: () => OK,
  proxy_get_shared_data: (kp, kl, ptrAt, lenAt, casAt) => {
    const entry = shared.get(text(kp, kl));
    if (!entry) return NOT_FOUND;
    give(entry.value, ptrAt, lenAt);
    view().setUint32(casAt, entry.cas, true);
    return OK;
  },
  proxy_set_shared_data: (kp, kl, vp, vl, cas) => {
    const key = text(kp, kl);
    const entry = shared.get(key);
    if (cas !== 0 && entry && entry.cas !== cas) return CAS_MISMATCH;
    shared.set(key, { value: bytes().slice(vp, vp + vl), cas: nextCas++ });
    return OK;
  },
  proxy_define_metric: (_type, _np, _nl, idAt) => { view().setUint32(idAt, nextMetric++, true); return OK; },
  proxy_call_foreign_function: (_np, _nl, _ap, _al, ptrAt, lenAt) => { give(new Uint8Array(), ptrAt, lenAt); return OK; },
  proxy_send_local_response: (status) => { throw new Error(`the module answered ${status} itself`); },
};

// The trace: the callback being run, and each host call made in it.
let phase = 'configure';
let trace = null;
const metricTypes = new Map();
const hex = (ptr, len) => Buffer.from(bytes().subarray(ptr, ptr + len)).toString('hex');
// How each traced call's arguments are read (pointer, length pairs).
const decode = {
  proxy_log: (level, p, l) => ({ level, message: text(p, l) }),
  proxy_get_header_map_pairs: (map) => ({ map }),
  proxy_get_header_map_value: (map, kp, kl) => ({ map, key: text(kp, kl) }),
  proxy_replace_header_map_value: (map, kp, kl, vp, vl) => ({ map, key: text(kp, kl), value: text(vp, vl) }),
  proxy_add_header_map_value: (map, kp, kl, vp, vl) => ({ map, key: text(kp, kl), value: text(vp, vl) }),
  proxy_remove_header_map_value: (map, kp, kl) => ({ map, key: text(kp, kl) }),
  proxy_get_property: (pp, pl) => ({ path: text(pp, pl).split('\0') }),
  proxy_set_property: (pp, pl, vp, vl) => ({ path: text(pp, pl).split('\0'), value: hex(vp, vl) }),
  proxy_get_shared_data: (kp, kl) => ({ key: text(kp, kl) }),
  proxy_set_shared_data: (kp, kl, vp, vl) => ({ key: text(kp, kl), value: hex(vp, vl) }),
  proxy_get_current_time_nanoseconds: () => ({}),
  proxy_call_foreign_function: (np, nl, ap, al) => ({ name: text(np, nl), argument: hex(ap, al) }),
  proxy_increment_metric: (id, delta) => ({ metric: metricTypes.get(id), delta: Number(delta) }),
  proxy_record_metric: (id, value) => ({ metric: metricTypes.get(id), value: Number(value) }),
  random_get: (_ptr, len) => ({ length: len }),
};
function traced(name, f) {
  return (...args) => {
    if (trace) {
      const read = decode[name];
      // A call the probe could not replay is written as such: the bench
      // refuses the trace rather than measure less than the module does.
      trace.push({ on: phase, call: name, ...(read ? read(...args) : { unknown: true }) });
    }
    return f(...args);
  };
}
env.proxy_define_metric = ((define) => (type, np, nl, idAt) => {
  const status = define(type, np, nl, idAt);
  metricTypes.set(view().getUint32(idAt, true), type);
  return status;
})(env.proxy_define_metric);

const wasmModule = new WebAssembly.Module(fs.readFileSync(modulePath));
const imports = {};
for (const { module: from, name } of WebAssembly.Module.imports(wasmModule)) {
  imports[from] = imports[from] || {};
  // Anything else (metrics, effective context, WASI's environment): done.
  imports[from][name] = traced(name, env[name] || (() => OK));
}
// The VM's environment as Envoy gives it (host_env_keys): the demo's
// secrets, which the profile names ({"env": "NAME"}).
const environ = fs.readFileSync(path.join(__dirname, '../../examples/demo.env'), 'utf8')
  .split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#') && l.includes('='))
  .map((l) => encoder.encode(l + '\0'));
imports.wasi_snapshot_preview1.environ_sizes_get = traced('environ_sizes_get', (countAt, sizeAt) => {
  view().setUint32(countAt, environ.length, true);
  view().setUint32(sizeAt, environ.reduce((n, e) => n + e.length, 0), true);
  return OK;
});
imports.wasi_snapshot_preview1.environ_get = traced('environ_get', (listAt, bufAt) => {
  let at = bufAt;
  environ.forEach((e, i) => {
    view().setUint32(listAt + 4 * i, at, true);
    bytes().set(e, at);
    at += e.length;
  });
  return OK;
});
imports.wasi_snapshot_preview1.random_get = traced('random_get', (ptr, len) => {
  const b = bytes();
  for (let i = 0; i < len; i++) b[ptr + i] = (Math.random() * 256) | 0;
  return OK;
});
exports_ = new WebAssembly.Instance(wasmModule, imports).exports;
if (exports_._initialize) exports_._initialize();

const ROOT = 1;
exports_.proxy_on_context_create(ROOT, 0);
exports_.proxy_on_vm_start(ROOT, 0);
if (!exports_.proxy_on_configure(ROOT, config.length)) {
  console.error('the module rejected the profile');
  process.exit(1);
}

// One request through every callback Envoy makes for it.
function exchange(id) {
  maps = {
    [REQUEST_HEADERS]: request.headers.map(([k, v]) => [k, v]),
    [RESPONSE_HEADERS]: request.response_headers.map(([k, v]) => [k, v]),
  };
  phase = 'context_create';
  exports_.proxy_on_context_create(id, ROOT);
  phase = 'request_headers';
  exports_.proxy_on_request_headers(id, maps[REQUEST_HEADERS].length, 1);
  phase = 'response_headers';
  exports_.proxy_on_response_headers(id, maps[RESPONSE_HEADERS].length, 0);
  phase = 'response_body';
  exports_.proxy_on_response_body(id, 3, 1);
  phase = 'log';
  exports_.proxy_on_log(id);
  phase = 'done';
  exports_.proxy_on_done(id);
  phase = 'delete';
  exports_.proxy_on_delete(id);
  phase = 'between';
}

let id = ROOT + 1;
for (let i = 0; i < 2000; i++) exchange(id++);
if (process.env.VMPROF_TRACE) {
  trace = [];
  nowNs += 100000n;
  exchange(id++);
  fs.writeFileSync(process.env.VMPROF_TRACE, JSON.stringify(trace, null, 1) + '\n');
  console.error(`${trace.length} host calls in one request -> ${process.env.VMPROF_TRACE}`);
  process.exit(0);
}
const started = process.hrtime.bigint();
for (let i = 0; i < requests; i++) {
  nowNs += 100000n; // 10,000 requests per second
  exchange(id++);
  if (i % 1000 === 999) exports_.proxy_on_tick(ROOT);
}
const us = Number(process.hrtime.bigint() - started) / requests / 1000;
console.error(`${requests} requests, ${us.toFixed(1)} µs each (module and stand-in host)`);
console.error('response headers of the last:', JSON.stringify(maps[RESPONSE_HEADERS]));
