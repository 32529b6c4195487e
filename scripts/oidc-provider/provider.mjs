// A local OpenID Connect provider for Tollgate's integration tests, built on `oidc-provider`.
//
//   node provider.mjs [--config FILE] [--port N] [--host H] [--alg RS256[,ES256,EdDSA]]
//                     [--jwks FILE] [--access-token-ttl S] [--id-token-ttl S]
//                     [--refresh-token-ttl S] [--web-redirect-uri URI]...
//   node provider.mjs --generate-jwks RS256[,ES256,EdDSA]     prints a private JWKS and exits
//
// Prints `listening <issuer>` on stdout once it serves requests; the issuer is
// `http://<host>:<port>` (port 0 picks a free one). Flags override the JSON config file; every
// key of the file is optional (see DEFAULTS below). Everything is kept in memory: a restart
// forgets tokens, sessions and grants, and keeps the signing keys only when `jwks_file` is set.
//
// Besides the OIDC endpoints it serves:
//   /interaction/<uid>   a plain login form (`login`, `password`) and a consent form, used by the
//                        authorization and device flows;
//   POST /test/sign      signs arbitrary claims with the provider's keys (or an HMAC key), for
//                        negative tests: {"payload":{..}, "alg"?, "kid"?, "header"?: {..},
//                        "hmac_key_b64url"?} -> {"token": "<compact JWS>"}.
//   GET /test/requests   how many requests each path received since start (the /test/ paths
//                        excluded): {"/jwks": 2, "/.well-known/openid-configuration": 2, ...}.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const DEFAULTS = {
  host: '127.0.0.1',
  port: 0,
  // Algorithms of the keys generated at start when no JWKS is given (the first one signs).
  signing_algs: ['RS256'],
  // A private JWKS ({"keys": [...]}). When the file is missing, keys are generated per
  // `signing_algs` and written there, so a restart keeps them.
  jwks_file: null,
  access_token_ttl: 300,
  client_credentials_ttl: null, // defaults to access_token_ttl
  id_token_ttl: 300,
  refresh_token_ttl: 3600,
  device_code_ttl: 600,
  // Resource indicator (an absolute URI) -> audience of the JWT access tokens issued for it.
  resources: { 'urn:tollgate': 'tollgate', 'urn:other-service': 'other-service' },
  default_resource: 'urn:tollgate',
  // Where the groups go in ID tokens and access tokens: a claim name or a dotted path
  // (`realm_access.roles` gives {"realm_access": {"roles": [...]}}).
  groups_claim: 'groups',
  users: [
    { username: 'alice', password: 'alice-pass', groups: ['eng', 'db-admins'], email: 'alice@example.test', name: 'Alice Example' },
    { username: 'bob', password: 'bob-pass', groups: ['sales'], email: 'bob@example.test', name: 'Bob Example' },
  ],
  // Clients for the client-credentials grant; `groups` (and `claims`) go into their tokens.
  machine_clients: [
    { client_id: 'ai-agent', client_secret: 'ai-agent-secret', groups: ['ai-agents'] },
  ],
  // The public client of people (CLI login): PKCE, any loopback port.
  cli_client: {
    client_id: 'tollgate-cli',
    redirect_uris: ['http://127.0.0.1/callback'],
  },
  // The confidential client of the gateway's web login.
  web_client: {
    client_id: 'tollgate-web',
    client_secret: 'tollgate-web-secret',
    redirect_uris: ['http://127.0.0.1/oidc/callback'],
    token_endpoint_auth_method: 'client_secret_basic',
  },
  // A redirect URI registered on 127.0.0.1/localhost/[::1] matches any port (RFC 8252 7.3),
  // for every client: tests pick their ports after the provider starts.
  loopback_any_port: true,
};

const ALGS = {
  RS256: { type: 'rsa', options: { modulusLength: 2048 } },
  PS256: { type: 'rsa', options: { modulusLength: 2048 } },
  ES256: { type: 'ec', options: { namedCurve: 'P-256' } },
  EdDSA: { type: 'ed25519', options: {} },
};

function fail(message) {
  process.stderr.write(`oidc test provider: ${message}\n`);
  process.exit(2);
}

function generateKey(alg) {
  const spec = ALGS[alg];
  if (!spec) fail(`unsupported signing alg ${alg} (one of ${Object.keys(ALGS).join(', ')})`);
  const { privateKey } = crypto.generateKeyPairSync(spec.type, spec.options);
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    ...jwk, kid: `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`, alg, use: 'sig',
  };
}

function generateJwks(algs) {
  return { keys: algs.map(generateKey) };
}

