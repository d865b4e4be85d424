// A Node client of tenantd: create a tenant, follow its provisioning until it
// is ACTIVE, then find it in the tenant list.
//
// The protos are loaded from proto/ at run time, so the client always matches
// the server. Settings come from the environment:
//
//   TENANTD_ENDPOINT  host:port of the server (default localhost:50051)
//   TENANTD_TOKEN     bearer token, when the server requires authentication
//
// Exits non-zero if the tenant ends FAILED, CANCELLED or NEEDS_ATTENTION, or
// does not settle within WATCH_TIMEOUT_MS.
'use strict';

const crypto = require('node:crypto');
const path = require('node:path');
const { promisify } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// Provisioning takes about a second; a minute leaves room for retries.
const WATCH_TIMEOUT_MS = 60_000;
const CALL_TIMEOUT_MS = 10_000;

const definition = protoLoader.loadSync('tenancy/v1/tenant_service.proto', {
  includeDirs: [path.resolve(__dirname, '../../../proto')],
  enums: String, // 'TENANT_STATE_ACTIVE' rather than 2
  longs: String, // event ids are int64
  defaults: true,
  oneofs: true, // `update` names the member that is set
});
const { TenantService } = grpc.loadPackageDefinition(definition).tenancy.v1;

const short = (name, prefix) => name.replace(prefix, '');
const stateName = (state) => short(state, 'TENANT_STATE_');
const deadline = (ms) => ({ deadline: Date.now() + ms });

// Prints the tenant's events from its first one; returns its final state.
async function followProvisioning(client, tenantId, metadata) {
  const updates = client.streamProvisioningStatus(
    { tenantId, resumeAfterEventId: 0 },
    metadata,
    deadline(WATCH_TIMEOUT_MS),
  );
  let state = 'TENANT_STATE_UNSPECIFIED';
  for await (const update of updates) {
    if (update.update === 'snapshot') {
      const { tenant } = update.snapshot;
      state = tenant.state;
      console.log(`  snapshot: ${stateName(state)}, ${tenant.steps.length} steps planned`);
      continue;
    }
    const event = update.event;
    state = event.state;
    const step = event.step ? ` ${event.step}` : '';
    const kind = short(event.kind, 'EVENT_KIND_');
    console.log(`  #${event.id} ${kind}${step} -> ${stateName(state)}: ${event.message}`);
  }
  return state;
}

// Every tenant, one page after the other.
async function* listTenants(client, metadata) {
  const listPage = promisify(client.listTenants).bind(client);
  let pageToken = '';
  do {
    const page = await listPage({ pageSize: 100, pageToken }, metadata, deadline(CALL_TIMEOUT_MS));
    yield* page.tenants;
    pageToken = page.nextPageToken;
  } while (pageToken);
}

async function main() {
  const endpoint = process.env.TENANTD_ENDPOINT || 'localhost:50051';
  const metadata = new grpc.Metadata();
  if (process.env.TENANTD_TOKEN) {
    metadata.set('authorization', `Bearer ${process.env.TENANTD_TOKEN}`);
  }
  const slug = `js-${crypto.randomUUID().slice(0, 8)}`;
  const client = new TenantService(endpoint, grpc.credentials.createInsecure());
  const createTenant = promisify(client.createTenant).bind(client);

  try {
    console.log(`creating tenant ${slug} on ${endpoint}`);
    const { tenant: created } = await createTenant(
      {
        tenant: {
          slug,
          displayName: `Node example ${slug}`,
          adminEmail: `admin@${slug}.example`,
          labels: { client: 'node' },
        },
        // Makes a retried create return the same tenant.
        requestId: crypto.randomUUID(),
      },
      metadata,
      deadline(CALL_TIMEOUT_MS),
    );
    console.log(`created ${created.id}: ${stateName(created.state)}`);

    console.log('following provisioning');
    const state = await followProvisioning(client, created.id, metadata);
    if (state !== 'TENANT_STATE_ACTIVE') {
      throw new Error(`tenant ${slug} ended ${stateName(state)}, not ACTIVE`);
    }
    console.log(`${slug} is ACTIVE`);

    const listed = [];
    for await (const tenant of listTenants(client, metadata)) listed.push(tenant);
    const mine = listed.find((t) => t.id === created.id);
    if (!mine) throw new Error(`tenant ${created.id} is missing from ListTenants`);
    console.log(
      `listed ${listed.length} tenants, ${mine.slug} among them: ` +
        `${stateName(mine.state)}, schema ${mine.outputs.schema_name}`,
    );
  } finally {
    client.close();
  }
}

main().catch((err) => {
  // A gRPC error carries its status; anything else is our own.
  const code = typeof err.code === 'number' ? `${grpc.status[err.code]}: ` : '';
  console.error(code + (err.details || err.message));
  process.exitCode = 1;
});
