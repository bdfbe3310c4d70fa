'use strict';
// A small client of AECL's EnforcerService (proto/aecl/v1/enforcer.proto) for
// Node.js 18+: load the proto, open a plaintext, TLS or mTLS channel, start a
// task with the agent's credential, send the task token as
// `authorization: Bearer <token>` with every later call, renew it before it
// expires. No generated code: @grpc/proto-loader reads the .proto at run time.
//
// The npm packages come from the repository's .cache/node (scripts/setup.sh
// --dev, or scripts/setup-node.sh, installs the versions pinned in
// ../package.json); outside the repository they are required the usual way.

const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const REPO = path.resolve(__dirname, '..', '..', '..', '..');
const PROTO_DIR = path.join(REPO, 'proto');
const PROTO_FILE = 'aecl/v1/enforcer.proto';
const CACHE_MODULES = path.join(REPO, '.cache', 'node', 'node_modules');

class MissingModuleError extends Error {}

/** The path `name` resolves to: in .cache/node/node_modules, else the usual places (NODE_PATH, node_modules). */
function resolveModule(name) {
  for (const where of [path.join(CACHE_MODULES, name), name]) {
    try {
      return require.resolve(where);
    } catch (e) {
      if (e.code !== 'MODULE_NOT_FOUND') throw e;
    }
  }
  throw new MissingModuleError(
    `the npm package ${name} is not installed: run scripts/setup.sh --dev (or scripts/setup-node.sh) in ${REPO}`);
}

const grpc = require(resolveModule('@grpc/grpc-js'));
const protoLoaderPath = resolveModule('@grpc/proto-loader');
const protoLoader = require(protoLoaderPath);
// protobufjs is proto-loader's own dependency: required from there.
const requireFromLoader = createRequire(protoLoaderPath);
const protobuf = requireFromLoader('protobufjs');
const PROTOBUFJS_DIR = path.dirname(requireFromLoader.resolve('protobufjs/package.json'));

const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

let cached = null;
/** The aecl.v1 package: {EnforcerService, AdminService, ...}. */
function loadProto(protoDir = PROTO_DIR) {
  if (cached && cached.dir === protoDir) return cached.pkg;
  // google/protobuf/struct.proto and timestamp.proto are built into
  // protobufjs (its "common" types); its own directory is searched too.
  const includeDirs = [protoDir, PROTOBUFJS_DIR];
  const definition = protoLoader.loadSync(PROTO_FILE, { ...LOADER_OPTIONS, includeDirs });
  const pkg = grpc.loadPackageDefinition(definition).aecl.v1;
  cached = { dir: protoDir, pkg };
  return pkg;
}

// ---- google.protobuf.Struct <-> plain JavaScript values ------------------
// proto-loader hands Struct over in its wire shape:
//   {fields: {k: {stringValue | numberValue | boolValue | structValue | listValue | nullValue}}}

function toValue(v) {
  if (v === null || v === undefined) return { nullValue: 'NULL_VALUE' };
  switch (typeof v) {
    case 'string': return { stringValue: v };
    case 'boolean': return { boolValue: v };
    case 'number':
      if (!Number.isFinite(v)) throw new TypeError(`a Struct cannot hold ${v}`);
      return { numberValue: v };
    case 'object':
      if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
      return { structValue: toStruct(v) };
    default:
      throw new TypeError(`a Struct cannot hold a ${typeof v}`);
  }
}

/** A plain object -> google.protobuf.Struct. */
function toStruct(obj) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new TypeError('toStruct takes a plain object');
  }
  const fields = {};
  for (const [k, v] of Object.entries(obj)) {
    if (v !== undefined) fields[k] = toValue(v);
  }
  return { fields };
}

const KINDS = ['nullValue', 'numberValue', 'stringValue', 'boolValue', 'structValue', 'listValue'];

function fromValue(v) {
  if (!v) return null;
  const kind = v.kind || KINDS.find((k) => v[k] !== undefined && v[k] !== null);
  switch (kind) {
    case 'stringValue': return v.stringValue;
    case 'numberValue': return v.numberValue;
    case 'boolValue': return v.boolValue;
    case 'structValue': return fromStruct(v.structValue);
    case 'listValue': return ((v.listValue && v.listValue.values) || []).map(fromValue);
    default: return null; // nullValue, or no kind set
  }
}

/** A google.protobuf.Struct -> plain object (null when unset). */
function fromStruct(struct) {
  if (!struct) return null;
  const out = {};
  for (const [k, v] of Object.entries(struct.fields || {})) out[k] = fromValue(v);
  return out;
}

/** A google.protobuf.Timestamp (longs as strings) -> Date, null when unset. */
function toDate(ts) {
  if (!ts) return null;
  const seconds = Number(ts.seconds || 0);
  const nanos = Number(ts.nanos || 0);
  if (seconds === 0 && nanos === 0) return null;
  return new Date(seconds * 1000 + Math.floor(nanos / 1e6));
}

// ---- channels ----------------------------------------------------------

/**
 * Channel credentials from file paths: plaintext when none is given; TLS
 * verifying the server against `ca` (the system's roots when no `ca`); mTLS
 * when `cert` and `key` (the client's certificate and private key, PEM) are given.
 */
function channelCredentials({ ca, cert, key } = {}) {
  if (!ca && !cert && !key) return grpc.credentials.createInsecure();
  if (!cert !== !key) throw new Error('a client certificate needs both cert and key');
  const read = (f) => (f ? fs.readFileSync(f) : null);
  return grpc.credentials.createSsl(read(ca), read(key), read(cert));
}

class UnreachableError extends Error {}

