// k6 script for scripts/bench: every VU sends one request at a time on its own connection
// (closed loop) to one target and, when the run is over, k6 prints one machine-readable
// line that scripts/bench parses, with the keys of post_json.lua's:
//
//   BENCH_RESULT {"requests": ..., "responses_2xx": ..., "latency_us": {...}, ...}
//
// Usage: k6 run --vus N --duration 10s -e MODE=http|grpc -e TARGET=... -e BODY=FILE
//        [-e HEADERS='{"Name": "value"}'] [-e PROTO_DIR=protos -e METHOD=pkg.Service/Method]
//        k6_load.js
// MODE=http POSTs the bytes of BODY to the URL TARGET with HEADERS; MODE=grpc invokes METHOD
// on TARGET (host:port, plaintext) with BODY, the request as protobuf JSON, using the .proto
// files of PROTO_DIR. Latencies cover every answer, OK or not; transport errors are counted
// apart and have none. A VU logs its first failure on stderr.
import http from 'k6/http';
import grpc from 'k6/net/grpc';
import { Counter } from 'k6/metrics';

const GRPC = __ENV.MODE === 'grpc';
const body = GRPC ? JSON.parse(open(__ENV.BODY)) : open(__ENV.BODY, 'b');
const params = { headers: JSON.parse(__ENV.HEADERS || '{}'), responseType: 'none',
                 timeout: '10s' };
const client = GRPC ? new grpc.Client() : null;
if (GRPC) {
  client.load([__ENV.PROTO_DIR], 'grpc_service.proto');
}

const ok = new Counter('responses_2xx');
const other = new Counter('responses_other');
const transportErrors = new Counter('transport_errors');
let connected = false;
let reported = false;

export const options = {
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(99)', 'p(99.9)'],
};

function report(what) {
  if (!reported) {
    reported = true;
    console.error(`VU ${__VU}: ${what}`);
  }
}

export default function () {
  if (!GRPC) {
    const r = http.post(__ENV.TARGET, body, params);
    if (r.status >= 200 && r.status < 300) {
      ok.add(1);
    } else if (r.status === 0) {
      transportErrors.add(1);
      report(r.error);
    } else {
      other.add(1);
      report(`HTTP ${r.status}`);
    }
    return;
  }
  try {
    if (!connected) {
      client.connect(__ENV.TARGET, { plaintext: true, timeout: '10s' });
      connected = true;
    }
    const r = client.invoke(__ENV.METHOD, body, { timeout: '10s' });
    if (r.status === grpc.StatusOK) {
      ok.add(1);
    } else {
      other.add(1);
      report(`gRPC status ${r.status}: ${JSON.stringify(r.error)}`);
    }
  } catch (e) {
    transportErrors.add(1);
    connected = false;
    report(String(e));
  }
}

export function handleSummary(data) {
  const m = data.metrics;
  const count = (name) => (m[name] ? m[name].values.count : 0);
  const trend = m[GRPC ? 'grpc_req_duration' : 'http_req_duration'];
  const v = trend ? trend.values : {};
  const us = (key) => 1000 * (v[key] || 0);
  const good = count('responses_2xx');
  const bad = count('responses_other');
  const result = {
    duration_us: Math.round(1000 * data.state.testRunDurationMs),
    requests: good + bad,
    bytes: count('data_received'),
    responses_2xx: good,
    responses_other: bad,
    statuses: bad ? { ok: good, 'not ok': bad } : { ok: good },
    errors: { transport: count('transport_errors') },
    latency_us: { min: us('min'), mean: us('avg'), max: us('max'), p50: us('med'),
                  p90: us('p(90)'), p99: us('p(99)'), p999: us('p(99.9)') },
  };
  return { stdout: `BENCH_RESULT ${JSON.stringify(result)}\n` };
}
