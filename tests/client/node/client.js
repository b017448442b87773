// A Node.js client of idlink: Link one record, then Resolve one of its
// contacts, and print both answers as one JSON object on stdout.
//
//   node client.js TARGET TOKEN [ACCOUNT]
//
// The protos are read from the repository's protos/ folder; the well-known
// types (google/protobuf/*.proto) from IDLINK_WELL_KNOWN_PROTOS, or else from
// the _proto folder of Python's grpc_tools ($PYTHON, default python3); the
// googleapis protos the service protos import (google/api/annotations.proto)
// from IDLINK_GOOGLEAPIS_PROTOS, or else from Python's googleapis-common-protos,
// the folder setup.py gives protoc.
'use strict';

const path = require('path');
const { execFileSync } = require('child_process');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const [target, token, account = 'node-demo'] = process.argv.slice(2);
if (!target) {
  console.error('usage: node client.js TARGET TOKEN [ACCOUNT]');
  process.exit(2);
}
const wellKnown = process.env.IDLINK_WELL_KNOWN_PROTOS || execFileSync(
  process.env.PYTHON || 'python3',
  ['-c', "import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), '_proto'))"],
  { encoding: 'utf8' },
).trim();

const googleapis = process.env.IDLINK_GOOGLEAPIS_PROTOS || execFileSync(
  process.env.PYTHON || 'python3',
  ['-c', 'import pathlib; from google.api import annotations_pb2; '
    + 'print(pathlib.Path(annotations_pb2.__file__).parents[2])'],
  { encoding: 'utf8' },
).trim();

const protos = path.resolve(__dirname, '..', '..', '..', 'protos');
const definition = protoLoader.loadSync('idlink/v1/identity.proto', {
  includeDirs: [protos, wellKnown, googleapis],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
});
const idlink = grpc.loadPackageDefinition(definition).idlink.v1;
const client = new idlink.IdentityService(target, grpc.credentials.createInsecure());

function metadata() {
  const md = new grpc.Metadata();
  if (token) md.set('authorization', `Bearer ${token}`);
  return md;
}

function call(method, request) {
  const deadline = new Date(Date.now() + 10000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata(), { deadline }, (error, answer) =>
      error ? reject(error) : resolve(answer));
  });
}

async function main() {
  const link = await call('Link', {
    account,
    source: 'node',
    record_id: 'n-1',
    contacts: [
      { type: 'phone', value: '+1 (555) 010-2030' },
      { type: 'email', value: 'Node.User@Example.com' },
    ],
    observed_at: { seconds: 1714555800, nanos: 0 },
  });
  const resolve = await call('Resolve', {
    account,
    contact: { type: 'email', value: 'node.user@example.com' },
  });
  process.stdout.write(JSON.stringify({ link, resolve }) + '\n');
}

// The google.rpc.Status of a failed call, read the standard way: the
// grpc-status-details-bin trailer, with its ErrorInfo reason (AIP-193).
function errorReason(error) {
  const raw = error.metadata && error.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return '';
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    for (const dir of [googleapis, wellKnown]) {
      const candidate = path.join(dir, target);
      if (require('fs').existsSync(candidate)) return candidate;
    }
    return target;
  };
  root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
  const status = root.lookupType('google.rpc.Status').decode(raw);
  const ErrorInfo = root.lookupType('google.rpc.ErrorInfo');
  for (const detail of status.details) {
    if (detail.type_url.endsWith('/google.rpc.ErrorInfo')) {
      return ErrorInfo.decode(detail.value).reason;
    }
  }
  return '';
}

main()
  .catch((error) => {
    const reason = errorReason(error);
    console.error(
      `idlink node client: ${error.code} ${reason ? `${reason}: ` : ''}`
      + `${error.details || error.message}`,
    );
    process.exitCode = 1;
  })
  .finally(() => client.close());