function parseArgs(argv) {
  const out = {};
  const list = (v) => v.split(',').map((s) => s.trim()).filter(Boolean);
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    const value = () => {
      i += 1;
      if (i >= argv.length) fail(`${flag} needs a value`);
      return argv[i];
    };
    const number = () => {
      const n = Number(value());
      if (!Number.isInteger(n) || n < 0) fail(`${flag} needs a whole number`);
      return n;
    };
    switch (flag) {
      case '--config': out.config = value(); break;
      case '--generate-jwks': out.generate = list(value()); break;
      case '--port': out.port = number(); break;
      case '--host': out.host = value(); break;
      case '--alg': out.signing_algs = list(value()); break;
      case '--jwks': out.jwks_file = value(); break;
      case '--access-token-ttl': out.access_token_ttl = number(); break;
      case '--id-token-ttl': out.id_token_ttl = number(); break;
      case '--refresh-token-ttl': out.refresh_token_ttl = number(); break;
      case '--web-redirect-uri':
        out.web_redirect_uris = [...(out.web_redirect_uris || []), value()];
        break;
      default: fail(`unknown argument ${flag}`);
    }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
if (args.generate) {
  process.stdout.write(`${JSON.stringify(generateJwks(args.generate), null, 2)}\n`);
  process.exit(0);
}

let fileConfig = {};
if (args.config) {
  try {
    fileConfig = JSON.parse(fs.readFileSync(args.config, 'utf8'));
  } catch (err) {
    fail(`cannot read config ${args.config}: ${err.message}`);
  }
}
const cfg = { ...DEFAULTS, ...fileConfig };
for (const key of ['port', 'host', 'signing_algs', 'jwks_file', 'access_token_ttl', 'id_token_ttl', 'refresh_token_ttl']) {
  if (args[key] !== undefined) cfg[key] = args[key];
}
cfg.cli_client = { ...DEFAULTS.cli_client, ...(fileConfig.cli_client || {}) };
cfg.web_client = { ...DEFAULTS.web_client, ...(fileConfig.web_client || {}) };
if (args.web_redirect_uris) cfg.web_client.redirect_uris = args.web_redirect_uris;
cfg.client_credentials_ttl ??= cfg.access_token_ttl;
if (!cfg.resources[cfg.default_resource]) fail(`default_resource ${cfg.default_resource} is not in resources`);

// Signing keys.
let jwks;
if (cfg.jwks_file && fs.existsSync(cfg.jwks_file)) {
  try {
    jwks = JSON.parse(fs.readFileSync(cfg.jwks_file, 'utf8'));
  } catch (err) {
    fail(`cannot read JWKS ${cfg.jwks_file}: ${err.message}`);
  }
  if (!Array.isArray(jwks.keys) || jwks.keys.length === 0) fail(`${cfg.jwks_file} holds no keys`);
} else {
  jwks = generateJwks(cfg.signing_algs);
  if (cfg.jwks_file) fs.writeFileSync(cfg.jwks_file, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
}
const algOf = (jwk) => jwk.alg || { RSA: 'RS256', EC: 'ES256', OKP: 'EdDSA' }[jwk.kty];
// The first key signs ID tokens and access tokens; the others are published for verification.
const primaryAlg = algOf(jwks.keys[0]);
const primaryKid = jwks.keys[0].kid;

// Accounts and groups.
const users = new Map(cfg.users.map((u) => [u.username, u]));
const machines = new Map(cfg.machine_clients.map((c) => [c.client_id, c]));
const groupsPath = cfg.groups_claim.split('.');
const groupsTop = groupsPath[0];

function groupsClaim(groups) {
  let value = groups;
  for (const part of [...groupsPath].reverse().slice(0, -1)) value = { [part]: value };
  return { [groupsTop]: value };
}

const extraUserClaims = [...new Set(cfg.users.flatMap((u) => Object.keys(u.claims || {})))];

const clients = [
  ...cfg.machine_clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: c.token_endpoint_auth_method || 'client_secret_basic',
  })),
  {
    client_id: cfg.cli_client.client_id,
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: ['code'],
    redirect_uris: cfg.cli_client.redirect_uris,
    scope: 'openid profile email groups offline_access',
  },
  {
    client_id: cfg.web_client.client_id,
    client_secret: cfg.web_client.client_secret,
    application_type: 'web',
    token_endpoint_auth_method: cfg.web_client.token_endpoint_auth_method,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: cfg.web_client.redirect_uris,
    scope: 'openid profile email groups offline_access',
  },
];

const page = (title, body) => `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${title}</title></head>
<body><h1>${title}</h1>
${body}
</body></html>`;

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

