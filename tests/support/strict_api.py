"""A Kubernetes API emulator that refuses what kube-apiserver refuses, wherever the operator depends on it.

kmock's emulator stores objects and streams them; `StrictCluster` puts the API server's own rules in
front of that store, driven by the project's own contracts, read when the emulator is built:

- **authentication and RBAC** (`Identity`, `chart_identity`): every request carries a bearer token;
  the operator's token is bound to exactly the rules the Helm chart grants its ServiceAccount
  (rendered by the real `helm template`), so a request the chart does not allow is a 403 Forbidden
  in the words kube-apiserver uses. The test itself (and `hookline` CLI runs) use an admin token.
- **query parameters** parsed with the types the API declares: `timeoutSeconds`, `limit` and
  `gracePeriodSeconds` are int64 (`300.0` is a 400 `strconv.ParseInt: parsing "300.0": invalid
  syntax`), `watch` and the other flags bools the way apimachinery reads them (`0`, `f`, `false`
  are false, anything else true), `resourceVersion` a string, `labelSelector`/`fieldSelector` parsed
  (a bad one is a 400) and applied to lists and watches; `limit`/`continue` page a list.
- **custom resources** from crds/: on create, PUT, merge patch and JSON patch, undeclared fields are
  pruned (silently, as the API server does; `fieldValidation=Strict` makes them a 400), defaults are
  applied, the schema and the CEL rules (transition rules with `oldSelf` included) are validated with
  a 422 `Invalid` Status naming each field (kubeschema.py, shared with tests/unit/test_crds.py).
- **the status subresource**: on create and on the main resource `status` is ignored; on `/status`
  everything but `status` is (metadata included: the stored object is kept and only its status
  replaced); `metadata.generation` grows only when something other than metadata and status changes.
- **resourceVersion**: one counter for every write; a PUT or patch carrying a `metadata.resourceVersion`
  that is not the current one is a 409 Conflict; a PUT of a custom resource without one is a 422;
  a write that changes nothing is a no-op (same resourceVersion, no watch event), as in etcd.
- **watches** replay from the resourceVersion they name, out of a bounded history (`watch_window`
  events); a resourceVersion older than that window, or older than `compact()`, is answered with an
  ERROR event `410 Gone` ("too old resource version") and the client must list again.
  `timeoutSeconds` ends a watch, as the API server does; `close_watches()` ends every open one.

What the emulator does not do (no controller runs): garbage collection by owner references, the
Deployment controller, server-side apply (`application/apply-patch+yaml` is a 415 here).

Every refusal is recorded (`refusals`), every pruned field too (`pruned`); `operator_faults()` lists
those that hit the operator, so a fixture can fail a test whose operator was refused or lost a field.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import functools
import json
import re
import subprocess
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import kmock
import yaml
from aiohttp import web
from kubeschema import (
    CRDS,
    ROOT,
    Cause,
    CustomResource,
    apply_defaults,
    custom_resources,
    invalid_message,
    schema_errors,
    validate,
)
from kubeschema import prune as prune_fields
from operator_helpers import ADMIN_TOKEN, OPERATOR_TOKEN, Cluster

HELM = ROOT / ".tools" / "bin" / "helm"
CHART = ROOT / "charts" / "hookline"
RELEASE = "hookline"
RELEASE_NAMESPACE = "hookline"
WATCH_WINDOW = 10_000  # events a watch can resume from (kube-apiserver keeps about 5 minutes' worth)

INT_PARAMS = ("timeoutSeconds", "limit", "gracePeriodSeconds")
BOOL_PARAMS = ("watch", "allowWatchBookmarks", "sendInitialEvents")
GO_INT = re.compile(r"^[+-]?[0-9]+$")
SYSTEM_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


# --- identities and RBAC ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One PolicyRule, with the namespace its binding limits it to (None: a ClusterRoleBinding)."""

    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str] = frozenset()
    namespace: str | None = None

    def allows(self, verb: str, group: str, resource: str, name: str | None, namespace: str | None) -> bool:
        if self.namespace is not None and namespace != self.namespace:
            return False
        if not ({verb, "*"} & self.verbs and {group, "*"} & self.api_groups):
            return False
        # "*" is every resource and subresource, "*/status" every resource's status.
        names = {resource, "*"} | ({"*/" + resource.split("/", 1)[1]} if "/" in resource else set())
        if not names & self.resources:
            return False
        return not self.resource_names or (name is not None and name in self.resource_names)


