"""A Python client of tenantd: create a tenant, follow its provisioning until
it is ACTIVE, then find it in the tenant list.

The stubs are generated from proto/ at run time (into target/examples/python),
so they always match the server. Settings come from the environment:

    TENANTD_ENDPOINT  host:port of the server (default localhost:50051)
    TENANTD_TOKEN     bearer token, when the server requires authentication

Exits non-zero if the tenant ends FAILED, CANCELLED or NEEDS_ATTENTION, or
does not settle within WATCH_TIMEOUT_SECS.
"""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[3]
PROTOS = ROOT / "proto"
STUBS = ROOT / "target" / "examples" / "python"

# Provisioning takes about a second; a minute leaves room for retries.
WATCH_TIMEOUT_SECS = 60
CALL_TIMEOUT_SECS = 10


def generate_stubs():
    """Compiles proto/ with grpcio-tools and makes the modules importable."""
    STUBS.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_out={STUBS}",
            f"--grpc_python_out={STUBS}",
            *protos,
        ],
        check=True,
    )
    sys.path.insert(0, str(STUBS))


generate_stubs()
from tenancy.v1 import tenant_pb2, tenant_service_pb2, tenant_service_pb2_grpc  # noqa: E402

TenantState = tenant_pb2.TenantState
EventKind = tenant_pb2.EventKind


def state_name(state):
    return TenantState.Name(state).removeprefix("TENANT_STATE_")


def follow_provisioning(tenants, tenant_id, metadata):
    """Prints the tenant's events from its first one; returns its final state."""
    request = tenant_service_pb2.StreamProvisioningStatusRequest(
        tenant_id=tenant_id, resume_after_event_id=0
    )
    state = TenantState.TENANT_STATE_UNSPECIFIED
    updates = tenants.StreamProvisioningStatus(
        request, metadata=metadata, timeout=WATCH_TIMEOUT_SECS
    )
    for update in updates:
        if update.HasField("snapshot"):
            snapshot = update.snapshot
            state = snapshot.tenant.state
            print(
                f"  snapshot: {state_name(state)}, "
                f"{len(snapshot.tenant.steps)} steps planned"
            )
            continue
        event = update.event
        state = event.state
        kind = EventKind.Name(event.kind).removeprefix("EVENT_KIND_")
        step = f" {event.step}" if event.step else ""
        print(f"  #{event.id} {kind}{step} -> {state_name(state)}: {event.message}")
    return state


def list_tenants(tenants, metadata):
    """Every tenant, one page after the other."""
    request = tenant_service_pb2.ListTenantsRequest(page_size=100)
    while True:
        page = tenants.ListTenants(
            request, metadata=metadata, timeout=CALL_TIMEOUT_SECS
        )
        yield from page.tenants
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token


def main():
    endpoint = os.environ.get("TENANTD_ENDPOINT", "localhost:50051")
    token = os.environ.get("TENANTD_TOKEN")
    metadata = [("authorization", f"Bearer {token}")] if token else []
    slug = f"py-{uuid.uuid4().hex[:8]}"

    with grpc.insecure_channel(endpoint) as channel:
        tenants = tenant_service_pb2_grpc.TenantServiceStub(channel)

        print(f"creating tenant {slug} on {endpoint}")
        created = tenants.CreateTenant(
            tenant_service_pb2.CreateTenantRequest(
                tenant=tenant_pb2.Tenant(
                    slug=slug,
                    display_name=f"Python example {slug}",
                    admin_email=f"admin@{slug}.example",
                    labels={"client": "python"},
                ),
                # Makes a retried create return the same tenant.
                request_id=str(uuid.uuid4()),
            ),
            metadata=metadata,
            timeout=CALL_TIMEOUT_SECS,
        ).tenant
        print(f"created {created.id}: {state_name(created.state)}")

        print("following provisioning")
        state = follow_provisioning(tenants, created.id, metadata)
        if state != TenantState.TENANT_STATE_ACTIVE:
            sys.exit(f"tenant {slug} ended {state_name(state)}, not ACTIVE")
        print(f"{slug} is ACTIVE")

        listed = list(list_tenants(tenants, metadata))
        mine = next((t for t in listed if t.id == created.id), None)
        if mine is None:
            sys.exit(f"tenant {created.id} is missing from ListTenants")
        print(
            f"listed {len(listed)} tenants, {mine.slug} among them: "
            f"{state_name(mine.state)}, schema {mine.outputs['schema_name']}"
        )


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as e:
        sys.exit(f"{e.code().name}: {e.details()}")
