"""Each visitor's results and files, bounded: a session keeps its latest result per tab and a few
decoded meshes, and the server keeps MAX_SESSIONS sessions (--max-sessions), none idle longer than
SESSION_TTL_S. A session's files live in a folder of its own, which goes when the session ends."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import numpy as np
import trimesh

from vat.app.env import PROCESS_TEMP
from vat.errors import VatError

SESSION_TTL_S = 3600  # a session's results and files live this long after its last use
MAX_SESSIONS = 16  # sessions whose results are held (least recently used go first); --max-sessions
MESHES_PER_SESSION = 2  # decoded meshes a session keeps: the one on show and one more (e.g. a download's)
# One subfolder per session for the files the demo writes: it goes when its session ends (tab
# closed, idle past SESSION_TTL_S, or evicted), the rest with PROCESS_TEMP.
OUTPUT_ROOT = PROCESS_TEMP / "sessions"
OUTPUT_ROOT.mkdir(exist_ok=True)


class Session:
    """One visitor's results (token sequences with their lazily decoded meshes) and files, bounded:
    at most MESHES_PER_SESSION decoded meshes, and one file per slot (the mesh on show, each download)."""

    def __init__(self, key: str | None = None):
        self.name = Session.name_of(key) if key else uuid.uuid4().hex
        self.folder = OUTPUT_ROOT / self.name
        self.results: dict = {}  # tab -> vat.tokens.Tokens (a Generation on the Image to 3D tab: with its settings)
        self.sources: dict = {}  # tab -> the input mesh in the unit cube (mesh to tokens)
        # (tab, scales, cleaned) -> a decoded mesh's (vertices, faces), least recently used first: a trimesh's
        # caches (edges, adjacency, ...) weigh several times its arrays, and are rebuilt when needed.
        self.meshes: OrderedDict = OrderedDict()
        self.faces: dict = {}  # (tab, scales) -> faces of the cleaned mesh: the readout keeps them after the mesh goes
        self.files: dict = {}  # (tab, slot) -> the slot's file
        self.previews: dict = {}  # the outline search's samples of the Image to 3D tab: seed -> picture
        self.released = False  # its results were dropped (idle too long, evicted, or its tab closed)

    @staticmethod
    def name_of(key: str) -> str:
        """The folder name of a session hash: it comes from the client, so it is hashed, never trusted as a path."""
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def store(self, tab: str, result, source=None) -> None:
        """A new result for `tab`; the old one's meshes and face counts go."""
        self.results[tab], self.sources[tab] = result, source
        for key in [k for k in self.meshes if k[0] == tab]:
            del self.meshes[key]
        self.faces = {k: v for k, v in self.faces.items() if k[0] != tab}
        self.released = False

    def mesh(self, key: tuple) -> trimesh.Trimesh | None:
        """The cached mesh under `key` (now the most recently used), or None."""
        if key not in self.meshes:
            return None
        self.meshes.move_to_end(key)
        return trimesh.Trimesh(*self.meshes[key], process=False)

    def keep(self, key: tuple, mesh: trimesh.Trimesh) -> None:
        """Cache a decoded mesh; the least recently used beyond MESHES_PER_SESSION go."""
        self.meshes[key] = (np.asarray(mesh.vertices), np.asarray(mesh.faces))
        if key[2]:
            self.faces[key[:2]] = len(mesh.faces)
        while len(self.meshes) > MESHES_PER_SESSION:
            self.meshes.popitem(last=False)

    def file(self, tab: str, slot: str, name: str) -> Path:
        """Where to write `name`, the new file of `tab`'s `slot` (the mesh on show, a download, ...):
        the slot's previous file goes, so a session holds one file per slot."""
        old = self.files.pop((tab, slot), None)
        if old is not None:
            old.unlink(missing_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files[(tab, slot)] = self.folder / name
        return self.folder / name

    def result(self, tab: str, what: str):
        """`tab`'s result; a VatError that says to `what` (e.g. "generate a mesh") when there is none."""
        result = self.results.get(tab)
        if result is None:
            if self.released:
                raise VatError(f"this page's results were released (the server keeps them {SESSION_TTL_S // 60} "
                               f"minutes after their last use, for its {SESSIONS.capacity} most recent visitors): "
                               f"{what} again")
            raise VatError(f"nothing to show yet: {what} first")
        return result

    def close(self) -> None:
        """Drop the results, meshes and files (a new result starts the session again)."""
        self.released = self.released or bool(self.results)
        for held in (self.results, self.sources, self.meshes, self.faces, self.files, self.previews):
            held.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


class Sessions:
    """The sessions whose results are held in memory: at most `capacity`, the least recently used
    dropped first, and none idle longer than `ttl_s`. A dropped session frees its results and files."""

    def __init__(self, capacity: int = MAX_SESSIONS, ttl_s: float = SESSION_TTL_S):
        self.capacity, self.ttl_s = capacity, ttl_s
        self._held: OrderedDict[str, tuple[Session, float]] = OrderedDict()  # name -> (session, last use)
        self._lock = threading.Lock()

    def use(self, state, key: str | None) -> Session:
        """The visitor's session, marked as used now: `state` when it is one (gradio's State holds it),
        else the one held for session hash `key`, else a new one."""
        now = time.monotonic()
        with self._lock:
            if isinstance(state, Session):
                session = state
            else:
                held = self._held.get(Session.name_of(key)) if key else None
                session = held[0] if held else Session(key)
            self._held.pop(session.name, None)
            self._held[session.name] = (session, now)
            expired = [name for name, (_, last) in self._held.items() if now - last > self.ttl_s]
            dropped = [self._held.pop(name)[0] for name in expired]
            while len(self._held) > self.capacity:
                dropped.append(self._held.popitem(last=False)[1][0])
        for old in dropped:
            old.close()
        return session

    def end(self, name: str) -> None:
        """Session `name` is over (its tab closed, or gradio expired its state): free it and its files."""
        with self._lock:
            session = self._held.pop(name, (None, 0.0))[0]
        if session is not None:
            session.close()
        shutil.rmtree(OUTPUT_ROOT / name, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, session: Session) -> bool:
        return session.name in self._held


SESSIONS = Sessions()


def session_of(state, request: gr.Request | None) -> Session:
    """The session of an event: its gr.State's value, else the one of its gr.Request's session hash."""
    return SESSIONS.use(state, getattr(request, "session_hash", None))


def close_session(state) -> None:
    """gr.State's delete_callback: gradio expired the session's state."""
    if isinstance(state, Session):
        SESSIONS.end(state.name)


def end_session(request: gr.Request) -> None:
    """demo.unload: the tab closed (or a client closed its connection); its results and files go now.
    (gradio passes the request because of the annotation.)"""
    if request is not None and request.session_hash:
        SESSIONS.end(Session.name_of(request.session_hash))