@dataclass(frozen=True)
class Identity:
    """Who a token is: its user name and rules (None: cluster-admin, everything allowed)."""

    user: str
    rules: tuple[Rule, ...] | None = None

    def allows(self, verb: str, group: str, resource: str, name: str | None, namespace: str | None) -> bool:
        if self.rules is None:
            return True
        return any(rule.allows(verb, group, resource, name, namespace) for rule in self.rules)


ADMIN = Identity("kubernetes-admin")


def render_chart(
    *flags: str, release: str = RELEASE, namespace: str = RELEASE_NAMESPACE
) -> list[dict[str, Any]]:
    """The chart as the real helm renders it (the Makefile installs .tools/bin/helm)."""
    command = [str(HELM), "template", release, str(CHART), "--namespace", namespace, *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def identity_of(docs: Iterable[dict[str, Any]], component: str = "operator") -> Identity:
    """The ServiceAccount of ``component`` in rendered manifests, with the rules its bindings give it."""
    docs = list(docs)
    (account,) = [
        d
        for d in docs
        if d["kind"] == "ServiceAccount"
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    sa_name, sa_ns = account["metadata"]["name"], account["metadata"].get("namespace", RELEASE_NAMESPACE)
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}
    rules: list[Rule] = []
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        subjects = binding.get("subjects") or []
        if not any(
            s.get("kind") == "ServiceAccount"
            and s.get("name") == sa_name
            and s.get("namespace", binding["metadata"].get("namespace")) == sa_ns
            for s in subjects
        ):
            continue
        ref = binding["roleRef"]
        bound_ns = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        role_ns = None if ref["kind"] == "ClusterRole" else binding["metadata"].get("namespace")
        role = roles.get((ref["kind"], role_ns, ref["name"]))
        assert role is not None, f"{binding['kind']} {binding['metadata']['name']} binds a missing {ref}"
        for rule in role.get("rules") or []:
            if "nonResourceURLs" in rule:
                continue
            rules.append(
                Rule(
                    api_groups=frozenset(rule.get("apiGroups") or ()),
                    resources=frozenset(rule.get("resources") or ()),
                    verbs=frozenset(rule.get("verbs") or ()),
                    resource_names=frozenset(rule.get("resourceNames") or ()),
                    namespace=bound_ns,
                )
            )
    return Identity(f"system:serviceaccount:{sa_ns}:{sa_name}", tuple(rules))


@functools.cache
def chart_identity() -> Identity:
    """The operator's ServiceAccount with the chart's default values (rendered once per process)."""
    return identity_of(render_chart())


# --- selectors --------------------------------------------------------------------------------------------


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # =, !=, in, notin, exists, !
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        match self.op:
            case "exists":
                return self.key in labels
            case "!":
                return self.key not in labels
            case "=" | "in":
                return self.key in labels and labels[self.key] in self.values
            case _:  # != and notin: also true when the label is absent
                return labels.get(self.key) not in self.values


SET_REQ = re.compile(r"^\s*(\S+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
EQ_REQ = re.compile(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(\S*)\s*$")


def _split(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _check_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if (
        (prefix and not DNS_SUBDOMAIN.match(prefix))
        or not name
        or len(name) > 63
        or not LABEL_NAME.match(name)
    ):
        raise SelectorError(f'unable to parse requirement: invalid label key "{key}"')
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not LABEL_VALUE.match(value):
        raise SelectorError(f'unable to parse requirement: invalid label value: "{value}"')
    return value


def parse_label_selector(text: str) -> list[Requirement]:
    """``a=b,c!=d,e in (f,g),!h,i`` as apimachinery's labels.Parse reads it; SelectorError if not."""
    if not text.strip():
        return []
    out = []
    for part in _split(text):
        if match := SET_REQ.match(part):
            values = frozenset(_check_value(v.strip()) for v in match.group(3).split(",") if v.strip())
            out.append(Requirement(_check_key(match.group(1)), match.group(2), values))
        elif match := EQ_REQ.match(part):
            op = "!=" if match.group(2) == "!=" else "="
            out.append(Requirement(_check_key(match.group(1)), op, frozenset({_check_value(match.group(3))})))
        elif part.strip().startswith("!"):
            out.append(Requirement(_check_key(part.strip()[1:].strip()), "!"))
        elif part.strip():
            out.append(Requirement(_check_key(part.strip()), "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: found '', expected: identifier in {text!r}")
    return out


FIELD_SELECTABLE = ("metadata.name", "metadata.namespace")


def parse_field_selector(text: str) -> list[tuple[str, bool, str]]:
    """``metadata.name=x,metadata.namespace!=y``: (field, equal?, value) for each term."""
    out = []
    for part in [p for p in text.split(",") if p.strip()]:
        match = re.match(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(\S*)\s*$", part)
        if not match:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        if match.group(1) not in FIELD_SELECTABLE:
            raise SelectorError(f"field label not supported: {match.group(1)}")
        out.append((match.group(1), match.group(2) != "!=", match.group(3)))
    return out


# --- the emulator -----------------------------------------------------------------------------------------


class ApiError(Exception):
    """A refusal, answered as a Kubernetes Status."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        body |= {"message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


@dataclass
class Refusal:
    user: str
    method: str
    path: str
    code: int
    message: str


@dataclass
class Pruned:
    user: str
    method: str
    path: str
    fields: list[str]


@dataclass
class _Event:
    version: int
    resource: kmock.resource
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclass
class _Query:
    timeout: int | None = None
    limit: int | None = None
    watch: bool = False
    resource_version: str = ""
    labels: list[Requirement] = field(default_factory=list)
    fields: list[tuple[str, bool, str]] = field(default_factory=list)
    cont: str = ""
    field_validation: str = ""


class StrictCluster(Cluster):
    """kmock's emulator with kube-apiserver's refusals in front of it (see the module's docstring)."""

    def __init__(
        self,
        *,
        crds: Path = CRDS,
        identities: dict[str, Identity] | None = None,
        watch_window: int = WATCH_WINDOW,
        managed_fields: bool = False,
        **kwargs: Any,
    ) -> None:
        self.crds_dir = crds
        self.identities = identities if identities is not None else default_identities()
        self.watch_window = watch_window
        # kube-apiserver's metadata.managedFields on every write (about half of a Webhook's or a
        # Deployment's JSON there): on for bench/operator_scale.py, whose objects should weigh
        # what they weigh on a real server.
        self.managed_fields = managed_fields
        super().__init__(**kwargs)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.custom: dict[kmock.resource, CustomResource] = {
            kmock.resource(name): cr for name, cr in custom_resources(self.crds_dir).items()
        }
        for cr in self.custom.values():
            self.resources[cr.resource] = kmock.ResourceInfo(
                kind=cr.kind,
                namespaced=cr.namespaced,
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
                subresources=set(cr.subresources),
            )
        self.version = 0
        self.history: collections.deque[_Event] = collections.deque()
        self.compacted = 0  # watches from a resourceVersion below this get 410 Gone
        self.refusals: list[Refusal] = []
        self.pruned: list[Pruned] = []
        self._watchers: set[asyncio.Queue[_Event | None]] = set()
        self.expired = 0  # watches answered with 410 Gone
        self.served: collections.Counter[tuple[str, str, str]] = (
            collections.Counter()
        )  # (user, verb, resource)

    # --- knobs for tests ---------------------------------------------------------------------------------

    def compact(self) -> int:
        """Forget the history, as etcd's compaction does after other writes moved the revision on:
        a watch from any version handed out so far gets 410 Gone; returns the new oldest version."""
        self.version += 1
        self.history.clear()
        self.compacted = self.version
        return self.compacted

    def close_watches(self) -> None:
        """End every open watch, as the API server does at a watch's timeout or on a restart."""
        for queue in list(self._watchers):
            queue.put_nowait(None)

    def operator_faults(self) -> list[str]:
        """What a real API server would have refused the operator, or dropped from its writes."""
        user = self.identities[OPERATOR_TOKEN].user if OPERATOR_TOKEN in self.identities else ""
        out = [
            f"{r.method} {r.path}: {r.code} {r.message}"
            for r in self.refusals
            if r.user == user and r.code in (400, 401, 403, 415, 422)
        ]
        out += [f"{p.method} {p.path}: pruned {', '.join(p.fields)}" for p in self.pruned if p.user == user]
        return out

    # --- what a test does through the API (as the admin) -------------------------------------------------

    async def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = ADMIN_TOKEN,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request over HTTP; the status and the decoded body (a Status on refusals)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if content_type or method == "PATCH":
            headers["Content-Type"] = content_type or MERGE
        data = None if body is None else json.dumps(body)
        async with self.request(method, path, data=data, headers=headers, params=params) as response:
            return response.status, await response.json()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = await self.send(method, path, body)
        assert status < 400, payload
        return payload

    # --- the request pipeline ----------------------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> web.StreamResponse:
        del self._requests[:-64]
        user = "?"
        try:
            identity = self._authenticate(request)
            user = identity.user
            if request.resource is None or not request.resource.plural:  # discovery: any user
                return await kmock.KubernetesEmulator._handle(self, request)
            return await self._serve(request, identity)
        except ApiError as exc:
            path = request.url.path_qs if request.url else ""
            self.refusals.append(Refusal(user, str(request.method.value), path, exc.code, exc.message))
            return web.json_response(exc.status(), status=exc.code)

    def _authenticate(self, request: kmock.Request) -> Identity:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        if token is None or token not in self.identities:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return self.identities[token]

    def _info(self, resource: kmock.resource) -> Any:
        for known in self.resources:
            if known == resource:
                return self.resources[known]
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    async def _serve(self, request: kmock.Request, identity: Identity) -> web.StreamResponse:
        resource = request.resource
        assert resource is not None
        info = self._info(resource)
        query = parse_query(request.params)
        method = request.method.value.upper()
        name, sub = request.name, request.subresource
        if method == "GET":
            verb = "watch" if query.watch else "get" if name else "list"
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "")
            if method == "DELETE" and not name:
                verb = "deletecollection"
        if not verb:
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method: {method}")
        self._authorize(identity, verb, resource, name, sub, request.namespace)
        self.served[identity.user, verb, f"{resource.plural}/{sub}" if sub else str(resource.plural)] += 1
        if sub is not None and sub not in info.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if info.namespaced and request.namespace is None and verb not in ("list", "watch"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if verb == "watch":
            return await self._watch(request, query)
        if verb == "list":
            return web.json_response(self._list(resource, info, request.namespace, query))
        if verb == "get":
            return web.json_response(self._current(resource, request.namespace, name))
        body = request.data
        if verb == "create":
            obj = await self._create(request, identity, query, info)
            return web.json_response(obj, status=201)
        if verb in ("update", "patch"):
            return web.json_response(await self._update(request, identity, query, info, verb))
        if verb == "delete":
            return web.json_response(await self._delete(resource, request.namespace, name, body))
        raise ApiError(405, "MethodNotAllowed", "deletecollection is not emulated")

    def _authorize(
        self,
        identity: Identity,
        verb: str,
        resource: kmock.resource,
        name: str | None,
        sub: str | None,
        namespace: str | None,
    ) -> None:
        group = resource.group or ""
        plural = str(resource.plural)
        full = f"{plural}/{sub}" if sub else plural
        if identity.allows(verb, group, full, name, namespace):
            return
        qualified = f"{plural}.{group}" if group else plural
        who = f'{qualified} "{name}"' if name else qualified
        where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        message = (
            f'{who} is forbidden: User "{identity.user}" cannot {verb} resource "{full}" '
            f'in API group "{group}" {where}'
        )
        details: dict[str, Any] = {"group": group, "kind": plural}
        if name:
            details["name"] = name
        raise ApiError(403, "Forbidden", message, details)

    # --- reads -------------------------------------------------------------------------------------------

    def _key(self, resource: kmock.resource, namespace: str | None, name: str | None) -> Any:
        return (resource, namespace, name)

    def _stored(self, resource: kmock.resource, namespace: str | None, name: str | None) -> Any:
        key = self._key(resource, namespace, name)
        obj = self.objects[key] if key in self.objects else None  # noqa: SIM401 (no .get here)
        return None if obj is None or obj.deleted else obj

    def _not_found(self, resource: kmock.resource, name: str | None) -> ApiError:
        qualified = f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)
        details = {"name": name, "group": resource.group or "", "kind": str(resource.plural)}
        return ApiError(404, "NotFound", f'{qualified} "{name}" not found', details)

    def _current(self, resource: kmock.resource, namespace: str | None, name: str | None) -> dict[str, Any]:
        obj = self._stored(resource, namespace, name)
        if obj is None:
            raise self._not_found(resource, name)
        return copy.deepcopy(obj.raw)

    def _list(
        self, resource: kmock.resource, info: Any, namespace: str | None, query: _Query
    ) -> dict[str, Any]:
        items = [
            copy.deepcopy(obj.raw)
            for (res, ns, _), obj in self.objects.items()
            if res == resource and not obj.deleted and (namespace is None or ns == namespace)
        ]
        items = [i for i in items if selected(i, query)]
        items.sort(key=lambda i: (i["metadata"].get("namespace") or "", i["metadata"]["name"]))
        meta: dict[str, Any] = {"resourceVersion": str(self.version)}
        start = int(query.cont) if query.cont.isdigit() else 0
        if query.cont and not query.cont.isdigit():
            raise ApiError(400, "BadRequest", f'continue key is not valid: "{query.cont}"')
        if query.limit is not None and query.limit > 0:
            if start + query.limit < len(items):
                meta["continue"] = str(start + query.limit)
                meta["remainingItemCount"] = len(items) - start - query.limit
            items = items[start : start + query.limit]
        else:
            items = items[start:]
        group_version = f"{resource.group}/{resource.version}" if resource.group else str(resource.version)
        return {"kind": f"{info.kind}List", "apiVersion": group_version, "metadata": meta, "items": items}

    async def _watch(self, request: kmock.Request, query: _Query) -> web.StreamResponse:
        resource = request.resource
        assert resource is not None
        since_text = query.resource_version
        if since_text not in ("", "0") and not since_text.isdigit():
            message = (
                f'resourceVersion: Invalid value: "{since_text}": '
                f'strconv.ParseUint: parsing "{since_text}": invalid syntax'
            )
            raise ApiError(400, "BadRequest", message)
        queue: asyncio.Queue[_Event | None] = asyncio.Queue()
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        raw_request = request._raw_request
        assert raw_request is not None
        await response.prepare(raw_request)  # type: ignore[arg-type]

        def wanted(event: _Event) -> dict[str, Any] | None:
            if event.resource != resource:
                return None
            meta = event.obj.get("metadata", {})
            if request.namespace is not None and meta.get("namespace") != request.namespace:
                return None
            if request.name is not None and meta.get("name") != request.name:
                return None
            now = selected(event.obj, query)
            before = event.old is not None and selected(event.old, query)
            kind = event.type
            if kind == "MODIFIED" and now != before:
                kind = "ADDED" if now else "DELETED"
            elif not now:
                return None
            return {"type": kind, "object": event.obj}

        async with self._lock:
            initial: list[dict[str, Any]] = []
            if since_text in ("", "0"):
                for (res, _, _), obj in self.objects.items():
                    if res == resource and not obj.deleted:
                        event = _Event(self.version, res, "ADDED", copy.deepcopy(obj.raw), None)
                        if (found := wanted(event)) is not None:
                            initial.append(found)
            elif int(since_text) < self.compacted:
                gone = ApiError(410, "Expired", f"too old resource version: {since_text} ({self.compacted})")
                self.expired += 1
                with contextlib.suppress(ConnectionError):
                    await response.write(
                        json.dumps({"type": "ERROR", "object": gone.status()}).encode() + b"\n"
                    )
                    await response.write_eof()
                return response
            else:
                since = int(since_text)
                initial = [e for e in map(wanted, (h for h in self.history if h.version > since)) if e]
            self._watchers.add(queue)
        try:
            for event in initial:
                await response.write(json.dumps(event).encode() + b"\n")
            async with asyncio.timeout(query.timeout if query.timeout else None):
                while (item := await queue.get()) is not None:
                    if (found := wanted(item)) is not None:
                        await response.write(json.dumps(found).encode() + b"\n")
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._watchers.discard(queue)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    def _emit(
        self, resource: kmock.resource, type_: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        event = _Event(self.version, resource, type_, copy.deepcopy(obj), old)
        self.history.append(event)
        while len(self.history) > self.watch_window:
            self.compacted = self.history.popleft().version
        for queue in self._watchers:
            queue.put_nowait(event)

    # --- writes ------------------------------------------------------------------------------------------

    def _bump(self) -> str:
        self.version += 1
        return str(self.version)

    def _qualified_kind(self, resource: kmock.resource, info: Any) -> str:
        return f"{info.kind}.{resource.group}" if resource.group else str(info.kind)

    async def _create(
        self, request: kmock.Request, identity: Identity, query: _Query, info: Any
    ) -> dict[str, Any]:
        resource = request.resource
        assert resource is not None
        obj = request.data
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        obj = copy.deepcopy(obj)
        check_type(obj, resource, info)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if info.namespaced:
            if meta.get("namespace") not in (None, "", request.namespace):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = request.namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name") or ""
        kind = self._qualified_kind(resource, info)
        if not name:
            cause = Cause(
                "metadata.name", "Required value: name or generateName is required", "FieldValueRequired"
            )
            raise invalid(kind, name, [cause])
        async with self._lock:
            if self._stored(resource, request.namespace, name) is not None:
                qualified = f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)
                details = {"name": name, "group": resource.group or "", "kind": str(resource.plural)}
                raise ApiError(409, "AlreadyExists", f'{qualified} "{name}" already exists', details)
            for system in (*SYSTEM_META, "resourceVersion", "selfLink"):
                meta.pop(system, None)
            if "status" in info.subresources:
                obj.pop("status", None)
            self._admit(request, identity, query, resource, kind, obj, None)
            if self.managed_fields:
                meta["managedFields"] = [managed_entry(request, obj, None)]
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            if resource in self.custom or "spec" in obj:
                meta["generation"] = 1
            meta["resourceVersion"] = self._bump()
            key = self._key(resource, request.namespace, name)
            if key in self.objects:
                self.objects[key].create(obj)
            else:
                self.objects[key] = obj
            stored = copy.deepcopy(self.objects[key].raw)
            self._emit(resource, "ADDED", stored, None)
        return stored

    async def _update(
        self, request: kmock.Request, identity: Identity, query: _Query, info: Any, verb: str
    ) -> dict[str, Any]:
        resource, namespace, name, sub = (
            request.resource,
            request.namespace,
            request.name,
            request.subresource,
        )
        assert resource is not None
        kind = self._qualified_kind(resource, info)
        content_type = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        async with self._lock:
            current = self._current(resource, namespace, name)
            body = request.data
            if verb == "update":
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
                candidate = copy.deepcopy(body)
                check_type(candidate, resource, info)
                sent = (candidate.get("metadata") or {}).get("resourceVersion")
                if not sent and resource in self.custom:
                    cause = Cause(
                        "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update"
                    )
                    raise invalid(kind, str(name), [cause])
            else:
                candidate = apply_patch(current, body, content_type, custom=resource in self.custom)
            meta = candidate.get("metadata")
            if not isinstance(meta, dict):
                meta = candidate["metadata"] = {}
            for which, expected in (("name", name), ("namespace", namespace)):
                if meta.get(which) not in (None, "", expected):
                    message = (
                        f"the {which} of the object ({meta.get(which)}) "
                        f"does not match the {which} on the URL ({expected})"
                    )
                    raise ApiError(400, "BadRequest", message)
            old_meta = current["metadata"]
            sent = meta.get("resourceVersion")
            if sent and sent != old_meta.get("resourceVersion"):
                qualified = f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)
                message = (
                    f'Operation cannot be fulfilled on {qualified} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again"
                )
                details = {"name": name, "group": resource.group or "", "kind": str(resource.plural)}
                raise ApiError(409, "Conflict", message, details)
            if sub == "status":
                status = candidate.get("status")
                candidate = copy.deepcopy(current)
                candidate.pop("status", None)
                if status is not None:
                    candidate["status"] = status
                meta = candidate["metadata"]
            elif "status" in info.subresources:
                candidate.pop("status", None)
                if "status" in current:
                    candidate["status"] = copy.deepcopy(current["status"])
            for system in (*SYSTEM_META, "name", "namespace", "resourceVersion"):
                meta.pop(system, None)
                if system in old_meta:
                    meta[system] = old_meta[system]
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    cause = Cause(
                        "metadata.finalizers",
                        "Forbidden: no new finalizers can be added if the object is being deleted",
                        "FieldValueForbidden",
                    )
                    raise invalid(kind, str(name), [cause])
            self._admit(request, identity, query, resource, kind, candidate, current)
            if "generation" in old_meta and _content(candidate, resource in self.custom) != _content(
                current, resource in self.custom
            ):
                meta["generation"] = old_meta["generation"] + 1
            if self.managed_fields:  # kept as they are unless this write changes something
                meta["managedFields"] = copy.deepcopy(old_meta.get("managedFields") or [])
            if candidate == current:
                return current  # nothing changed: no new resourceVersion, no event
            if self.managed_fields:
                written = body if verb == "patch" and isinstance(body, dict) else candidate
                entry = managed_entry(request, {"apiVersion": candidate.get("apiVersion"), **written}, sub)
                others = []
                for e in meta["managedFields"]:
                    if (e.get("manager"), e.get("subresource")) == (entry["manager"], sub):
                        entry["fieldsV1"] = merge_patch(e.get("fieldsV1") or {}, entry["fieldsV1"])
                    else:
                        others.append(e)
                meta["managedFields"] = [*others, entry]
            meta["resourceVersion"] = self._bump()
            key = self._key(resource, namespace, name)
            obj = self.objects[key]
            obj.create(candidate)
            stored = copy.deepcopy(obj.raw)
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                obj.delete()
                self._emit(resource, "DELETED", stored, current)
            else:
                self._emit(resource, "MODIFIED", stored, current)
        return stored

    async def _delete(
        self, resource: kmock.resource, namespace: str | None, name: str | None, options: Any
    ) -> dict[str, Any]:
        async with self._lock:
            current = self._current(resource, namespace, name)
            meta = current["metadata"]
            preconditions = (options or {}).get("preconditions") or {} if isinstance(options, dict) else {}
            for which in ("uid", "resourceVersion"):
                if preconditions.get(which) and preconditions[which] != meta.get(which):
                    qualified = (
                        f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)
                    )
                    message = (
                        f'Operation cannot be fulfilled on {qualified} "{name}": Precondition failed: '
                        f"{which}: {preconditions[which]}, {which} in object meta: {meta.get(which)}"
                    )
                    raise ApiError(409, "Conflict", message)
            key = self._key(resource, namespace, name)
            obj = self.objects[key]
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return current
                changed = copy.deepcopy(current)
                changed["metadata"]["deletionTimestamp"] = _now()
                changed["metadata"]["deletionGracePeriodSeconds"] = 0
                changed["metadata"]["resourceVersion"] = self._bump()
                obj.create(changed)
                self._emit(resource, "MODIFIED", changed, current)
                return changed
            gone = copy.deepcopy(current)
            gone["metadata"]["resourceVersion"] = self._bump()
            obj.delete()
            self._emit(resource, "DELETED", gone, current)
            return gone

    def _admit(
        self,
        request: kmock.Request,
        identity: Identity,
        query: _Query,
        resource: kmock.resource,
        kind: str,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
    ) -> None:
        """Prune, default and validate ``obj`` in place; ApiError if the API server would refuse it."""
        name = str(obj.get("metadata", {}).get("name", ""))
        causes = metadata_causes(obj.get("metadata", {}))
        cr = self.custom.get(resource)
        if cr is not None:
            if query.field_validation == "Strict":
                unknown = [
                    c.field
                    for c in schema_errors(cr.schema, obj, unknown_fields=True)
                    if c.message == "field not declared in schema"
                ]
                if unknown:
                    fields = ", ".join(f'unknown field "{f}"' for f in unknown)
                    message = (
                        f'{cr.kind} in version "{cr.version}" cannot be handled as a {cr.kind}: '
                        f"strict decoding error: {fields}"
                    )
                    raise ApiError(400, "BadRequest", message)
            dropped = prune_fields(cr.schema, obj)
            if dropped:
                method = str(request.method.value).upper()
                path = request.url.path if request.url else ""
                self.pruned.append(Pruned(identity.user, method, path, dropped))
            apply_defaults(cr.schema, obj)
            causes += validate(cr.schema, obj, old)
        if causes:
            raise invalid(kind, name, causes)


# --- helpers ----------------------------------------------------------------------------------------------


def default_identities() -> dict[str, Identity]:
    return {ADMIN_TOKEN: ADMIN, OPERATOR_TOKEN: chart_identity()}


def fields_v1(value: Any) -> Any:
    """A FieldsV1 set much as kube-apiserver writes it (``f:`` per key, ``i:`` per list item)."""
    if isinstance(value, dict):
        return {f"f:{key}": fields_v1(item) for key, item in value.items()}
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        return {".": {}, **{f"i:{n}": fields_v1(item) for n, item in enumerate(value)}}
    return {}


def managed_entry(request: kmock.Request, obj: dict[str, Any], subresource: str | None) -> dict[str, Any]:
    """The managedFields entry of one write: its manager (the User-Agent's product, as the real
    server names it), the fields it set (status only on the status subresource)."""
    manager = (request.headers.get("User-Agent") or "unknown").split("/")[0].split(" ")[0]
    meta = obj.get("metadata") or {}
    if subresource == "status":
        fields: dict[str, Any] = {"status": obj.get("status") or {}}
    else:
        kept = ("labels", "annotations", "finalizers", "ownerReferences")
        fields = {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
        fields["metadata"] = {k: meta[k] for k in kept if k in meta}
    entry = {
        "manager": manager,
        "operation": "Update",
        "apiVersion": str(obj.get("apiVersion") or "v1"),
        "time": _now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(fields),
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _content(obj: dict[str, Any], custom: bool) -> Any:
    """What metadata.generation follows: everything but metadata and status (a custom resource),
    the spec (a built-in one)."""
    if custom:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    return obj.get("spec")


def invalid(kind: str, name: str, causes: list[Cause]) -> ApiError:
    """The 422 Status kube-apiserver answers for an invalid object."""
    group = kind.split(".", 1)[1] if "." in kind else ""
    details = {
        "name": name,
        "group": group,
        "kind": kind.split(".", 1)[0],
        "causes": [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes],
    }
    return ApiError(422, "Invalid", invalid_message(kind, name, causes), details)


def check_type(obj: dict[str, Any], resource: kmock.resource, info: Any) -> None:
    """apiVersion and kind, when sent, must be the resource's; missing ones are the URL's (as the API
    server's decoder defaults them)."""
    group_version = f"{resource.group}/{resource.version}" if resource.group else str(resource.version)
    kind = obj.setdefault("kind", info.kind)
    version = obj.setdefault("apiVersion", group_version)
    if kind != info.kind:
        message = f"the kind in the data ({kind}) does not match the expected kind ({info.kind})"
        raise ApiError(400, "BadRequest", message)
    if version != group_version:
        message = (
            f"the API version in the data ({version}) "
            f"does not match the expected API version ({group_version})"
        )
        raise ApiError(400, "BadRequest", message)


def metadata_causes(meta: Any) -> list[Cause]:
    """ObjectMeta validation: the name (a DNS subdomain), label keys and values, annotation keys."""
    causes: list[Cause] = []
    name = meta.get("name") or ""
    if name and (len(name) > 253 or not DNS_SUBDOMAIN.match(name)):
        message = (
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
            "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        )
        causes.append(Cause("metadata.name", message))
    for where in ("labels", "annotations"):
        values = meta.get(where) or {}
        if not isinstance(values, dict):
            causes.append(Cause(f"metadata.{where}", "Invalid value: must be a map of strings"))
            continue
        for key, value in values.items():
            try:
                _check_key(key)
            except SelectorError:
                causes.append(
                    Cause(
                        f"metadata.{where}",
                        f'Invalid value: "{key}": name part must consist of alphanumeric characters',
                    )
                )
            if not isinstance(value, str):
                causes.append(Cause(f"metadata.{where}.{key}", "Invalid value: must be a string"))
            elif where == "labels" and (len(value) > 63 or not LABEL_VALUE.match(value)):
                causes.append(
                    Cause(
                        "metadata.labels",
                        f'Invalid value: "{value}": a valid label must be an empty string or consist of '
                        "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                        "alphanumeric character",
                    )
                )
    return causes


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null deletes, everything else (lists included) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def apply_patch(current: dict[str, Any], body: Any, content_type: str, *, custom: bool) -> dict[str, Any]:
    if content_type == MERGE or (content_type == STRATEGIC and not custom):
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        return merge_patch(current, body)
    if content_type == JSON_PATCH:
        if not isinstance(body, list):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        try:
            result = jsonpatch.apply_patch(current, body)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(
                422, "Invalid", f"the server rejected our request due to an error in our request: {exc}"
            ) from exc
        if not isinstance(result, dict):
            raise ApiError(422, "Invalid", "the patched object is not an object")
        return result
    accepted = f"{JSON_PATCH}, {MERGE}, {APPLY}" if custom else f"{JSON_PATCH}, {MERGE}, {APPLY}, {STRATEGIC}"
    message = f"the body of the request was in an unknown format - accepted media types include: {accepted}"
    raise ApiError(415, "UnsupportedMediaType", message)


def _go_int(name: str, text: str) -> int:
    if not GO_INT.match(text):
        raise ApiError(400, "BadRequest", f'strconv.ParseInt: parsing "{text}": invalid syntax')
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ApiError(400, "BadRequest", f'strconv.ParseInt: parsing "{text}": value out of range')
    del name
    return value


def _go_bool(text: str) -> bool:
    """apimachinery's Convert_Slice_string_To_bool: "0", "f", "false" (any case) are false."""
    return not (text == "0" or text.lower() in ("f", "false"))


def parse_query(params: Any) -> _Query:
    query = _Query()
    ints = {name: _go_int(name, params[name]) for name in INT_PARAMS if name in params}
    bools = {name: _go_bool(params[name]) for name in BOOL_PARAMS if name in params}
    query.timeout = ints.get("timeoutSeconds")
    query.limit = ints.get("limit")
    query.watch = bools.get("watch", False)
    query.resource_version = params.get("resourceVersion", "")
    query.cont = params.get("continue", "")
    try:
        query.labels = parse_label_selector(params.get("labelSelector", ""))
        query.fields = parse_field_selector(params.get("fieldSelector", ""))
    except SelectorError as exc:
        raise ApiError(400, "BadRequest", str(exc)) from exc
    validation = params.get("fieldValidation", "")
    if validation not in ("", "Ignore", "Warn", "Strict"):
        raise ApiError(
            400,
            "BadRequest",
            f"fieldValidation {validation} is invalid, valid values are: Ignore, Warn, Strict",
        )
    query.field_validation = validation
    return query


def selected(obj: dict[str, Any], query: _Query) -> bool:
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    if not all(r.matches(labels) for r in query.labels):
        return False
    for name, equal, value in query.fields:
        actual = meta.get(name.split(".", 1)[1]) or ""
        if (actual == value) != equal:
            return False
    return True
