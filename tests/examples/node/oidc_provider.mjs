// A real OpenID provider (panva/node-oidc-provider 9.x) for integration
// tests, on loopback only, with dynamic client registration (RFC 7591) and
// registration management (RFC 7592) on, plus a few test-only control
// endpoints under /__test/. tests/common/oidc.rs starts and drives it.
//
// Environment:
//   OIDC_PORT                  port on 127.0.0.1 (0 or unset: a free one)
//   OIDC_INITIAL_ACCESS_TOKEN  the bearer token a registration must carry
//                              (required)
//   OIDC_VERBOSE               if set, oidc-provider's notices and warnings
//                              go to stderr (by default they are dropped)
//
// Once listening it prints one line to stdout, {"issuer":"http://127.0.0.1:<port>"},
// and nothing else ever; SIGTERM/SIGINT end it with status 0. All state is in
// memory and lost when the process ends.
//
// Behaviour worth knowing:
// - The issuer is plain http. The registration endpoint is
//   <issuer>/reg, a client's registration_client_uri is <issuer>/reg/<id>.
// - A registration whose body has a string `software_id` gets the client id
//   `tenantd-<software_id>`: registering the same software_id again
//   overwrites that client (new client_secret, new registration access
//   token; the earlier registration access token stays valid too). Without
//   a software_id the id is random.
// - `software_id` and `software_version` are kept in the client's metadata
//   (oidc-provider drops unknown metadata otherwise).
// - `client_credentials` is added to the grant_types of every registered
//   client that has a secret or keys (token_endpoint_auth_method other than
//   "none"), so a client registered with only authorization_code +
//   refresh_token can prove its secret at the token endpoint with
//   grant_type=client_credentials. The registration response (and GET)
//   shows the added grant type.
// - token_endpoint_auth_method may be client_secret_basic, client_secret_post,
//   private_key_jwt or none.
// - jwks_uri is NOT fetched at registration; oidc-provider fetches it
//   lazily, when it first needs the client's keys (e.g. a private_key_jwt
//   assertion at the token endpoint). oidc-provider's SSRF guard, which
//   refuses loopback and private addresses, is turned off here so that a
//   test may serve the JWKS on 127.0.0.1.
//
// Test control endpoints (not part of oidc-provider):
//   GET  /__test/clients  JSON array of all stored client metadata
//   POST /__test/hold     the next POST to /reg is processed (and the client
//                         stored) but its response is held back
//   GET  /__test/held     {"held": true|false}: a response is being held now
//   POST /__test/release  sends the held response (dropped if the client
//                         has gone)
//   POST /__test/fail?status=503&count=2[&retry_after=1][&error=..&error_description=..]
//                         the next `count` requests to /reg or /reg/* (any
//                         method) are answered with `status` and
//                         {"error":"temporarily_unavailable","error_description":"injected failure"}
//                         without reaching the provider
//   POST /__test/reset    clears hold and failure injection
// Each answers 200 with a JSON body.

import crypto from 'node:crypto';
import http from 'node:http';

const verbose = !!process.env.OIDC_VERBOSE;
// oidc-provider prints notices with console.info (stdout) and warnings with
// console.warn; stdout must carry only the ready line.
{
  const toStderr = (...args) => { if (verbose) console.error(...args); };
  console.info = toStderr;
  console.log = toStderr;
  console.warn = toStderr;
  console.debug = toStderr;
}

const initialAccessToken = process.env.OIDC_INITIAL_ACCESS_TOKEN;
if (!initialAccessToken) {
  process.stderr.write('oidc_provider.mjs: OIDC_INITIAL_ACCESS_TOKEN is required\n');
  process.exit(2);
}
const requestedPort = Number.parseInt(process.env.OIDC_PORT || '0', 10);
if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
  process.stderr.write(`oidc_provider.mjs: bad OIDC_PORT ${process.env.OIDC_PORT}\n`);
  process.exit(2);
}

// Imported after console is redirected: the module warns at load time.
const { default: Provider, errors } = await import('oidc-provider');

// --- storage -------------------------------------------------------------

/** One Map per model name: id -> { payload, expiresAt (ms) | undefined }. */
const stores = new Map();

function storeFor(model) {
  let store = stores.get(model);
  if (!store) {
    store = new Map();
    stores.set(model, store);
  }
  return store;
}

function live(entry) {
  return entry && (entry.expiresAt === undefined || entry.expiresAt > Date.now());
}

class MemoryAdapter {
  constructor(model) {
    this.model = model;
    this.store = storeFor(model);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    this.store.set(id, { payload: structuredClone(payload), expiresAt });
  }

  async find(id) {
    const entry = this.store.get(id);
    if (!live(entry)) {
      this.store.delete(id);
      return undefined;
    }
    return structuredClone(entry.payload);
  }

  async findByUid(uid) {
    for (const [id, entry] of this.store) {
      if (live(entry) && entry.payload.uid === uid) return this.find(id);
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [id, entry] of this.store) {
      if (live(entry) && entry.payload.userCode === userCode) return this.find(id);
    }
    return undefined;
  }

  async consume(id) {
    const entry = this.store.get(id);
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    this.store.delete(id);
  }

  async revokeByGrantId(grantId) {
    for (const [id, entry] of this.store) {
      if (entry.payload.grantId === grantId) this.store.delete(id);
    }
  }