const configuration = {
  clients,
  jwks,
  findAccount: async (_ctx, sub) => {
    const user = users.get(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      claims: async () => ({
        sub,
        name: user.name || sub,
        preferred_username: sub,
        email: user.email || `${sub}@example.test`,
        email_verified: true,
        ...groupsClaim(user.groups || []),
        ...(user.claims || {}),
      }),
    };
  },
  claims: {
    openid: ['sub', ...extraUserClaims],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: [groupsTop],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  // ID tokens carry the claims of the granted scopes (groups included), not only via userinfo.
  conformIdTokenClaims: false,
  clientDefaults: {
    id_token_signed_response_alg: primaryAlg,
    grant_types: ['authorization_code'],
    response_types: ['code'],
  },
  enabledJWA: {
    idTokenSigningAlgValues: ['RS256', 'PS256', 'ES256', 'EdDSA'],
  },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  pkce: { required: (_ctx, client) => client.clientAuthMethod === 'none' },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  // Refresh tokens go to every client allowed the grant, whether or not offline_access survived
  // (oidc-provider drops it from a request without prompt=consent).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  extraTokenClaims: async (_ctx, token) => {
    if (token.accountId) {
      const user = users.get(token.accountId);
      return user ? { ...groupsClaim(user.groups || []), ...(user.claims || {}) } : undefined;
    }
    const machine = machines.get(token.clientId);
    if (machine) return { ...groupsClaim(machine.groups || []), ...(machine.claims || {}) };
    return undefined;
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    deviceFlow: {
      enabled: true,
      userCodeInputSource: async (ctx, form, _out, err) => {
        ctx.body = page('Device login', `${err ? `<p class="error">${esc(err.message || err.name)}</p>` : ''}
${form}
<button type="submit" form="op.deviceInputForm">Continue</button>`);
      },
      userCodeConfirmSource: async (ctx, form, client, _deviceInfo, userCode) => {
        ctx.body = page('Confirm device', `<p>${esc(client.clientId)} asks with code <code>${esc(userCode)}</code></p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>`);
      },
      successSource: async (ctx) => {
        ctx.body = page('Device login done', '<p id="device-login-success">You can close this page.</p>');
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf || cfg.default_resource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        const audience = cfg.resources[indicator];
        if (!audience) throw new errors.InvalidTarget(`unknown resource ${indicator}`);
        return {
          scope: 'access',
          audience,
          accessTokenFormat: 'jwt',
          accessTokenTTL: cfg.access_token_ttl,
          jwt: { sign: { alg: primaryAlg, kid: primaryKid } },
        };
      },
    },
  },
  ttl: {
    AccessToken: () => cfg.access_token_ttl,
    ClientCredentials: () => cfg.client_credentials_ttl,
    IdToken: () => cfg.id_token_ttl,
    RefreshToken: () => cfg.refresh_token_ttl,
    DeviceCode: () => cfg.device_code_ttl,
    AuthorizationCode: () => 60,
    Interaction: () => 600,
    Session: () => 3600,
    Grant: () => 3600,
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Error', `<p id="error">${esc(out.error)}: ${esc(out.error_description || '')}</p>`);
  },
};

// Requests before the provider exists (between listen and construction) are answered 503.
let provider;

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, type, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

