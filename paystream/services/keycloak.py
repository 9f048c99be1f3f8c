"""Keycloak, the local OIDC provider, from Maven Central (``keycloak-quarkus-dist``).

Keycloak 26 needs Java 21 or newer. Fetched once with Maven into the cache and
built there once (``kc.sh build``: Quarkus' build takes ~36 s on 2 cores);
each server then runs a hard-linked copy of the built distribution in its own
home (its own H2 database and data directory), ``start --optimized`` (~20 s),
on 127.0.0.1 only. The ``paystream`` realm is imported from
``deploy/keycloak/realm.json`` at the first start; client secrets and the
bootstrap admin's password are generated for each home, kept in
``<home>/secrets.json`` (mode 0600), and handed to the import through the
environment (Keycloak resolves ``${ENV}`` placeholders in realm files).

The realm file holds no user: a deployment's people come from its own directory. For
this machine, :meth:`KeycloakServer.start` makes one person, ``ops`` (realm role ``ops``:
the ``ops:read`` scope is granted only to its holders), through the admin API once the
server answers, with a password generated for the home and kept in the same secrets
file; :meth:`KeycloakServer.ops_login` returns it, to print a login for the ops page.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from paystream.services.kafka import cache_dir, java_major
from paystream.services.process import (
    ServiceError,
    free_port_pair,
    port_open,
    read_pid,
    spawn_detached,
    stop_pid,
    tail,
    wait_until,
)
from paystream.services.status import ServiceStatus

KEYCLOAK_VERSION = "26.7.3"
JAVA_MAJOR_MIN = 21
JAVA_HOME_ENV = "PAYSTREAM_KEYCLOAK_JAVA_HOME"
JVM_DIRS = (Path("/usr/lib/jvm"),)
REALM = "paystream"
ADMIN_USER = "admin"
HEAP_OPTS = "-Xms64m -Xmx512m"
BUILD_OPTIONS = ("--db=dev-file", "--health-enabled=true", "--metrics-enabled=true")
"""Options fixed by ``kc.sh build`` (a change needs a new build: they name its cache)."""
MAVEN_TIMEOUT_S = 900.0
BUILD_TIMEOUT_S = 600.0
START_TIMEOUT_S = 300.0
START_TRIES_MAX = 3
HTTP_TIMEOUT_S = 5.0
ADMIN_TIMEOUT_S = 30.0
OPS_USER = "ops"
OPS_ROLE = "ops"
"""The realm role whose holders get the ``ops:read`` scope (the realm's scope mapping)."""
OPS_PROFILE = {"firstName": "Ops", "lastName": "Analyst", "email": "ops@paystream.example"}
"""Keycloak 26's user profile asks for these at the first login when they are missing."""
SECRET_ENV_PREFIX = "PAYSTREAM_KC_SECRET_"
_PLACEHOLDER = re.compile(r"^\$\{(" + SECRET_ENV_PREFIX + r"[A-Z0-9_]+)\}$")
_REALM_FILE = Path(__file__).resolve().parents[2] / "deploy" / "keycloak" / "realm.json"


def realm_file() -> Path:
    if not _REALM_FILE.is_file():
        raise ServiceError(f"realm not found at {_REALM_FILE}; run paystream from its source tree")
    return _REALM_FILE


def secret_env(client_id: str) -> str:
    """The environment variable that carries ``client_id``'s secret into the realm import."""
    return SECRET_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", client_id.upper())


# --- Java -----------------------------------------------------------------------------------


def find_java_home() -> Path:
    """A JDK of Java 21+: ``PAYSTREAM_KEYCLOAK_JAVA_HOME``, else the newest under /usr/lib/jvm."""
    if configured := os.environ.get(JAVA_HOME_ENV):
        home = Path(configured)
        if _java_major_at(home) < JAVA_MAJOR_MIN:
            raise ServiceError(f"{JAVA_HOME_ENV}={home} is not a Java {JAVA_MAJOR_MIN}+ home")
        return home
    found = sorted(
        (
            (major, home)
            for home in _jvm_homes()
            if (major := _java_major_at(home)) >= JAVA_MAJOR_MIN
        ),
        reverse=True,
    )
    if not found:
        raise ServiceError(
            f"Keycloak needs Java {JAVA_MAJOR_MIN}+ and none was found under "
            f"{', '.join(map(str, JVM_DIRS))}; install one (e.g. Temurin 25) or set {JAVA_HOME_ENV}"
        )
    return found[0][1]


def _jvm_homes() -> Iterator[Path]:
    for root in JVM_DIRS:
        if root.is_dir():
            yield from (home for home in root.iterdir() if (home / "bin" / "java").is_file())


def _java_major_at(home: Path) -> int:
    java = home / "bin" / "java"
    if not java.is_file():
        return 0
    try:
        return java_major(str(java))
    except (OSError, subprocess.CalledProcessError, ServiceError):
        return 0


# --- the distribution, fetched and built once -------------------------------------------------


@contextmanager
def _cache_lock(path: Path) -> Iterator[None]:
    """One fetch or build at a time per cache directory (test sessions may start together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def built_dist(java_home: Path) -> Path:
    """The distribution, fetched with Maven and built with BUILD_OPTIONS, in the cache."""
    options_digest = hashlib.sha256(" ".join(BUILD_OPTIONS).encode()).hexdigest()[:12]
    root = cache_dir() / f"keycloak-{KEYCLOAK_VERSION}-{options_digest}"
    dist = root / f"keycloak-{KEYCLOAK_VERSION}"
    built = root / "built"
    with _cache_lock(root.with_suffix(".lock")):
        if built.is_file():
            return dist
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _fetch(root)
        print(f"building Keycloak {KEYCLOAK_VERSION} in {dist} (once, ~1 min) ...", flush=True)
        result = subprocess.run(
            [str(dist / "bin" / "kc.sh"), "build", *BUILD_OPTIONS],
            env=_java_env(java_home), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(
                f"kc.sh build failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
            )
        shutil.rmtree(dist / "data", ignore_errors=True)  # every server gets its own
        built.write_text(" ".join(BUILD_OPTIONS))
    return dist


def _fetch(root: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            "mvn not found: Maven fetches Keycloak once (Debian: apt-get install maven)"
        )
    artifact = f"org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:tar.gz"
    print(f"fetching Keycloak {KEYCLOAK_VERSION} with Maven into {root} (once) ...", flush=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={root}"],
        capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, cwd=root,
    )  # fmt: skip
    archive = root / f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.tar.gz"
    if result.returncode != 0 or not archive.is_file():
        raise ServiceError(f"Maven could not fetch Keycloak:\n{result.stdout}\n{result.stderr}")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    archive.unlink()


def _java_env(java_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "JAVA_HOME": str(java_home),
        "PATH": f"{java_home / 'bin'}:{os.environ.get('PATH', '')}",
        "JAVA_OPTS_KC_HEAP": HEAP_OPTS,
        **(extra or {}),
    }


# --- one server -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Client:
    """A confidential client of the realm (client-credentials grant)."""

    client_id: str
    secret: str


@dataclass(frozen=True, slots=True)
class KeycloakServer:
    """Keycloak in ``home``: HTTP on 127.0.0.1:``port``, management (health) on ``port + 1``."""

    home: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        """The ``paystream`` realm's issuer (what tokens carry as ``iss``)."""
        return f"{self.url}/realms/{REALM}"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def pid_file(self) -> Path:
        return self.home / "keycloak.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "keycloak.log"

    @property
    def secrets_file(self) -> Path:
        return self.home / "secrets.json"

    def start(self) -> None:
        """Idempotent: a running server is left alone; waits until the realm answers.

        A realm imported before the ops page (no role ``ops``) is imported again: the
        server's own database (H2, under ``dist/data``) is removed and the server
        restarted. The clients' secrets and the people's passwords live in this home's
        secrets file and stay; tokens signed by the old realm's keys are refused after."""
        self._started()
        try:
            self._ensure_ops_user()
        except RealmOutdated as outdated:
            print(f"paystream: {outdated}; importing {realm_file()} again", file=sys.stderr)
            self.stop()
            shutil.rmtree(self.home / "dist" / "data" / "h2", ignore_errors=True)
            self._started()
            self._ensure_ops_user()

    def _started(self) -> None:
        pid = read_pid(self.pid_file)
        if pid is None:
            for port in (self.port, self.port + 1):
                if port_open("127.0.0.1", port):
                    raise ServiceError(f"port {port} is taken by another process")
            java_home = find_java_home()
            dist = self._install(built_dist(java_home))
            pid = self._spawn(dist, java_home)
        if not wait_until(lambda: self._ready(pid), timeout_s=START_TIMEOUT_S):
            raise ServiceError(f"Keycloak did not become ready:\n{tail(self.log_file, lines=40)}")

    def _spawn(self, dist: Path, java_home: Path) -> int:
        stored = self._secrets()
        env = _java_env(
            java_home,
            {
                "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USER,
                "KC_BOOTSTRAP_ADMIN_PASSWORD": stored["admin_password"],
                **{secret_env(c): s for c, s in stored["clients"].items()},
            },
        )
        self.home.mkdir(parents=True, exist_ok=True)
        return spawn_detached(
            [str(dist / "bin" / "kc.sh"), "start", "--optimized", *self._runtime_options()],
            log_file=self.log_file, pid_file=self.pid_file, cwd=self.home, env=env,
        )  # fmt: skip

    def _runtime_options(self) -> list[str]:
        return [
            "--http-enabled=true",
            "--http-host=127.0.0.1",
            f"--http-port={self.port}",
            f"--http-management-port={self.port + 1}",
            f"--hostname={self.url}",
            "--import-realm",
            # One node, no cluster: the production default (``ispn``) starts a JGroups
            # channel listening on every interface, on ports of its own (7800, 57800).
            "--cache=local",
        ]

    def _install(self, dist: Path) -> Path:
        """This server's copy of the built distribution (hard links: no space, no time)."""
        mine = self.home / "dist"
        if not (mine / "bin" / "kc.sh").is_file():
            shutil.rmtree(mine, ignore_errors=True)
            shutil.copytree(dist, mine, copy_function=_link_or_copy, symlinks=True)
        imports = mine / "data" / "import"
        imports.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(realm_file(), imports / f"{REALM}-realm.json")
        return mine

    def _secrets(self) -> dict[str, Any]:
        """This home's admin password, client secrets and people's passwords, made once (a
        file from before people had passwords gets theirs added)."""
        if self.secrets_file.is_file():
            stored: dict[str, Any] = json.loads(self.secrets_file.read_text())
            if "users" not in stored:
                stored["users"] = _passwords()
                _replace_private(self.secrets_file, stored)
            return stored
        stored = {
            "admin_password": secrets.token_urlsafe(24),
            "clients": {client: secrets.token_urlsafe(32) for client in realm_secret_clients()},
            "users": _passwords(),
        }
        self.home.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(stored, handle)
        return stored

    def client(self, client_id: str) -> Client:
        """A client of the realm with its secret (from this home's secrets)."""
        found = self._secrets()["clients"].get(client_id)
        if found is None:
            raise ServiceError(f"no client {client_id!r} in the {REALM} realm's secrets")
        return Client(client_id, str(found))

    @property
    def admin_password(self) -> str:
        return str(self._secrets()["admin_password"])

    def ops_login(self) -> tuple[str, str]:
        """The ops page's login on this machine: (username, password), from this home."""
        return OPS_USER, str(self._secrets()["users"][OPS_USER])

    def admin_token(self) -> str:
        """An access token of the bootstrap admin (master realm) for the admin API."""
        response = httpx.post(
            f"{self.url}/realms/master/protocol/openid-connect/token",
            data={"grant_type": "password", "client_id": "admin-cli", "username": ADMIN_USER,
                  "password": self.admin_password},
            timeout=ADMIN_TIMEOUT_S,
        )  # fmt: skip
        _admin_ok(response, "the bootstrap admin's token")
        return str(response.json()["access_token"])

    def _ensure_ops_user(self) -> None:
        try:
            self._ops_user()
        except httpx.HTTPError as error:
            raise ServiceError(f"Keycloak's admin API did not answer: {error}") from error

    def _ops_user(self) -> None:
        """The person ``ops`` with this home's password and the role ``ops`` (idempotent:
        a user that exists keeps the password it has now)."""
        username, password = self.ops_login()
        base = f"{self.url}/admin/realms/{REALM}"
        with httpx.Client(
            headers={"Authorization": f"Bearer {self.admin_token()}"}, timeout=ADMIN_TIMEOUT_S
        ) as admin:
            role = admin.get(f"{base}/roles/{OPS_ROLE}")
            if role.status_code == httpx.codes.NOT_FOUND:
                raise RealmOutdated(
                    f"the {REALM} realm in {self.home} predates the ops page (no role {OPS_ROLE!r})"
                )
            _admin_ok(role, f"the role {OPS_ROLE}")
            user_id = _user_id(admin, base, username)
            if user_id is None:
                created = admin.post(f"{base}/users", json=_ops_user(username, password))
                _admin_ok(created, f"creating the user {username}")
                user_id = created.headers["Location"].rsplit("/", 1)[-1]
            mapped = admin.post(f"{base}/users/{user_id}/role-mappings/realm", json=[role.json()])
            _admin_ok(mapped, f"giving {username} the role {OPS_ROLE}")

    def _ready(self, pid: int) -> bool:
        if read_pid(self.pid_file) != pid:
            raise ServiceError(f"Keycloak exited during start-up:\n{tail(self.log_file, lines=40)}")
        return _http_ok(f"{self.issuer}/.well-known/openid-configuration")

    def stop(self) -> None:
        pid = read_pid(self.pid_file)
        if pid is not None:
            stop_pid(pid)
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> ServiceStatus:
        pid = read_pid(self.pid_file)
        return ServiceStatus(
            name="keycloak",
            address=self.issuer,
            pid=pid,
            version=KEYCLOAK_VERSION,
            healthy=pid is not None and _http_ok(f"{self.issuer}/.well-known/openid-configuration"),
        )


class RealmOutdated(ServiceError):
    """The realm the server holds was imported from an older realm file."""


def client_credentials_token(issuer: str, client_id: str, secret: str) -> str:
    """An access token for ``client_id`` from ``issuer``'s token endpoint (discovered)."""
    try:
        with urllib.request.urlopen(
            f"{issuer.rstrip('/')}/.well-known/openid-configuration", timeout=HTTP_TIMEOUT_S
        ) as response:
            token_url = json.loads(response.read())["token_endpoint"]
        form = urllib.parse.urlencode({"grant_type": "client_credentials"}).encode()
        request = urllib.request.Request(token_url, data=form, method="POST")
        credentials = base64.b64encode(
            f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(secret)}".encode()
        ).decode()
        request.add_header("Authorization", f"Basic {credentials}")
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return str(json.loads(response.read())["access_token"])
    except urllib.error.HTTPError as error:
        raise ServiceError(f"{issuer} refused client {client_id}: HTTP {error.code}") from error
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        raise ServiceError(f"no token from {issuer}: {error}") from error