/**
 * An EnforcerService client, once the channel is ready (UnreachableError after
 * timeoutMs). serverName overrides the name checked in the server's certificate.
 */
async function connect(target, { ca, cert, key, serverName, timeoutMs = 10000 } = {}) {
  const { EnforcerService } = loadProto();
  const options = serverName ? { 'grpc.ssl_target_name_override': serverName, 'grpc.default_authority': serverName } : {};
  const client = new EnforcerService(target, channelCredentials({ ca, cert, key }), options);
  try {
    await new Promise((resolve, reject) => {
      client.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve()));
    });
  } catch (e) {
    client.close();
    throw new UnreachableError(`AECL is not reachable at ${target} after ${timeoutMs / 1000}s (${e.message})`);
  }
  return client;
}

/** Call metadata carrying the task token. */
function bearer(token) {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

/** One unary call as a promise; `token` adds the bearer metadata. */
function unary(client, method, request, { token, deadlineMs = 30000 } = {}) {
  const md = token ? bearer(token) : new grpc.Metadata();
  return new Promise((resolve, reject) => {
    client[method](request, md, { deadline: Date.now() + deadlineMs }, (err, resp) => (err ? reject(err) : resolve(resp)));
  });
}

// ---- error details -------------------------------------------------------
// AECL puts a google.rpc.Status in the `grpc-status-details-bin` trailer:
// google.rpc.ErrorInfo{reason, domain: "aecl", metadata} (and BadRequest for
// INVALID_ARGUMENT). For a refused token, metadata.reason says why.

const RPC_TYPES = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: { nested: { Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } } } },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: 'string', id: 1 },
                domain: { type: 'string', id: 2 },
                metadata: { keyType: 'string', type: 'string', id: 3 },
              },
            },
          },
        },
      },
    },
  },
});

/** The ErrorInfo of a failed call ({reason, domain, metadata}), or null. */
function errorInfo(err) {
  const raw = err && err.metadata && err.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return null;
  try {
    const status = RPC_TYPES.lookupType('google.rpc.Status').decode(raw);
    for (const any of status.details || []) {
      if (any.type_url.endsWith('/google.rpc.ErrorInfo')) {
        const info = RPC_TYPES.lookupType('google.rpc.ErrorInfo').decode(any.value);
        return { reason: info.reason, domain: info.domain, metadata: { ...(info.metadata || {}) } };
      }
    }
  } catch (_) {
    // not a google.rpc.Status: no details
  }
  return null;
}

// ---- a task ---------------------------------------------------------------

/**
 * One task of one agent: StartTask with the credential, then every call with
 * the task token, renewed (RenewTaskToken) when it is within renewMarginMs of
 * token_expires_at (or within half its lifetime, for a short-lived token).
 * The token is never part of toJSON().
 */
class TaskSession {
  constructor(client, { agentId, credential = '', renewMarginMs = 60000, deadlineMs = 30000 }) {
    this.client = client;
    this.agentId = agentId;
    this.credential = credential;
    this.renewMarginMs = renewMarginMs;
    this.deadlineMs = deadlineMs;
    this.taskId = null;
    this.token = null;
    this.tokenExpiresAt = null;
    this.tokenReceivedAt = null;
    this.expiresAt = null;
  }

  _took(token, expiresAt) {
    this.token = token;
    this.tokenExpiresAt = toDate(expiresAt);
    this.tokenReceivedAt = Date.now();
  }

  async start({ declaredGoal = '', declaredActions = [] } = {}) {
    const resp = await unary(this.client, 'StartTask', {
      agent_id: this.agentId, declared_goal: declaredGoal, declared_actions: declaredActions, credential: this.credential,
    }, { deadlineMs: this.deadlineMs });
    this.taskId = resp.task_id;
    this._took(resp.token, resp.token_expires_at);
    this.expiresAt = toDate(resp.expires_at);
    return resp;
  }

  async renew() {
    const resp = await unary(this.client, 'RenewTaskToken', {
      agent_id: this.agentId, task_id: this.taskId, credential: this.credential,
    }, { deadlineMs: this.deadlineMs });
    this._took(resp.token, resp.token_expires_at);
    return resp;
  }

  /** The token for the next call, renewed first when it is about to expire. */
  async freshToken() {
    if (!this.token) throw new Error('no task: call start() first');
    if (this.tokenExpiresAt) {
      const expires = this.tokenExpiresAt.getTime();
      const margin = Math.min(this.renewMarginMs, (expires - this.tokenReceivedAt) / 2);
      if (expires - Date.now() < margin) await this.renew();
    }
    return this.token;
  }

  async call(method, request) {
    const token = await this.freshToken();
    return unary(this.client, method, { task_id: this.taskId, agent_id: this.agentId, ...request },
      { token, deadlineMs: this.deadlineMs });
  }

  /** Decide(name, args, context): the dry run. */
  decide(name, args = {}, context = undefined) {
    return this.call('Decide', { call: { name, args: toStruct(args) }, context });
  }

  /** Execute(name, args, context): runs the tool when the policy approves. */
  execute(name, args = {}, context = undefined, idempotencyKey = '') {
    return this.call('Execute', { call: { name, args: toStruct(args) }, context, idempotency_key: idempotencyKey });
  }

  toJSON() {
    return { agentId: this.agentId, taskId: this.taskId, tokenExpiresAt: this.tokenExpiresAt, expiresAt: this.expiresAt };
  }
}

module.exports = {
  REPO, PROTO_DIR, grpc, status: grpc.status, loadProto, toStruct, fromStruct, toValue, fromValue, toDate,
  channelCredentials, connect, bearer, unary, errorInfo, TaskSession, UnreachableError, MissingModuleError,
};