function loginPage(uid, client, error) {
  return page('Sign in', `<p>Sign in to ${esc(client)}</p>
${error ? `<p class="error" id="login-error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
<input type="text" name="login" autofocus>
<input type="password" name="password">
<button type="submit">Sign in</button>
</form>`);
}

function consentPage(uid, client, details) {
  const scopes = details.missingOIDCScope ? details.missingOIDCScope.join(' ') : '';
  return page('Authorize', `<p>${esc(client)} asks for: <span id="scopes">${esc(scopes)}</span></p>
<form method="post" action="/interaction/${esc(uid)}/confirm">
<input type="hidden" name="consent" value="yes">
<button type="submit">Allow</button>
</form>`);
}

async function interaction(req, res, path) {
  const [, , uid, action] = path.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new errors.SessionNotFound('interaction mismatch');
  const { prompt, params } = details;

  if (req.method === 'GET' && !action) {
    const body = prompt.name === 'login'
      ? loginPage(uid, params.client_id)
      : consentPage(uid, params.client_id, prompt.details);
    return send(res, 200, 'text/html; charset=utf-8', body);
  }
  if (req.method === 'POST' && action === 'login') {
    const form = new URLSearchParams(await readBody(req));
    const user = users.get(form.get('login') || '');
    if (prompt.name !== 'login') return send(res, 400, 'text/plain', 'not a login prompt');
    if (!user || user.password !== form.get('password')) {
      return send(res, 200, 'text/html; charset=utf-8', loginPage(uid, params.client_id, 'invalid login or password'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: user.username } }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'confirm') {
    await readBody(req);
    if (prompt.name !== 'consent') return send(res, 400, 'text/plain', 'not a consent prompt');
    const { accountId } = details.session;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    const consent = details.grantId ? {} : { grantId };
    return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
  }
  if (req.method === 'GET' && action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }
  return send(res, 404, 'text/plain', 'not found');
}

const b64u = (data) => Buffer.from(data).toString('base64url');

async function testSign(req, res) {
  let body;
  try {
    body = JSON.parse(await readBody(req));
  } catch {
    return send(res, 400, 'application/json', JSON.stringify({ error: 'body is not JSON' }));
  }
  const payload = body.payload || {};
  const alg = body.alg || (body.kid ? algOf(jwks.keys.find((k) => k.kid === body.kid) || {}) : primaryAlg);
  let signer;
  let kid;
  if (/^HS(256|384|512)$/.test(alg)) {
    if (typeof body.hmac_key_b64url !== 'string') {
      return send(res, 400, 'application/json', JSON.stringify({ error: 'HS* needs hmac_key_b64url' }));
    }
    const key = Buffer.from(body.hmac_key_b64url, 'base64url');
    signer = (data) => crypto.createHmac(`sha${alg.slice(2)}`, key).update(data).digest();
  } else if (alg === 'none') {
    signer = () => Buffer.alloc(0);
  } else {
    const jwk = jwks.keys.find((k) => (body.kid ? k.kid === body.kid : algOf(k) === alg));
    if (!jwk) return send(res, 400, 'application/json', JSON.stringify({ error: `no key for alg ${alg} / kid ${body.kid}` }));
    kid = jwk.kid;
    const key = crypto.createPrivateKey({ key: jwk, format: 'jwk' });
    signer = {
      RS256: (data) => crypto.sign('sha256', data, key),
      PS256: (data) => crypto.sign('sha256', data, {
        key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32,
      }),
      ES256: (data) => crypto.sign('sha256', data, { key, dsaEncoding: 'ieee-p1363' }),
      EdDSA: (data) => crypto.sign(null, data, key),
    }[alg];
    if (!signer) return send(res, 400, 'application/json', JSON.stringify({ error: `cannot sign ${alg}` }));
  }
  const header = { alg, typ: 'JWT', ...(kid ? { kid } : {}), ...(body.header || {}) };
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}`;
  const token = `${input}.${b64u(signer(input))}`;
  return send(res, 200, 'application/json', JSON.stringify({ token }));
}

// Requests per path, for tests that count fetches (e.g. of the JWKS).
const requestCounts = {};

const server = http.createServer(async (req, res) => {
  if (!provider) return send(res, 503, 'text/plain', 'starting');
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/test/requests' && req.method === 'GET') {
    return send(res, 200, 'application/json', JSON.stringify(requestCounts));
  }
  if (!path.startsWith('/test/')) requestCounts[path] = (requestCounts[path] || 0) + 1;
  try {
    if (path.startsWith('/interaction/')) return await interaction(req, res, path);
    if (path === '/test/sign' && req.method === 'POST') return await testSign(req, res);
  } catch (err) {
    process.stderr.write(`interaction error: ${err.stack || err}\n`);
    if (!res.headersSent) {
      return send(res, err.statusCode || err.status || 500, 'text/html; charset=utf-8', page('Error', `<p id="error">${esc(err.message)}</p>`));
    }
    return res.end();
  }
  return callback(req, res);
});
let callback;

server.on('error', (err) => fail(`cannot listen on ${cfg.host}:${cfg.port}: ${err.message}`));
server.listen(cfg.port, cfg.host, () => {
  const { port } = server.address();
  const host = cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host;
  const issuer = `http://${host}:${port}`;
  provider = new Provider(issuer, configuration);

  if (cfg.loopback_any_port) {
    const loopbacks = new Set(['127.0.0.1', 'localhost', '[::1]']);
    const withoutPort = (uri) => {
      let u;
      try {
        u = new URL(uri);
      } catch {
        return undefined;
      }
      if (u.protocol !== 'http:' || !loopbacks.has(u.hostname)) return undefined;
      u.port = '';
      return u.href;
    };
    const original = provider.Client.prototype.redirectUriAllowed;
    provider.Client.prototype.redirectUriAllowed = function redirectUriAllowed(value) {
      if (original.call(this, value)) return true;
      const stripped = withoutPort(value);
      return stripped !== undefined && this.redirectUris.some((uri) => withoutPort(uri) === stripped);
    };
  }

  for (const event of ['server_error', 'grant.error', 'authorization.error', 'introspection.error', 'revocation.error', 'end_session.error']) {
    provider.on(event, (_ctx, err) => process.stderr.write(`${event}: ${err.name}: ${err.message}${err.error_detail ? ` (${err.error_detail})` : ''}\n`));
  }
  callback = provider.callback();
  process.stdout.write(`listening ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}
