"""A client for masqd, the local store daemon (docs/APP-PROTOCOL.md).

Apps that do not embed libmasq talk to the daemon over its localhost
WebSocket; this is that client for Python (it needs the `websockets`
package, not libmasq):

    from masq.daemon import DaemonClient
    app = DaemonClient(app_id="com.example.notes")
    token = app.register("Notes", wait=True)     # the user approves it in the manager
    app.put("greeting", "hello")

Keep the token (e.g. in a file only you can read) and pass it next time:
`DaemonClient(app_id=..., token=token)` is approved at once.

`DaemonClient.manager()` is the manager's side (profiles, apps, grants,
devices), authenticated with the admin secret masqd writes to
HOME/masqd.json.
"""

import base64
import collections
import itertools
import json
import os
import threading
from typing import Callable, Dict, Optional


class DaemonError(Exception):
    """A request failed: `code` is the protocol's ("denied", "unauthorized", ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


def default_home() -> str:
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "masq", "masqd")


def runtime_info(home: Optional[str] = None) -> dict:
    """What a running masqd wrote to HOME/masqd.json: its url and admin secret."""
    with open(os.path.join(home or default_home(), "masqd.json")) as f:
        return json.load(f)


class DaemonClient:
    """One connection to masqd: as an app (the default) or as the manager."""

    def __init__(self, url: Optional[str] = None, *, app_id: Optional[str] = None, token: Optional[str] = None,
                 origin: Optional[str] = None, home: Optional[str] = None, timeout: float = 10.0):
        """url: ws://host:port/ (default: the running daemon's, from HOME/masqd.json).
        app_id: a native program's name for itself (a page is known by `origin`,
        which only browsers may set honestly; tests use it to act as a page)."""
        from websockets.sync.client import connect  # imported here: the rest of masq does not need it

        if url is None:
            url = runtime_info(home)["url"]
        self.url = url.replace("http://", "ws://").replace("https://", "wss://")
        self.app_id = app_id
        self.token = token
        self.timeout = timeout
        self.state = "connected"
        self.namespace: Optional[str] = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: Dict[int, list] = {}
        self._watches: Dict[int, Callable[[dict], None]] = {}
        self._approved = threading.Event()
        self._hello: Optional[dict] = None
        self.request: Optional[str] = None   # the approval request this connection made (register)
        self._closed = threading.Event()
        self.events: collections.deque = collections.deque(maxlen=1000)   # the latest events, for inspection
        self.on_share: Optional[Callable[[dict], None]] = None   # called with each "share" event's share (reader thread)
        self._share_answers: Dict[str, dict] = {}
        self._share_answered = threading.Condition()
        self._ws = connect(self.url, origin=origin, open_timeout=timeout, max_size=None)
        self._reader = threading.Thread(target=self._read, name="masqd-client", daemon=True)
        self._reader.start()

    # ---- the manager -----------------------------------------------------

    @classmethod
    def manager(cls, home: Optional[str] = None, url: Optional[str] = None, secret: Optional[str] = None) -> "DaemonClient":
        """The manager's connection, authenticated with the admin secret."""
        if url is None or secret is None:
            info = runtime_info(home)
            url, secret = url or info["url"], secret or info["admin_secret"]
        client = cls(url)
        client.call("admin", secret=secret)
        client.state = "admin"
        return client

    # ---- identity and consent ---------------------------------------------

    def hello(self) -> dict:
        """Say who this app is; approved at once with a valid token. Once per
        connection: a connection speaks for one app for its whole life."""
        result = self.call("hello", app_id=self.app_id, token=self.token)
        self._hello = result
        if result["state"] == "approved":
            self.state = "approved"
            self.namespace = result["namespace"]
            self._approved.set()
        else:
            self.state = result["state"]
        return result

    def register(self, name: str, description: str = "", icon: str = "", wait: bool = False,
                 timeout: Optional[float] = None) -> Optional[str]:
        """Ask the user to approve this app. With wait=True, block until they do
        and return the token (None if they have not within `timeout` seconds)."""
        hello = self._hello or self.hello()
        if hello["state"] == "approved":
            return self.token
        answer = self.call("register", app_id=self.app_id, name=name, description=description, icon=icon)
        self.request = answer.get("request")
        self.state = "pending"
        if not wait:
            return None
        return self.token if self._approved.wait(timeout) else None

    # ---- data ---------------------------------------------------------------

    def get(self, key: str, ns: Optional[str] = None, binary: bool = False):
        r = self.call("get", key=key, ns=ns, encoding="base64" if binary else None)
        if not r["found"]:
            return None
        if binary:
            return base64.b64decode(r["value"])
        return r["value"] if "value" in r else base64.b64decode(r["value_b64"])

    def put(self, key: str, value, ns: Optional[str] = None, request_id: Optional[str] = None) -> None:
        if isinstance(value, (bytes, bytearray)):
            self.call("put", key=key, value=base64.b64encode(value).decode(), encoding="base64", ns=ns, request_id=request_id)
        else:
            self.call("put", key=key, value=value, ns=ns, request_id=request_id)

    def delete(self, key: str, ns: Optional[str] = None) -> None:
        self.call("del", key=key, ns=ns)

    def list(self, prefix: str = "", ns: Optional[str] = None, keys_only: bool = False, limit: Optional[int] = None) -> dict:
        return self.call("list", prefix=prefix, ns=ns, keys_only=keys_only or None, limit=limit)

    def get_all(self, ns: Optional[str] = None) -> dict:
        return {e["key"]: e.get("value") for e in self.call("get_all", ns=ns)["entries"]}

    def set_all(self, entries: dict, ns: Optional[str] = None, replace: bool = False) -> None:
        self.call("set_all", ns=ns, replace=replace or None, entries=[{"key": k, "value": v} for k, v in entries.items()])

    def clear(self, ns: Optional[str] = None) -> None:
        self.call("clear", ns=ns)

    def counter_add(self, key: str, delta: int, ns: Optional[str] = None, request_id: Optional[str] = None) -> None:
        """`request_id` (any unique text, e.g. uuid4().hex): sending the same
        write again with it — after a lost answer — is applied once."""
        self.call("counter_add", key=key, delta=delta, ns=ns, request_id=request_id)

    def counter(self, key: str, ns: Optional[str] = None) -> int:
        return self.call("counter_get", key=key, ns=ns)["value"]

    def watch(self, callback: Callable[[dict], None], prefix: str = "", ns: Optional[str] = None) -> int:
        """callback(event) for each later change (on the client's reader thread)."""
        watch_id = self.call("watch", prefix=prefix, ns=ns)["watch"]
        self._watches[watch_id] = callback
        return watch_id

    def unwatch(self, watch_id: int) -> None:
        self._watches.pop(watch_id, None)
        self.call("unwatch", watch=watch_id)

    # ---- sharing with other people ----------------------------------------

    def share(self, nickname: str, read_only: bool = False, ns: Optional[str] = None, base: Optional[str] = None,
              wait: bool = True, timeout: Optional[float] = None) -> dict:
        """Ask to share this app's namespace with the person the user calls `nickname`.
        The user approves the request in the manager; with wait=True, return
        {"share", "link", "qr_svg"} once they have (DaemonError "denied" if they
        refuse, "timeout" after `timeout` seconds); else {"state": "pending", "request"}."""
        answer = self.call("share.create", nickname=nickname, read_only=read_only or None, ns=ns, base=base)
        return self.wait_share(answer["request"], timeout) if wait else answer

    def accept_share(self, link: str, nickname: str, wait: bool = True, timeout: Optional[float] = None) -> dict:
        """Ask to accept another person's share link (whom the user calls `nickname`);
        the user approves it in the manager. With wait=True, return {"share"} then."""
        answer = self.call("share.accept", link=link, nickname=nickname)
        return self.wait_share(answer["request"], timeout) if wait else answer

    def wait_share(self, request: str, timeout: Optional[float] = None) -> dict:
        """The user's answer to a share request: the share_approved event's fields."""
        with self._share_answered:
            if not self._share_answered.wait_for(lambda: request in self._share_answers or self._closed.is_set(), timeout):
                raise DaemonError("timeout", "the user has not answered the share request")
            message = self._share_answers.pop(request, None)
        if message is None:
            raise DaemonError("unavailable", "the connection to masqd closed")
        if message["event"] == "share_denied":
            raise DaemonError("denied", "the user refused the share request")
        if message["event"] == "share_failed":
            raise DaemonError(message["error"]["code"], message["error"]["message"])
        return {k: v for k, v in message.items() if k not in ("event", "request")}

    def shares(self) -> list:
        """This app's shares (each a dict: id, namespace, role, access, status, nickname, fingerprint, ...)."""
        return self.call("share.list")["shares"]

    def unshare(self, share_id: str) -> None:
        """End one of this app's shares (the other side is told; the data stays)."""
        self.call("share.remove", share=share_id)

    # ---- plumbing -----------------------------------------------------------

    def call(self, op: str, **params) -> dict:
        """Send one request and wait for its answer; raises DaemonError."""
        request_id = next(self._ids)
        slot = [threading.Event(), None]
        with self._lock:
            self._waiting[request_id] = slot
        body = {"id": request_id, "op": op, **{k: v for k, v in params.items() if v is not None}}
        try:
            self._ws.send(json.dumps(body))
        except Exception as error:
            raise DaemonError("unavailable", f"the connection to masqd is closed: {error}") from None
        if not slot[0].wait(self.timeout):
            with self._lock:
                self._waiting.pop(request_id, None)
            raise DaemonError("timeout" if not self._closed.is_set() else "unavailable", f"no answer to {op}")
        answer = slot[1]
        if answer is None:
            raise DaemonError("unavailable", "the connection to masqd closed")
        if not answer["ok"]:
            raise DaemonError(answer["error"]["code"], answer["error"]["message"])
        return answer["result"]

    def _read(self) -> None:
        try:
            for text in self._ws:
                message = json.loads(text)
                if "event" in message:
                    self._event(message)
                    continue
                with self._lock:
                    slot = self._waiting.pop(message.get("id"), None)
                if slot:
                    slot[1] = message
                    slot[0].set()
        except Exception:
            pass
        finally:
            self._closed.set()
            with self._share_answered:
                self._share_answered.notify_all()
            if self.state not in ("revoked", "denied"):
                self.state = "closed"
            with self._lock:
                for slot in self._waiting.values():
                    slot[0].set()
                self._waiting.clear()

    def _event(self, message: dict) -> None:
        self.events.append(message)
        kind = message["event"]
        if kind == "change":
            callback = self._watches.get(message["watch"])
            if callback:
                callback(message)
        elif kind == "approved":
            self.token = message["token"]
            self.namespace = message["namespace"]
            self.state = "approved"
            self._approved.set()
        elif kind in ("revoked", "denied"):
            self.state = kind
            self.token = None
        elif kind in ("share_approved", "share_denied", "share_failed"):
            with self._share_answered:
                self._share_answers[message["request"]] = message
                self._share_answered.notify_all()
        elif kind == "share" and self.on_share:
            self.on_share(message["share"])

    def wait_closed(self, timeout: Optional[float] = None) -> bool:
        """True once the daemon has closed this connection."""
        return self._closed.wait(timeout)

    def close(self) -> None:
        try:
            self._ws.close()
        finally:
            self._closed.wait(self.timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