  /** All live payloads (for /__test/clients). */
  all() {
    return [...this.store.values()].filter(live).map((e) => structuredClone(e.payload));
  }
}

// --- provider ------------------------------------------------------------

const server = http.createServer();
server.keepAliveTimeout = 5000;

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(requestedPort, '127.0.0.1', () => {
    server.off('error', reject);
    resolve();
  });
});

const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  adapter: MemoryAdapter,
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'],
  // Loopback JWKS for private_key_jwt tests: no SSRF guard (its dispatcher).
  fetch: (url, options) => {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
  extraClientMetadata: {
    properties: ['software_id', 'software_version'],
    validator(ctx, key, value, metadata) {
      if (value !== undefined && typeof value !== 'string') {
        throw new errors.InvalidClientMetadata(`${key} must be a string`);
      }
      if (
        key === 'software_id'
        && metadata.token_endpoint_auth_method !== 'none'
        && Array.isArray(metadata.grant_types)
        && !metadata.grant_types.includes('client_credentials')
      ) {
        metadata.grant_types = [...metadata.grant_types, 'client_credentials'];
      }
    },
  },
  features: {
    clientCredentials: { enabled: true },
    registration: {
      enabled: true,
      initialAccessToken,
      issueRegistrationAccessToken: true,
      idFactory(ctx) {
        const softwareId = ctx.oidc.body?.software_id;
        if (typeof softwareId === 'string' && softwareId.length) {
          return `tenantd-${softwareId}`;
        }
        return crypto.randomUUID();
      },
    },
    registrationManagement: { enabled: true, rotateRegistrationAccessToken: false },
  },
});
// Errors are answered to the client already; keep stderr quiet.
provider.on('server_error', (ctx, err) => {
  process.stderr.write(`oidc_provider.mjs: server_error ${ctx.method} ${ctx.path}: ${err?.stack || err}\n`);
});

const callback = provider.callback();

// --- test control --------------------------------------------------------

let holdNext = false;
/** The held response: { res, calls: [[method, args]] } once it is complete. */
let held = null;
let failure = null; // { status, remaining, body, retryAfter }

function isRegistrationPath(pathname) {
  return pathname === '/reg' || pathname.startsWith('/reg/');
}

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

/** Buffers what the provider does to `res` until `release()`. */
function holdResponse(res) {
  const calls = [];
  const original = {};
  for (const method of ['writeHead', 'write', 'end', 'flushHeaders']) {
    original[method] = res[method];
    res[method] = function buffered(...args) {
      calls.push([method, args]);
      if (method === 'end') {
        const cb = args.find((a) => typeof a === 'function');
        held = {
          release() {
            for (const m of Object.keys(original)) res[m] = original[m];
            if (res.destroyed || res.socket?.destroyed) return;
            res.on('error', () => {});
            try {
              for (const [m, a] of calls) original[m].apply(res, a);
            } catch (err) {
              process.stderr.write(`oidc_provider.mjs: releasing held response: ${err}\n`);
            }
          },
        };
        if (cb) cb();
      }
      return method === 'write' ? true : res;
    };
  }
}

function control(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'GET /__test/clients':
      return sendJson(res, 200, new MemoryAdapter('Client').all());
    case 'POST /__test/hold':
      holdNext = true;
      return sendJson(res, 200, { hold: true });
    case 'GET /__test/held':
      return sendJson(res, 200, { held: held !== null });
    case 'POST /__test/release': {
      const had = held !== null;
      const h = held;
      held = null;
      holdNext = false;
      if (h) h.release();
      return sendJson(res, 200, { released: had });
    }
    case 'POST /__test/fail': {
      const status = Number.parseInt(url.searchParams.get('status') || '503', 10);
      const count = Number.parseInt(url.searchParams.get('count') || '1', 10);
      if (!(status >= 100 && status <= 599) || !(count >= 0)) {
        return sendJson(res, 400, { error: 'bad status or count' });
      }
      failure = count === 0 ? null : {
        status,
        remaining: count,
        retryAfter: url.searchParams.get('retry_after'),
        body: {
          error: url.searchParams.get('error') || 'temporarily_unavailable',
          error_description: url.searchParams.get('error_description') || 'injected failure',
        },
      };
      return sendJson(res, 200, { status, count });
    }
    case 'POST /__test/reset':
      holdNext = false;
      failure = null;
      if (held) { const h = held; held = null; h.release(); }
      return sendJson(res, 200, { reset: true });
    default:
      return sendJson(res, 404, { error: 'no such test endpoint' });
  }
}

server.on('request', (req, res) => {
  let url;
  try {
    url = new URL(req.url, issuer);
  } catch {
    return sendJson(res, 400, { error: 'invalid_request' });
  }
  if (url.pathname.startsWith('/__test/')) {
    req.resume();
    return control(req, res, url);
  }
  if (isRegistrationPath(url.pathname)) {
    if (failure && failure.remaining > 0) {
      failure.remaining -= 1;
      const { status, body, retryAfter } = failure;
      if (failure.remaining === 0) failure = null;
      req.resume();
      return sendJson(res, status, body, retryAfter ? { 'retry-after': retryAfter } : {});
    }
    if (holdNext && req.method === 'POST' && url.pathname === '/reg') {
      holdNext = false;
      holdResponse(res);
    }
  }
  return callback(req, res);
});

// --- lifecycle -----------------------------------------------------------

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

process.stdout.write(`${JSON.stringify({ issuer })}\n`);
