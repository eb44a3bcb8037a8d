"""The lab's PACS archive: pynetdicom's SCP (Verification SOP class) in a thread of the lab.

The archive checks AE titles as a real PACS does: the called title must be its own and the
caller must be a known modality or monitor. What it does with an association follows the lab:
healthy it accepts (C-ECHO answers success); with the PACS application down its AE rejects the
association (transient, local limit exceeded: the port is open, the archive refuses, the case
a TCP check misses); with its server powered off it drops every connection before a PDU.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer

from vigie.probes.dicom import VERIFICATION

__all__ = ["PACS_AE_TITLE", "PACS_CALLERS", "PACS_FAULTS", "PacsScp"]

PACS_AE_TITLE = "PACS-CHU"
"""The archive's AE title (config/demo.yaml's pacs-dicom check calls it)."""
PACS_CALLERS = ("VIGIE", "CT-URGENCES", "IRM-1")
"""Calling AE titles the archive accepts; any other is rejected (calling AE not recognised)."""

PACS_FAULTS = ("rejected", "closed")
"""What the archive does when faulted: its AE rejects associations, or connections are dropped."""

State = Callable[[], str]
"""Returns the archive's fault: "" healthy, "rejected" (AE refuses) or "closed" (dropped)."""


class _LabAE(AE):
    """pynetdicom's AE whose association limit drops to 0 while the lab says it refuses.

    pynetdicom's acceptor rejects (transient, service provider, local limit exceeded) when its
    active associations exceed maximum_associations: a limit of 0 refuses every association.
    """

    def __init__(self, ae_title: str, state: State) -> None:
        """Make the AE; state is read at each association."""
        super().__init__(ae_title=ae_title)
        self._state = state

    @property
    def maximum_associations(self) -> int:
        """Return 0 while the archive refuses associations, else pynetdicom's limit."""
        if self._state() == "rejected":
            return 0
        return self._maximum_associations

    @maximum_associations.setter
    def maximum_associations(self, value: int) -> None:
        """Set the limit as pynetdicom does (at least 1)."""
        self._maximum_associations = max(1, value)


class _PacsServer(ThreadedAssociationServer):
    """The association server, dropping connections while the archive's server is off."""

    def __init__(self, *args: Any, state: State, **kwargs: Any) -> None:
        """Make the server as pynetdicom does, with the lab's state."""
        super().__init__(*args, **kwargs)
        self._state = state

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse (close) the connection while the archive's server is powered off."""
        return self._state() != "closed"

    def shutdown(self) -> None:
        """Stop serving and close the socket (made by make_server, unknown to the AE's list)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()


class PacsScp:
    """The archive on a free loopback port (or the one given), served by a thread."""

    def __init__(self, state: State, host: str = "127.0.0.1") -> None:
        """Prepare the archive; start() binds it."""
        self.host = host
        self.port = 0
        self._state = state
        self._ae = _LabAE(PACS_AE_TITLE, state)
        self._ae.add_supported_context(VERIFICATION)
        self._ae.require_called_aet = True
        self._ae.require_calling_aet = list(PACS_CALLERS)
        self._ae.network_timeout = 10  # a stalled peer frees its thread
        self._server: _PacsServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, port: int = 0) -> None:
        """Bind and serve in a daemon thread (a blocking call: run it in a worker thread)."""
        server = self._ae.make_server(
            (self.host, port), server_class=_PacsServer, state=self._state
        )
        assert isinstance(server, _PacsServer)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="lab-pacs", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Abort its associations, stop serving and close the port (blocking)."""
        server, self._server = self._server, None
        if server is None:
            return
        for assoc in server.active_associations:
            assoc.abort()
        server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
