"""Leader election on a real kube-apiserver: real Leases (MicroTime fields, resourceVersion
conflicts), the chart's Role that names one Lease, and the operator's ServiceAccount.

Two operators run in-process. The leader is frozen (its event loop stopped dead, as a SIGSTOP or a
stalled node would: it neither renews nor releases anything); the standby takes the Lease once it
expired and reconciles a Webhook created meanwhile. Thawed, the old leader finds its Lease gone and
stops by itself.
"""

from __future__ import annotations

import time

from operator_helpers import DEPLOYMENTS, LEASES, WEBHOOKS, api_path, condition
from realapi_helpers import KubeClient, eventually

from hookline.operator.rules.leadership import LeaseTiming
from hookline.operator.settings import LeaderElection

LEASE = "hookline-operator"  # the chart's <fullname>-operator for the release "hookline"
TIMING = LeaseTiming(lease_seconds=3, renew_deadline_seconds=2, retry_seconds=0.25)


async def holder(admin: KubeClient, namespace: str) -> str | None:
    lease = await admin.get(LEASES, LEASE, namespace)
    return lease and lease["spec"].get("holderIdentity")


async def test_a_frozen_leader_is_replaced_and_steps_down_when_it_wakes(
    real_cluster, admin, namespace, site, start_operator
):
    lease_namespace = real_cluster.operator_namespace

    def election(identity: str) -> LeaderElection:
        return LeaderElection(namespace=lease_namespace, name=LEASE, identity=identity, timing=TIMING)

    leader = await start_operator(leader_election=election("op-a"))
    assert await holder(admin, lease_namespace) == "op-a"
    standby = await start_operator(leader_election=election("op-b"), wait_ready=False)

    async def standby_waiting() -> bool:
        return standby.running and standby.runtime is None  # no Kopf while it does not lead

    assert await eventually(standby_waiting, "op-b waiting")
    lease = await admin.get(LEASES, LEASE, lease_namespace)
    assert lease["spec"]["leaseDurationSeconds"] == 3
    assert lease["spec"]["renewTime"].endswith("Z") and "." in lease["spec"]["renewTime"]

    thaw = leader.freeze()
    frozen_at = time.monotonic()
    body = {"apiVersion": "hookline.io/v1alpha1", "kind": "Webhook", "metadata": {"name": "handover"}}
    body["spec"] = {"url": site.url("/hooks/handover.php"), "events": ["click"]}
    await admin.call("POST", api_path(WEBHOOKS, namespace), body)

    async def taken() -> bool:
        return await holder(admin, lease_namespace) == "op-b"

    await eventually(taken, "op-b taking the expired Lease", 15)
    assert time.monotonic() - frozen_at < TIMING.lease_seconds + 3
    lease = await admin.get(LEASES, LEASE, lease_namespace)
    assert lease["spec"]["leaseTransitions"] == 1

    async def token() -> str | None:
        webhook = await admin.get(WEBHOOKS, "handover", namespace) or {}
        return ((webhook.get("status") or {}).get("verification") or {}).get("content")

    value = await eventually(token, "the new leader writing a verification token", 30)
    site.files[f"/hooks/hookline-{value}.txt"] = value + "\n"

    async def sender() -> dict | None:
        webhook = await admin.get(WEBHOOKS, "handover", namespace) or {}
        if condition(webhook, "Verified").get("status") != "True":
            return None
        return await admin.get(DEPLOYMENTS, "handover-sender", namespace)

    assert await eventually(sender, "the new leader creating the sender", 30)

    # Thawed, the old leader sees it has not renewed within the deadline and stops on its own.
    thaw.set()

    async def stepped_down() -> bool:
        return not leader.running

    assert await eventually(stepped_down, "the old leader stopping", 15)
    assert await holder(admin, lease_namespace) == "op-b"