def issuer_status(issuer: str) -> ServiceStatus:
    """A configured (external) issuer: healthy when its discovery document answers."""
    return ServiceStatus(
        name="keycloak",
        address=issuer,
        pid=None,
        version=None,
        healthy=_http_ok(f"{issuer.rstrip('/')}/.well-known/openid-configuration"),
        detail="external",
    )


def realm_secret_clients() -> list[str]:
    """The realm's clients whose secret is an environment placeholder."""
    realm = json.loads(realm_file().read_text())
    found = []
    for client in realm.get("clients", []):
        match = _PLACEHOLDER.match(str(client.get("secret", "")))
        if match is not None:
            if match.group(1) != secret_env(client["clientId"]):
                raise ServiceError(
                    f"realm client {client['clientId']}: secret placeholder must be "
                    f"${{{secret_env(client['clientId'])}}}"
                )
            found.append(str(client["clientId"]))
    return found


def _ops_user(username: str, password: str) -> dict[str, Any]:
    return {
        "username": username, "enabled": True, "emailVerified": True, **OPS_PROFILE,
        "credentials": [{"type": "password", "value": password, "temporary": False}],
    }  # fmt: skip


def _user_id(admin: httpx.Client, base: str, username: str) -> str | None:
    found = admin.get(f"{base}/users", params={"username": username, "exact": "true"})
    _admin_ok(found, f"looking up the user {username}")
    users = found.json()
    return str(users[0]["id"]) if users else None


def _admin_ok(response: httpx.Response, what: str) -> None:
    if not response.is_success:
        raise ServiceError(f"Keycloak's admin API, {what}: HTTP {response.status_code} "
                           f"{response.text[:500]}")  # fmt: skip


def _passwords() -> dict[str, str]:
    return {OPS_USER: secrets.token_urlsafe(16)}


def _replace_private(path: Path, content: dict[str, Any]) -> None:
    """Rewrite JSON readable by this user only, atomically (a crash leaves the old file)."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:  # mkstemp makes it 0600
            json.dump(content, handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_on_free_ports(home: Path) -> KeycloakServer:
    """A server in ``home`` on a free pair of ports of 127.0.0.1 (for tests).

    Another process may take a port between the check and the start, so a failed
    start is retried on new ports; a failed try leaves nothing running.
    """
    for attempt in range(START_TRIES_MAX):
        server = KeycloakServer(home=home, port=free_port_pair())
        try:
            server.start()
            return server
        except ServiceError:
            server.stop()
            if attempt == START_TRIES_MAX - 1:
                raise
    raise ServiceError("unreachable: every try returns or raises")
